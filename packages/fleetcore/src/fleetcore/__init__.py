"""fleetcore: what the pusher and ingestd share — the whole wire contract: batch schemas and
validation (JSON and the columnar encoding), the answers and error bodies with their codes
(`answers`), the body formats (`protocol.WireFormat`), the gateway health report, the push
cursor, and customer token generation and hashing. Pure Python plus msgspec and zstd; no I/O.

numpy is optional (the `numpy` extra; ingestd has it): the pusher encodes the columnar format
with the standard library (`fleetcore.columnar_stdlib`), so the numpy-based names below (the
numpy encoder, the decoder and its validation) are imported on first use, not with the package.
So are the token names: hashlib, hmac and secrets are ~0.7 MiB of a gateway's pusher (hashlib's
OpenSSL digests), which never handles a token's hash.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fleetcore.answers import ErrorBody, IngestAnswer, RowError
from fleetcore.columnar_layout import COLUMNAR_MEDIA_TYPE, COLUMNAR_VERSION
from fleetcore.compression import (
    STEP_OUTPUT,
    DecompressedTooLarge,
    InvalidCompressedBody,
    TooManyMembers,
    zstd_compress,
    zstd_decompress,
)
from fleetcore.cursor import CursorFormatError, PushCursor
from fleetcore.error_codes import ErrorCode
from fleetcore.health import (
    MAX_REPORT_BYTES,
    HealthReport,
    ReportFormatError,
    ResourceHealth,
    decode_report,
    encode_report,
    implausible_fields,
    report_fields,
)
from fleetcore.json_batch import parse_batch
from fleetcore.limits import MAX_BATCH_ROWS, MAX_BODY_MEMBERS, MAX_REJECTED_ROWS
from fleetcore.protocol import WireFormat
from fleetcore.schemas import (
    MEASUREMENT_VALUE_FIELDS,
    BatchFormatError,
    BatchType,
    DeviceRow,
    MeasurementRow,
    ParsedBatch,
    Rejection,
    SiteRow,
    ValidationWindow,
)

if TYPE_CHECKING:
    from fleetcore.columnar import (
        Column,
        MeasurementColumns,
        columns_from_rows,
        decode_columns,
        encode_columns,
    )
    from fleetcore.columnar_batch import ParsedColumns, parse_columnar_batch
    from fleetcore.json_columns import parse_measurement_columns
    from fleetcore.tokens import (
        TOKEN_PREFIX,
        generate_token,
        hash_token,
        looks_like_token,
        token_hint,
    )

_LAZY_NAMES = {
    "Column": "fleetcore.columnar",
    "MeasurementColumns": "fleetcore.columnar",
    "columns_from_rows": "fleetcore.columnar",
    "decode_columns": "fleetcore.columnar",
    "encode_columns": "fleetcore.columnar",
    "ParsedColumns": "fleetcore.columnar_batch",
    "parse_columnar_batch": "fleetcore.columnar_batch",
    "parse_measurement_columns": "fleetcore.json_columns",
    "TOKEN_PREFIX": "fleetcore.tokens",
    "generate_token": "fleetcore.tokens",
    "hash_token": "fleetcore.tokens",
    "looks_like_token": "fleetcore.tokens",
    "token_hint": "fleetcore.tokens",
}

__all__ = [
    "COLUMNAR_MEDIA_TYPE",
    "COLUMNAR_VERSION",
    "MAX_BATCH_ROWS",
    "MAX_BODY_MEMBERS",
    "MAX_REJECTED_ROWS",
    "MAX_REPORT_BYTES",
    "MEASUREMENT_VALUE_FIELDS",
    "STEP_OUTPUT",
    "TOKEN_PREFIX",
    "BatchFormatError",
    "BatchType",
    "Column",
    "CursorFormatError",
    "DecompressedTooLarge",
    "DeviceRow",
    "ErrorBody",
    "ErrorCode",
    "HealthReport",
    "IngestAnswer",
    "InvalidCompressedBody",
    "MeasurementColumns",
    "MeasurementRow",
    "ParsedBatch",
    "ParsedColumns",
    "PushCursor",
    "Rejection",
    "ReportFormatError",
    "ResourceHealth",
    "RowError",
    "SiteRow",
    "TooManyMembers",
    "ValidationWindow",
    "WireFormat",
    "columns_from_rows",
    "decode_columns",
    "decode_report",
    "encode_columns",
    "encode_report",
    "generate_token",
    "hash_token",
    "implausible_fields",
    "looks_like_token",
    "parse_batch",
    "parse_columnar_batch",
    "parse_measurement_columns",
    "report_fields",
    "token_hint",
    "zstd_compress",
    "zstd_decompress",
]


def __getattr__(name: str) -> Any:
    """The numpy-based and token names, imported when first asked for (PEP 562)."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
