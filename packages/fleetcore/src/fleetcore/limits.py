"""The limits of one push request: what a batch may carry and how its body may be compressed.

They are part of the wire contract (docs/PROTOCOL.md, the OpenAPI document): ingestd refuses a
request past any of them, and a pusher never builds one. Each bounds work or memory that the
body's size alone does not bound:

- `MAX_BATCH_ROWS`: rows of one batch, in either encoding. A columnar column of equal values can
  take 0 bytes per row and a JSON item can be 3 bytes (`{},`), so a body of a few KB could
  otherwise ask for millions of row objects. Past it: 413 `too_many_rows` (the pusher halves).
- `MAX_REJECTED_ROWS`: rows of one batch refused by validation. A batch with more is refused
  whole (413 `too_many_rejections`, the pusher halves it) instead of writing a dead letter for
  each: dead letters per batch are bounded. A single row is never refused for it.
- `MAX_BODY_MEMBERS`: gzip members / zstd frames in one body. The pusher sends one; each member
  costs a decoder start whatever its size (an empty gzip member is 20 bytes), so a body of many
  empty members costs time the output limit does not bound. Past it: 400
  `too_many_members`.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH_ROWS", "MAX_BODY_MEMBERS", "MAX_REJECTED_ROWS"]

MAX_BATCH_ROWS = 100_000
MAX_REJECTED_ROWS = 1_000
MAX_BODY_MEMBERS = 16
