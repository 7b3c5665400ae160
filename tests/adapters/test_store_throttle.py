"""The store's part in throttling, on every store (memory, SQLite, PostgreSQL): withdrawn rows,
rows carried by a bundle, and the recent sends a throttle is rebuilt from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pager_actors.domain import (
    EscalationPolicy,
    Level,
    MonitoredService,
    RaiseAlert,
    SmsTarget,
    decide,
)
from pager_actors.ports import DeliveryResult, Transition

PHONE = SmsTarget("+33600000001")


def page(store, service_id: str) -> str:
    """Open an incident of `service_id` paging PHONE; the page's delivery id."""
    policy = EscalationPolicy(service_id, [Level([PHONE])])
    decision = decide(MonitoredService(service_id), RaiseAlert("down"), policy,
                      now=datetime.now(UTC), ack_timeout=timedelta(minutes=15))
    store.commit([Transition(0, decision.service, decision.effects)])
    [row] = [n for n in store.undelivered() if n.service_id == service_id]
    return row.key


def status_of(store, key: str) -> tuple[str, str | None]:
    """(status, carried_by) of one outbox row."""
    if hasattr(store, "outbox"):  # the SQL stores' rows
        [row] = [r for r in store.outbox() if r["delivery_id"] == key]
        return row["status"], row["carried_by"]
    status = "withdrawn" if key in store.withdrawn else "failed" if key in store.failed \
        else "pending" if any(n.key == key for n in store.undelivered()) else "delivered"
    return status, store.carried_by.get(key)


def test_a_withdrawn_row_is_settled_and_its_timeline_says_withdrawn(store):
    """A withdrawn row is never resent, and its incident's timeline says `withdrawn`."""
    key = page(store, "checkout")
    store.commit([], [DeliveryResult(key, withdrawn=True)])
    assert store.undelivered() == []
    assert status_of(store, key) == ("withdrawn", None)
    entry = store.timeline("checkout", 1)[-1]
    assert (entry.event, entry.target, entry.channel) == ("withdrawn", PHONE.masked, "sms")
    assert store.recent_sends(datetime.now(UTC) - timedelta(minutes=1)) == []


def test_rows_carried_by_a_bundle_name_it_and_count_as_one_send(store):
    """Each bundled row is delivered, carried_by the bundle, with its own `delivered` entry;
    recent sends count the bundle once."""
    alone, *bundled = [page(store, f"svc{n}") for n in range(4)]
    store.commit([], [DeliveryResult(alone)])
    store.commit([], [DeliveryResult(key, carried_by="bundle/1") for key in bundled])
    assert [status_of(store, key) for key in bundled] == [("delivered", "bundle/1")] * 3
    assert status_of(store, alone) == ("delivered", None)
    assert [e.event for e in store.timeline("svc2", 1)][-1] == "delivered"
    sends = store.recent_sends(datetime.now(UTC) - timedelta(minutes=1))
    assert [uri for uri, _ in sends] == [PHONE.uri, PHONE.uri]
    assert sends[0][1] <= sends[1][1]


def test_recent_sends_leave_out_failures_and_sends_before_the_horizon(store):
    """Only delivered rows count, and only those settled since the horizon."""
    failed, delivered = page(store, "checkout"), page(store, "search")
    store.commit([], [DeliveryResult(failed, "gateway 400"), DeliveryResult(delivered)])
    now = datetime.now(UTC)
    [(uri, at)] = store.recent_sends(now - timedelta(minutes=1))
    assert uri == PHONE.uri and now - timedelta(minutes=1) <= at <= now + timedelta(seconds=1)
    assert store.recent_sends(now + timedelta(minutes=1)) == []
