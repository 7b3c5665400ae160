"""The cluster: services spread over shards (leases and forwarding come in a later phase)."""

from pager_actors.cluster.shards import SHARDS, shard_of

__all__ = ["SHARDS", "shard_of"]
