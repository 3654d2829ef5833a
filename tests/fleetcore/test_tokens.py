"""Token generation and hashing."""

from __future__ import annotations

import hashlib

from fleetcore import generate_token, hash_token, looks_like_token, token_hint


def test_tokens_are_prefixed_random_and_256_bit() -> None:
    """Tokens carry the flt_ prefix, 256 bits of randomness, and never repeat."""
    tokens = {generate_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in tokens:
        assert token.startswith("flt_")
        assert len(token) - 4 >= 43  # 32 bytes in url-safe base64


def test_hash_is_sha256_of_the_token() -> None:
    """The stored form is the 32-byte SHA-256 digest of the token's UTF-8 bytes."""
    token = generate_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).digest()
    assert len(hash_token(token)) == 32


def test_shape_check_and_hint() -> None:
    """Only flt_-prefixed ASCII strings of sane length look like tokens; the hint reveals 4 characters."""
    token = generate_token()
    assert looks_like_token(token)
    assert not looks_like_token(None)
    assert not looks_like_token("Bearer abc")
    assert not looks_like_token("flt_" + "x" * 300)
    assert not looks_like_token("flt_é")
    assert token_hint(token) == token[:8] + "…"
