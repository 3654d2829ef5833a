"""Errors that end a request, each with its protocol status and JSON body.

    IngestError                       (base: status, code, JSON body, headers)
     ├── BadRequest            400    unknown batch type, body not JSON, no items list, bad
     │                                header, too many gzip members / zstd frames
     ├── Unauthorized          401    token missing, unknown, revoked or expired — one body for all
     ├── AdminDisabled         403    read API called while INGESTD_ADMIN_TOKEN is unset
     ├── NotFound              404
     ├── RequestTimeout        408    the body did not arrive within the deadline
     ├── PayloadTooLarge       413    compressed or decompressed body over its limit
     ├── BatchTooLarge         413    too_many_rows / too_many_rejections: more rows, or more
     │                                invalid rows, than one batch may have (send fewer)
     ├── UnsupportedMediaType  415    Content-Type or Content-Encoding not supported
     ├── RateLimited           429    the customer is over its rate limit or its concurrent
     │                                requests, an address over its failed-auth budget (Retry-After)
     └── ServiceUnavailable    503    database unreachable, pool exhausted, past capacity, memory
                                      budget spent, decoding past its deadline (Retry-After)

The error middleware in `app.py` turns any of these into its JSON body; anything else becomes a
generic 500 with no detail (and is logged with its traceback, server-side only).

`StartupError` is not an answer: the server could not start (database unreachable at start),
and `ingestd serve` ends with one log line saying why and exit status 1.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdminDisabled",
    "BadRequest",
    "BatchTooLarge",
    "IngestError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "StartupError",
    "Unauthorized",
    "UnsupportedMediaType",
]


class IngestError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(IngestError):
    status = 400
    code = "bad_request"

    def __init__(self, code: str, detail: str, *, parameter: str | None = None) -> None:
        super().__init__(detail, **({"parameter": parameter} if parameter else {}))
        self.code = code


class Unauthorized(IngestError):
    status = 401
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__(None)  # never say which of missing/unknown/revoked/expired


class AdminDisabled(IngestError):
    status = 403
    code = "admin_api_disabled"


class NotFound(IngestError):
    status = 404
    code = "not_found"


class RequestTimeout(IngestError):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(IngestError):
    status = 413
    code = "payload_too_large"

    def __init__(self, max_bytes: int, detail: str) -> None:
        super().__init__(detail, max_bytes=max_bytes)


class BatchTooLarge(IngestError):
    status = 413

    def __init__(self, code: str, detail: str, **limit: int) -> None:
        super().__init__(detail, **limit)
        self.code = code


class UnsupportedMediaType(IngestError):
    status = 415
    code = "unsupported_media_type"


class _RetryLater(IngestError):
    def __init__(self, retry_after_s: int, detail: str | None = None) -> None:
        super().__init__(detail, retry_after=retry_after_s)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(_RetryLater):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(_RetryLater):
    status = 503
    code = "unavailable"


class StartupError(RuntimeError):
    """The server cannot start; the message says what to check."""
