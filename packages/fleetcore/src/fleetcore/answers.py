"""The answer half of the push protocol's contract (docs/PROTOCOL.md): ingestd's 200 answer to a
batch, its error bodies and every error code, defined once.

ingestd encodes its answers from these structs, the pusher decodes them with the same structs,
and the OpenAPI document's `IngestResult` and error schemas are generated from them
(`answer_schemas`): a renamed field or a new code changes all three at once.

The structs state the contract's shape, not what a reader must believe: the pusher still checks
an answer against the batch it sent (the batch type, counts adding up to its rows), so the
constraints the document shows (`minimum`, the batch types, a uuid) are schema-only here and a
body breaking them is refused by that check with its own reason, not by decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from fleetcore.error_codes import ErrorCode
from fleetcore.protocol import MAX_ERRORS_IN_RESPONSE
from fleetcore.schemas import BatchType

__all__ = [
    "BAD_REQUEST_CODES",
    "ErrorBody",
    "ErrorCode",
    "IngestAnswer",
    "RowError",
    "answer_schemas",
    "error_schema",
]


BAD_REQUEST_CODES: tuple[ErrorCode, ...] = (
    ErrorCode.UNKNOWN_BATCH_TYPE,
    ErrorCode.INVALID_JSON,
    ErrorCode.INVALID_BATCH,
    ErrorCode.INVALID_GZIP,
    ErrorCode.INVALID_ZSTD,
    ErrorCode.INVALID_CURSOR,
    ErrorCode.INVALID_HEADER,
    ErrorCode.TOO_MANY_MEMBERS,
    ErrorCode.INVALID_REPAIR,
    ErrorCode.INVALID_DIGEST,
    ErrorCode.DIGEST_UNSUPPORTED,
    ErrorCode.INVALID_REPORT,
    ErrorCode.BAD_PARAMETER,
    ErrorCode.BAD_SITE_TIMEZONE,
    ErrorCode.RANGE_TOO_LARGE,
)
"""The codes a 400 may carry: what exactly was wrong with the request."""


def _schema(**extra: Any) -> msgspec.Meta:
    return msgspec.Meta(extra_json_schema=extra)


_Count = Annotated[int, _schema(minimum=0)]


class RowError(msgspec.Struct, frozen=True):
    """One row ingestd refused (kept in its dead-letter table): its index in the batch, why."""

    index: _Count
    reason: str


class IngestAnswer(msgspec.Struct, frozen=True):
    """ingestd's 200 answer to a batch: rows stored, rows already there, rows refused (at most
    MAX_ERRORS_IN_RESPONSE of them listed in `errors`, the count covers all)."""

    batch_type: Annotated[str, _schema(enum=[t.value for t in BatchType])]
    batch_id: Annotated[str, _schema(format="uuid")]
    accepted: _Count
    duplicates: _Count
    rejected: _Count
    errors: Annotated[list[RowError], _schema(maxItems=MAX_ERRORS_IN_RESPONSE)]


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error answer's body: the code, a sentence for people, the parameter at fault (a
    400 or 404 of the read API), the limit a 413 refers (`max_bytes` for a body too large, `max_rows` / `max_rejections` for a batch with too many
    rows or too many invalid ones), for a 429/503 the seconds to wait (also in Retry-After)."""

    error: ErrorCode
    detail: str | None = None
    parameter: Annotated[
        str | None,
        msgspec.Meta(description="the query or path parameter at fault, when one is (read API)"),
    ] = None
    max_bytes: int | None = None
    max_rows: int | None = None
    max_rejections: int | None = None
    retry_after: int | None = None

    def limit(self) -> int | None:
        """The limit a 413 of ingestd's states, None when the body is not ingestd's 413 (another
        code, or its limit missing)."""
        return {
            ErrorCode.PAYLOAD_TOO_LARGE: self.max_bytes,
            ErrorCode.TOO_MANY_ROWS: self.max_rows,
            ErrorCode.TOO_MANY_REJECTIONS: self.max_rejections,
        }.get(self.error)


def answer_schemas(ref_template: str) -> dict[str, dict[str, Any]]:
    """JSON Schemas of `IngestAnswer` (named `IngestResult`) and `RowError`, as msgspec
    generates them, with `$ref`s after `ref_template` (e.g. '#/components/schemas/{name}')."""
    _, components = msgspec.json.schema_components([IngestAnswer], ref_template=ref_template)
    schemas: dict[str, dict[str, Any]] = {}
    for name, schema in components.items():
        schema = {k: v for k, v in schema.items() if k not in ("title", "description")}
        schemas["IngestResult" if name == "IngestAnswer" else name] = schema
    return schemas


def error_schema(
    codes: Sequence[ErrorCode], required: Sequence[str] = (), optional: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON Schema of an `ErrorBody` that carries one of `codes`, with the fields in
    `required` always present (a 413's `max_bytes`, a 429/503's `retry_after`) and those in
    `optional` sometimes."""
    fields = {f.name: f for f in msgspec.structs.fields(ErrorBody)}
    unknown = {*required, *optional} - set(fields)
    if unknown:
        raise ValueError(f"ErrorBody has no field {sorted(unknown)}")
    properties: dict[str, Any] = {
        "error": {"type": "string", "enum": [code.value for code in codes]},
        "detail": {"type": "string"},
    }
    for name in (*required, *optional):
        schema = msgspec.json.schema(fields[name].type)
        variants = [s for s in schema.pop("anyOf", [schema]) if s.get("type") != "null"]
        properties[name] = {**variants[0], **schema} if variants[0] is not schema else schema
    return {"type": "object", "required": ["error", *required], "properties": properties}
