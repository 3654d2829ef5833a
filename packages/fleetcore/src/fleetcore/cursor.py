"""The pusher's measurement cursor.

Rows are read in `(push_xid, device_id, time)` order, where `push_xid` is the id of the
transaction that last wrote the row (`xid8`). Only rows whose transaction is below the reader
snapshot's xmin are read, and every such transaction has ended, so no row can later appear
behind the cursor: this is what makes the cursor safe under concurrent writers and late commits.

On the wire the cursor is opaque to the server (`X-Push-Cursor`, at most 256 characters) and is
stored only in the audit row; it is `<xid>:<device_id>:<time ISO 8601>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["CursorFormatError", "PushCursor"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CursorFormatError(ValueError):
    """A stored or received cursor string does not parse."""


@dataclass(frozen=True, order=True, slots=True)
class PushCursor:
    """Position after the last row shipped; rows with a greater key are still to be sent."""

    xid: int = 0
    device_id: int = -(2**63)
    time: datetime = _EPOCH

    @classmethod
    def start(cls) -> PushCursor:
        """The cursor before every row."""
        return cls()

    def encode(self) -> str:
        return f"{self.xid}:{self.device_id}:{self.time.isoformat()}"

    @classmethod
    def decode(cls, text: str) -> PushCursor:
        try:
            xid, device_id, stamp = text.split(":", 2)
            when = datetime.fromisoformat(stamp)
            if when.tzinfo is None:
                raise ValueError("cursor time has no offset")
            return cls(int(xid), int(device_id), when)
        except ValueError as exc:
            raise CursorFormatError(f"invalid push cursor {text!r}: {exc}") from exc

    def __str__(self) -> str:
        return self.encode()
