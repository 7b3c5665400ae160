"""Shards: which shard a service belongs to, the same in every process and every version."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter

import pytest

from pager_actors.cluster import SHARDS, shard_of


def test_a_service_maps_to_the_same_shard_in_every_process():
    """The shard is crc32 of the UTF-8 id, not hash(): another interpreter (another hash
    seed) agrees, and known ids keep their known shards."""
    assert (shard_of("checkout"), shard_of("search"), shard_of("a")) == (14, 39, 3)
    code = "from pager_actors.cluster import shard_of; print(shard_of('checkout'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True, env={"PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == "14"


def test_shards_cover_their_range_and_spread_services():
    """Every shard is in [0, shards); 6,400 services fill each of the 64 shards."""
    counts = Counter(shard_of(f"service-{n}") for n in range(6400))
    assert set(counts) == set(range(SHARDS))
    assert min(counts.values()) > 50 and max(counts.values()) < 150


def test_non_ascii_ids_hash_their_utf8_and_other_shard_counts_work():
    """Ids are hashed as UTF-8; a smaller shard count maps into its own range."""
    assert shard_of("café") == zlib.crc32("café".encode()) % SHARDS != zlib.crc32(b"cafe") % 64
    assert all(0 <= shard_of(f"s{n}", 7) < 7 for n in range(100))
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("checkout", 0)
