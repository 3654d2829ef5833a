"""Customer push tokens: generation, hashing, display.

A token is `flt_` followed by 43 url-safe base64 characters (256 bits from `secrets`). The server
keeps only `hash_token(token)` (SHA-256, 32 bytes) and finds the customer by an indexed lookup of
that hash, so a stolen database dump does not reveal usable tokens. Since the token carries 256
bits of entropy, a plain (unsalted, fast) hash is sufficient: there is nothing to brute force.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["TOKEN_PREFIX", "generate_token", "hash_token", "looks_like_token", "token_hint"]

TOKEN_PREFIX = "flt_"
_TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 256


def generate_token() -> str:
    """Return a fresh random token; show it to the operator once and store only its hash."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes: the only form a token is ever stored in."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def looks_like_token(value: str | None) -> bool:
    """Cheap shape check before a database lookup; never a substitute for the lookup."""
    return (
        value is not None
        and value.startswith(TOKEN_PREFIX)
        and len(value) <= _MAX_TOKEN_LENGTH
        and value.isascii()
    )


def token_hint(token: str) -> str:
    """A short, non-secret handle for listing tokens: the prefix and the first 4 characters."""
    return token[: len(TOKEN_PREFIX) + 4] + "…"
