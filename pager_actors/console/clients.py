"""The client's address: the connection's peer, or what trusted proxies say it is.

`X-Forwarded-For` is believed only when the peer is one of `[server]
trusted_proxies`, and then only as far as it was written by trusted proxies:
the list is read from the right, each trusted hop is skipped, and the first
address that is not a trusted proxy is the client. A request from any other
peer is that peer, whatever its headers say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """"10.0.0.1", "10.0.0.0/8", "::1" -> networks. ValueError for anything else."""
    return tuple(ipaddress.ip_network(value, strict=True) for value in values)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Sequence[str],
                   trusted: Sequence[IPNetwork]) -> str:
    """The client's address for `peer`, given the request's `X-Forwarded-For` values."""
    current = _address(peer or "")
    if current is None:
        return peer or "unknown"
    if not trusted or not _trusted(current, trusted):
        return str(current)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:  # garbage written by someone: stop at the last hop we know
            break
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
             trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)
