"""Why the pusher could not do something, as a small tree under one base.

    PusherError                       (base)
     ├── ConfigError                  a PUSHER_* variable is missing or malformed (exit 2 at start)
     ├── SourceError                  the customer database cannot be read as the pusher needs
     └── DeliveryError                ingestd did not accept a batch (carries status and detail)
          ├── TransientDeliveryError  5xx, 408, timeouts, connection errors: exponential backoff
          │    ├── RetryLater         429 and 503: wait Retry-After (seconds) plus jitter
          │    └── ForeignAnswer      a 2xx that is not ingestd's answer to this batch (another
          │                           2xx, a body of another shape, counts that do not add up)
          ├── PayloadTooLarge         413: halve the batch; at one row quarantine it when the
          │                           413 is the protocol's own, back off when it is bare
          └── PermanentDeliveryError  400, 401, 403, 404, 415, other 4xx and 3xx: the
                                      configuration is wrong; logged as an error, retried at
                                      the backoff cap, cursor kept

Transient errors are retried; permanent ones are reported and never retried in a tight loop.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "ForeignAnswer",
    "PayloadTooLarge",
    "PermanentDeliveryError",
    "PusherError",
    "RetryLater",
    "SourceError",
    "TransientDeliveryError",
]


class PusherError(Exception):
    """Base of every error the pusher raises on purpose."""


class ConfigError(PusherError, ValueError):
    """A variable is missing or malformed; the message names it."""


class SourceError(PusherError):
    """The customer database is not in the shape the pusher needs (e.g. not migrated)."""


class DeliveryError(PusherError):
    """A batch was not accepted. `status` is None when no HTTP answer came back; `transport`
    then says what failed below HTTP: timeout, connection or tls."""

    def __init__(
        self, detail: str, *, status: int | None = None, transport: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.transport = transport


class TransientDeliveryError(DeliveryError):
    """Worth retrying after an exponential backoff."""


class RetryLater(TransientDeliveryError):
    """The server asked to come back after `retry_after_s` (None: it did not say when)."""

    def __init__(self, detail: str, *, status: int, retry_after_s: float | None) -> None:
        super().__init__(detail, status=status)
        self.retry_after_s = retry_after_s


class ForeignAnswer(TransientDeliveryError):
    """A 2xx that is not ingestd's answer to the batch sent (misrouted URL, proxy, captive
    portal): the batch is not delivered."""


class PayloadTooLarge(DeliveryError):
    """The body is over a limit; `max_bytes` as the server stated it, if it did. `protocol`: the
    answer is ingestd's own 413 (its JSON body), not a bare one from something in between."""

    def __init__(self, detail: str, *, max_bytes: int | None, protocol: bool = True) -> None:
        super().__init__(detail, status=413)
        self.max_bytes = max_bytes
        self.protocol = protocol


class PermanentDeliveryError(DeliveryError):
    """Retrying the same request cannot succeed until the configuration changes."""
