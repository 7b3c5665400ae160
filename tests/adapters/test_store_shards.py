"""What a node adopting shards reads back, restricted to those shards, from either store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import InMemoryStore
from adapters.sqlite import SqliteStore
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import (
    Command,
    MonitoredService,
    Notify,
    PageFormat,
    RaiseAlert,
    ReportHealthy,
    decide,
)
from pager_actors.ports import Transition
from tests.conftest import two_level_policy

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
CHECKOUT, SEARCH = shard_of("checkout"), shard_of("search")


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    store = InMemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "pager.db")
    yield store
    store.close()


def step(state: MonitoredService, command: Command, code: str | None = None) -> Transition:
    decision = decide(state, command, two_level_policy(state.service_id), now=NOW,
                      ack_timeout=timedelta(minutes=15), fmt=PageFormat(reply_codes=True),
                      next_code=code)
    return Transition(state.version, decision.service, decision.effects)


@pytest.fixture
def two_incidents(store):
    """checkout and search each have an open incident (pages pending, a timer, a code)."""
    store.commit([step(MonitoredService("checkout"), RaiseAlert("a"), "1111"),
                  step(MonitoredService("search"), RaiseAlert("b"), "2222")])
    return store


def test_shard_of_is_crc32_modulo_the_shard_count():
    """Every node maps a service to the same shard, one of SHARDS."""
    assert SHARDS == 64
    assert (CHECKOUT, SEARCH) == (14, 39)
    assert shard_of("checkout", shards=8) == 14 % 8


def test_armed_timers_of_some_shards_only(two_incidents):
    """`armed_timers(shards=...)` gives the timers of those shards' services only."""
    store = two_incidents
    assert {t.service_id for t in store.armed_timers(shards={CHECKOUT})} == {"checkout"}
    assert {t.service_id for t in store.armed_timers()} == {"checkout", "search"}
    assert store.armed_timers(shards=set()) == []


def test_undelivered_of_some_shards_only(two_incidents):
    """`undelivered(shards=...)` gives those shards' pending pages, oldest first."""
    store = two_incidents
    pages = store.undelivered(shards={SEARCH})
    assert len(pages) == 2
    assert all(isinstance(p, Notify) and p.service_id == "search" for p in pages)
    assert [p.key for p in pages] == [p.key for p in store.undelivered()
                                      if p.service_id == "search"]
    assert store.undelivered(shards={CHECKOUT, SEARCH}) == store.undelivered()


def test_reply_codes_of_some_shards_only(two_incidents):
    """`reply_codes(shards=...)` gives the codes held by those shards' services, released
    ones included."""
    store = two_incidents
    closed = step(store.load("checkout"), ReportHealthy())
    store.commit([closed])
    [(code, service, _, released)] = store.reply_codes(shards={CHECKOUT})
    assert (code, service, released) == ("1111", "checkout", NOW)
    assert [c[0] for c in store.reply_codes(shards={SEARCH})] == ["2222"]
    assert sorted(c[0] for c in store.reply_codes()) == ["1111", "2222"]
