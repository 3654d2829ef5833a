"""What /readyz answers: the last readiness check, refreshed in the background
(`ingestd.handlers.service.readiness_loop`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Readiness"]


@dataclass(slots=True)
class Readiness:
    """The status /readyz answers with, and its body (None until the first check)."""

    status: int = 503
    body: dict[str, Any] | None = None
