"""The digest of a full set's body (SHA-256, kept in the push state to send a set only when it
changed), computed without importing hashlib.

hashlib imports `_hashlib`, whose start enumerates OpenSSL's digests: ~0.5 MiB of libcrypto's
pages and 0.67 MiB of RSS in all on a gateway's pusher (docs/CAPACITY.md, "The pusher's own
footprint"), for one SHA-256 a tick. CPython's own SHA-256 (`_sha2` since 3.12, `_sha256`
before) gives the same digest; hashlib's is used where neither is there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

__all__ = ["sha256_digest"]


class _Hash(Protocol):
    def digest(self) -> bytes: ...


def _sha256() -> Callable[[bytes], _Hash]:
    for module in ("_sha2", "_sha256"):
        try:
            found: Callable[[bytes], _Hash] = importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
        return found
    return importlib.import_module("hashlib").sha256  # type: ignore[no-any-return]


_SHA256 = _sha256()


def sha256_digest(data: bytes) -> bytes:
    """SHA-256 of `data`, hashlib's digest byte for byte."""
    return _SHA256(data).digest()
