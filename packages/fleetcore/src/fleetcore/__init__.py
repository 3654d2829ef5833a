"""fleetcore: what the pusher and ingestd share — batch schemas and validation, the push
cursor, and customer token generation and hashing. Pure Python plus msgspec; no I/O."""

from fleetcore.cursor import CursorFormatError, PushCursor
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
    parse_batch,
)
from fleetcore.tokens import TOKEN_PREFIX, generate_token, hash_token, looks_like_token, token_hint

__all__ = [
    "MEASUREMENT_VALUE_FIELDS",
    "TOKEN_PREFIX",
    "BatchFormatError",
    "BatchType",
    "CursorFormatError",
    "DeviceRow",
    "MeasurementRow",
    "ParsedBatch",
    "PushCursor",
    "Rejection",
    "SiteRow",
    "ValidationWindow",
    "generate_token",
    "hash_token",
    "looks_like_token",
    "parse_batch",
    "token_hint",
]
