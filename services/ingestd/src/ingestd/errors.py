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

The error middleware in `app.py` turns any of these into its JSON body (`fleetcore.ErrorBody`,
the codes `fleetcore.ErrorCode`: the contract both services share); anything else becomes a
generic 500 with no detail (and is logged with its traceback, server-side only).

`StartupError` is not an answer: the server could not start (database unreachable at start),
and `ingestd serve` ends with one log line saying why and exit status 1.
"""

from __future__ import annotations

from fleetcore.answers import ErrorBody
from fleetcore.error_codes import ErrorCode

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
    code = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        detail: str | None = None,
        *,
        parameter: str | None = None,
        max_bytes: int | None = None,
        max_rows: int | None = None,
        max_rejections: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.parameter = parameter
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.max_rejections = max_rejections
        self.retry_after = retry_after

    def body(self) -> ErrorBody:
        return ErrorBody(
            self.code,
            self.detail or None,
            parameter=self.parameter,
            max_bytes=self.max_bytes,
            max_rows=self.max_rows,
            max_rejections=self.max_rejections,
            retry_after=self.retry_after,
        )

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(IngestError):
    status = 400
    code = ErrorCode.BAD_REQUEST

    def __init__(self, code: ErrorCode, detail: str, *, parameter: str | None = None) -> None:
        super().__init__(detail, parameter=parameter)
        self.code = code


class Unauthorized(IngestError):
    status = 401
    code = ErrorCode.UNAUTHORIZED

    def __init__(self) -> None:
        super().__init__(None)  # never say which of missing/unknown/revoked/expired


class AdminDisabled(IngestError):
    status = 403
    code = ErrorCode.ADMIN_API_DISABLED


class NotFound(IngestError):
    status = 404
    code = ErrorCode.NOT_FOUND


class RequestTimeout(IngestError):
    status = 408
    code = ErrorCode.REQUEST_TIMEOUT


class PayloadTooLarge(IngestError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE

    def __init__(self, max_bytes: int, detail: str) -> None:
        super().__init__(detail, max_bytes=max_bytes)


class BatchTooLarge(IngestError):
    status = 413

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        max_rows: int | None = None,
        max_rejections: int | None = None,
    ) -> None:
        super().__init__(detail, max_rows=max_rows, max_rejections=max_rejections)
        self.code = code


class UnsupportedMediaType(IngestError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class _RetryLater(IngestError):
    def __init__(self, retry_after_s: int, detail: str | None = None) -> None:
        super().__init__(detail, retry_after=retry_after_s)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(_RetryLater):
    status = 429
    code = ErrorCode.RATE_LIMITED


class ServiceUnavailable(_RetryLater):
    status = 503
    code = ErrorCode.UNAVAILABLE


class StartupError(RuntimeError):
    """The server cannot start; the message says what to check."""
