"""Leases and forwarding: how a cluster of pagers shares the services, by shard."""

from __future__ import annotations

import zlib

SHARDS = 64


def shard_of(service_id: str, shards: int = SHARDS) -> int:
    """The shard a service belongs to: the same on every node, whatever its config order."""
    return zlib.crc32(service_id.encode("utf-8")) % shards
