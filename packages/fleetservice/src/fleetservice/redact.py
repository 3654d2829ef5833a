"""Keeping database passwords and URL credentials out of every line a service writes.

libpq and psycopg quote the offending part of a connection string in their errors — a password
with a bad percent-encoding comes back whole: `invalid percent-encoded token: "s3cr%zzet"` — and
those errors reach log lines (psycopg_pool logs its own) and the one-line failures of the CLIs.
So each entry point registers the secrets of its settings once (`protect`, the database URL's
password in every spelling it may be quoted in), and every log line (`fleetservice.logs`) and
every `fail` line (`fleetservice.commands`) goes through `redact` before it is written.

`shown_url` is the URL to log or show (a systemd STATUS, a `starting` line): without its userinfo.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = ["MASK", "dsn_secrets", "protect", "redact", "shown_url"]

MASK = "***"
_MIN_SECRET = 3  # shorter strings would mask ordinary text, and guard nothing
_secrets: set[str] = set()
_lock = threading.Lock()


def dsn_secrets(url: str) -> tuple[str, ...]:
    """The password of a postgresql:// URL (and of `password=` in its query) as written, decoded,
    and with its user (`user:password`): each way an error message may quote it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and userinfo:
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found += [userinfo, password, unquote(password)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            found += [value, unquote(value)]
    return tuple(dict.fromkeys(s for s in found if len(s) >= _MIN_SECRET))


def protect(*secrets: str) -> None:
    """Register secrets for `redact` (process-wide, like logging itself)."""
    with _lock:
        _secrets.update(s for s in secrets if len(s) >= _MIN_SECRET)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***` (longest first)."""
    if not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def shown_url(url: str) -> str:
    """`url` without `user:password@`, for logs and status lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
