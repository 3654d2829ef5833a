"""Which gateways (tokens) made a request since the last flush, kept in memory.

Every authenticated request — a batch as much as a health report — shows its gateway alive; a
database write per batch for that would be waste, so the time is noted here and the fleet-state
task writes all of them in one statement every INGESTD_FLEET_STATE_INTERVAL_S
(`storage.gateways.record_contacts`). Bounded: past `max_tokens` distinct tokens between two
flushes, new ones wait for the next (their gateways stay alive through their reports).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["Contacts"]


class Contacts:
    def __init__(self, max_tokens: int = 100_000) -> None:
        self.max_tokens = max_tokens
        self._seen: dict[bytes, datetime] = {}

    def seen(self, token_hash: bytes) -> None:
        if token_hash in self._seen or len(self._seen) < self.max_tokens:
            self._seen[token_hash] = datetime.now(UTC)

    def take(self) -> list[tuple[bytes, datetime]]:
        """Everything noted since the last call, and forget it."""
        taken, self._seen = list(self._seen.items()), {}
        return taken
