"""Every error code of ingestd's error bodies (`fleetcore.answers.ErrorBody`), spelled once.

A module of its own, with no imports from the rest of fleetcore, so the batch and report parsers
that raise format errors can name their codes without importing the answers.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode"]


class ErrorCode(enum.StrEnum):
    """The `error` of every error body ingestd sends."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_BATCH_TYPE = "unknown_batch_type"
    INVALID_JSON = "invalid_json"
    INVALID_BATCH = "invalid_batch"
    INVALID_GZIP = "invalid_gzip"
    INVALID_ZSTD = "invalid_zstd"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_HEADER = "invalid_header"
    TOO_MANY_MEMBERS = "too_many_members"
    INVALID_REPAIR = "invalid_repair"
    INVALID_DIGEST = "invalid_digest"
    DIGEST_UNSUPPORTED = "digest_unsupported"
    INVALID_REPORT = "invalid_report"
    BAD_PARAMETER = "bad_parameter"
    BAD_SITE_TIMEZONE = "bad_site_timezone"
    RANGE_TOO_LARGE = "range_too_large"
    UNAUTHORIZED = "unauthorized"
    ADMIN_API_DISABLED = "admin_api_disabled"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOO_MANY_ROWS = "too_many_rows"
    TOO_MANY_REJECTIONS = "too_many_rejections"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"
