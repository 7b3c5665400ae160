"""Which shard a service belongs to: a stable hash of its id, the same in every process.

Python's `hash()` of a string changes with each interpreter (PYTHONHASHSEED), so
two nodes would disagree; crc32 of the id's UTF-8 never changes. The shard is
stored beside each service and outbox row, so a node can load, re-arm and
resend one shard's services (the cluster's unit of ownership).
"""

from __future__ import annotations

import zlib

SHARDS = 64


def shard_of(service_id: str, shards: int = SHARDS) -> int:
    """The shard of `service_id`, in [0, shards)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return zlib.crc32(service_id.encode("utf-8")) % shards
