"""Who is asking: the client address the failed-authentication budget is kept for.

Without trusted proxies (INGESTD_TRUSTED_PROXIES empty, the default) it is the TCP peer, and
`X-Forwarded-For` is ignored: anyone can write that header. Behind proxies it is the rightmost
address in `X-Forwarded-For` that is not a trusted proxy's, provided the TCP peer itself is one:
each trusted proxy appends the address it received the request from, so walking from the right
past trusted hops reaches the first address no trusted hop vouches for, which is the last one a
client cannot forge. Entries the client wrote itself sit to the left of it and are never read.

aiohttp-remotes' `XForwardedStrict` walks the same way but wants the exact proxy chain hop by
hop and turns any other request (a health check straight to the pod, a pusher on the internal
network) into its own plain-text 400; `XForwardedRelaxed` takes the leftmost entry, the one the
client writes. Neither fits, so the walk is done here, over a set of networks.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

__all__ = ["TrustedProxies", "budget_key", "client_address", "parse_trusted_proxies"]

Network = IPv4Network | IPv6Network
TrustedProxies = tuple[Network, ...]
_MAX_HOPS = 32
_CACHED = 4096  # addresses parsed once each (every request asks: ~10 µs of ipaddress a time)


def parse_trusted_proxies(raw: str) -> TrustedProxies:
    """Comma-separated CIDRs (a bare address is a /32 or /128); ValueError names a bad one."""
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR) or address") from None
    return tuple(networks)


@functools.lru_cache(maxsize=_CACHED)
def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An address as proxies write it: bare, `[v6]`, or with a port; None if it is not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str:
    """The client address of a request from TCP peer `peer` carrying these X-Forwarded-For
    header values (in order), given the trusted proxy networks."""
    if peer is None:
        return "unknown"
    current = _address(peer)
    if current is None or not trusted or not _trusted(current, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops[-_MAX_HOPS:]):
        address = _address(hop)
        if address is None:
            break  # not an address: the hop that wrote it is the last one known
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


@functools.lru_cache(maxsize=_CACHED)
def budget_key(address: str) -> str:
    """The key a client address's failed-authentication budget is kept under: the address for
    IPv4, its /64 for IPv6 (one subscriber gets a /64 at least, and rotating through it must
    not buy fresh budgets)."""
    parsed = _address(address)
    if isinstance(parsed, IPv6Address):
        return str(IPv6Network((int(parsed) >> 64 << 64, 64)))
    return address if parsed is None else str(parsed)
