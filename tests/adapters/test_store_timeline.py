"""The store port's incident history, on every store (memory, SQLite, PostgreSQL): timelines,
delivery outcomes, incident summaries, pruning, every kind of timer, overrides (one surviving
a restart of each durable store); and the SQLite migration from schema v1."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite import _SCHEMA_V1, SCHEMA_VERSION, SqliteStore
from pager_actors.domain import (
    Acknowledge,
    Command,
    EndMaintenance,
    Heartbeat,
    MonitoredService,
    RaiseAlert,
    Record,
    ReportHealthy,
    ResolveAlert,
    RotationTarget,
    SmsTarget,
    StartMaintenance,
    TimelineEntry,
    TimerFired,
    decide,
)
from pager_actors.domain.people import User
from pager_actors.oncall import Rotation
from pager_actors.oncall.directory import OnCall
from pager_actors.ports import DeliveryResult, Transition
from tests.conftest import two_level_policy

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
def memory_clock():
    """InMemoryStore stamps deliveries at NOW, as the commands here are decided."""
    return lambda: NOW


def policy(service_id: str = "checkout"):
    base = two_level_policy(service_id)
    return type(base)(service_id, base.levels, heartbeat=timedelta(minutes=5))


def run(store, *commands: Command, service_id: str = "checkout",
        now: datetime = NOW) -> MonitoredService:
    state = store.load(service_id) or MonitoredService(service_id)
    for command in commands:
        decision = decide(state, command, policy(service_id), now=now,
                          ack_timeout=timedelta(minutes=15))
        if decision.service is not state:
            store.commit([Transition(state.version, decision.service, decision.effects)])
        state = decision.service
    return state


def test_the_timeline_holds_the_incident_in_order(store):
    """opened, paged, alert_added, acknowledged, resolved: appended with their commits."""
    run(store, RaiseAlert("p99", key="a"), RaiseAlert("disk", key="b"), Acknowledge(by="api"),
        ReportHealthy(by="api"))
    events = [(e.event, e.key, e.by) for e in store.timeline("checkout", 1)]
    assert events == [("opened", "a", None), ("paged", None, None), ("paged", None, None),
                      ("alert_added", "b", None), ("acknowledged", None, "api"),
                      ("resolved", None, "api")]
    assert store.timeline("checkout", 1)[0].message == "p99"


def test_a_paged_entry_keeps_who_was_reached_and_how(store):
    """`user` and `via` survive the store, so the API can say whom a rotation paged."""
    opened = run(store, RaiseAlert("down"))
    entry = TimelineEntry(NOW, "paged", 1, 1, 1, target="+336****0001", channel="sms",
                          user="alice", via="rotation primary")
    store.commit([Transition(opened.version, opened._replace(version=opened.version + 1),
                              (Record("checkout", entry),))])
    assert store.timeline("checkout", 1)[-1] == entry


def test_delivery_outcomes_join_the_timeline_masked(store):
    """Marking a page delivered or failed appends its outcome, with the masked target."""
    run(store, RaiseAlert("down"))
    mail, sms = store.undelivered()
    store.commit([], [DeliveryResult(mail.key), DeliveryResult(sms.key, "gateway said 400")])
    outcomes = [(e.event, e.target, e.channel, e.error, e.level)
                for e in store.timeline("checkout", 1)[3:]]
    assert sorted(outcomes) == [("delivered", "o***@example.com", "mail", None, 1),
                                ("delivery_failed", "+336****0001", "sms", "gateway said 400",
                                 1)]
    assert store.undelivered() == []


def test_incident_summaries_newest_first(store):
    """The list says when each incident opened and closed, how far it went and who acked."""
    run(store, RaiseAlert("first"), TimerFired(None), Acknowledge(by="mail:alice"),
        ReportHealthy())
    run(store, RaiseAlert("second"), now=NOW + timedelta(hours=1))
    second, first = store.incidents("checkout")
    assert (second.number, second.closed, second.level, second.message) == (2, None, 1,
                                                                             "second")
    assert (first.number, first.opened, first.closed, first.level, first.acknowledged_by) == (
        1, NOW, NOW, 2, "mail:alice")
    assert len(store.incidents("checkout", limit=1)) == 1
    assert store.incidents("search") == []


def test_an_alert_held_by_maintenance_starts_the_next_incidents_timeline(store):
    """`suppressed` is filed under the incident that opens next; until it opens, the list
    does not show it, and `limit` still counts opened incidents."""
    run(store, RaiseAlert("first"), ReportHealthy(),
        StartMaintenance(end=NOW + timedelta(hours=1)), RaiseAlert("held", key="p99"))
    assert [i.number for i in store.incidents("checkout", limit=1)] == [1]
    assert [e.event for e in store.timeline("checkout", 2)] == ["suppressed"]
    run(store, EndMaintenance(1))
    assert [e.event for e in store.timeline("checkout", 2)][:3] == [
        "suppressed", "opened", "paged"]
    assert [i.number for i in store.incidents("checkout")] == [2, 1]


def test_old_timeline_entries_are_pruned_but_never_an_open_incidents(store):
    """Entries older than the cut-off go; newer ones, and an open incident's, stay."""
    run(store, RaiseAlert("old"), ReportHealthy())
    run(store, RaiseAlert("new"), now=NOW + timedelta(days=100))
    run(store, RaiseAlert("open for long"), service_id="search")
    assert store.prune_timeline(NOW + timedelta(days=10)) == 4
    assert store.timeline("checkout", 1) == []
    assert len(store.timeline("checkout", 2)) == 3
    assert len(store.timeline("search", 1)) == 3


def test_every_kind_of_timer_is_there_for_recovery(store):
    """Ack timeouts, heartbeats and window ends all come back from armed_timers()."""
    state = run(store, Heartbeat(), StartMaintenance(end=NOW + timedelta(hours=1)),
                RaiseAlert("down"), ResolveAlert("default"), RaiseAlert("again"),
                service_id="checkout")
    armed = {(t.token, t.deadline) for t in store.armed_timers()}
    assert armed == {(t.token, t.deadline) for t in state.timers()}
    assert len(armed) == 2  # heartbeat, window end (the alerts are suppressed)


def test_a_whole_state_round_trips(store):
    """Alerts, windows, heartbeat and the incident load back equal."""
    state = run(store, Heartbeat(), RaiseAlert("a", key="a"), RaiseAlert("b", key="b"),
                Acknowledge(), StartMaintenance(end=NOW + timedelta(hours=1), reason="deploy"))
    assert store.load("checkout") == state


V1_INCIDENT = {
    "number": 3, "message": "disk full", "level": 2, "acknowledged": False,
    "armed_token": "checkout#3@2", "ack_deadline": "2026-11-30T09:15:00+00:00",
    "policy": {"service_id": "checkout",
               "levels": [["mailto:oncall@example.com", "sms:+33600000001"],
                          ["sms:+33600000002"]]},
}


def test_a_v1_file_migrates_with_its_incident_keyed_default_and_its_outbox(tmp_path):
    """Open incidents of v1 get the key `default`; pending rows keep their ids and resend."""
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in filter(str.strip, _SCHEMA_V1.split(";")):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO services VALUES ('checkout', 5, 3, ?, 'checkout#3@2', ?, ?)",
               (json.dumps(V1_INCIDENT), (NOW + timedelta(minutes=15)).timestamp(),
                NOW.timestamp()))
    db.execute("INSERT INTO services VALUES ('search', 2, 1, NULL, NULL, NULL, ?)",
               (NOW.timestamp(),))
    db.execute("INSERT INTO outbox (delivery_id, service_id, incident, level, target, subject, "
               "body, status, created_at) VALUES ('checkout/3/2/sms:+33600000002', 'checkout', "
               "3, 2, 'sms:+33600000002', '', '[checkout] level 2 page, incident #3: disk full.', "
               "'pending', ?)", (NOW.timestamp(),))
    db.close()

    store = SqliteStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    state = store.load("checkout")
    assert state.version == 5 and state.incident.legacy and state.incident.level == 2
    assert [(a.key, a.message) for a in state.alerts] == [("default", "disk full")]
    assert store.load("search") == MonitoredService("search", None, 1, 2)
    [timer] = store.armed_timers()
    assert (timer.token, timer.deadline) == ("checkout#3@2", NOW + timedelta(minutes=15))
    [summary] = store.incidents("checkout")  # the migration wrote its `opened` entry
    assert (summary.number, summary.closed, summary.message) == (3, None, "disk full")
    [pending] = store.undelivered()
    assert pending.key == "checkout/3/2/sms:+33600000002"
    store.commit([], [DeliveryResult(pending.key)])
    assert store.undelivered() == []
    # The old token still escalates; a resolve of any key closes the legacy incident.
    escalated = decide(state, TimerFired("checkout#3@2"), two_level_policy("checkout"),
                       now=NOW, ack_timeout=timedelta(minutes=15))
    assert escalated.event == "escalation_exhausted"
    closed = decide(state, ResolveAlert("a1b2c3"), two_level_policy("checkout"), now=NOW,
                    ack_timeout=timedelta(minutes=15))
    assert closed.event == "resolved"
    store.close()


def test_overrides_are_stored_numbered_and_pruned(store):
    """Ids grow; removal names the rotation; past ones are pruned; all come back by rotation."""
    first = store.add_override("primary", "dave", NOW, NOW + timedelta(hours=2), NOW)
    second = store.add_override("primary", "erin", NOW + timedelta(hours=1),
                                NOW + timedelta(days=2), NOW)
    store.add_override("secondary", "bob", NOW, NOW + timedelta(days=1), NOW)
    assert second.id > first.id
    assert [o.user for o in store.overrides()["primary"]] == ["dave", "erin"]
    assert store.remove_override("secondary", first.id) is False
    assert store.prune_overrides(NOW + timedelta(hours=3)) == 1
    assert [o.user for o in store.overrides()["primary"]] == ["erin"]
    assert store.remove_override("primary", second.id) is True
    assert "primary" not in store.overrides() or store.overrides()["primary"] == []


def test_an_override_survives_a_restart(reopen):
    """An override made through the directory on a durable store is in force again once the
    store is reopened: the rotation resolves to its user."""
    people = [User("alice", "Alice", contacts=(SmsTarget("+33600000001"),)),
              User("bob", "Bob", contacts=(SmsTarget("+33600000002"),))]
    daily = Rotation("primary", "UTC", timedelta(days=1), datetime(2026, 11, 30, 9),
                     ("alice", "bob"))
    at = NOW + timedelta(hours=3)
    first = reopen()
    before = OnCall(people, [daily], first)
    assert before.on_call("primary", at).user == "alice"
    made = before.add_override("primary", "bob", NOW, NOW + timedelta(hours=6), NOW)
    first.close()
    after = OnCall(people, [daily], reopen())
    assert after.overrides("primary") == [made]
    shift = after.on_call("primary", at)
    assert (shift.user, shift.override) == ("bob", made.id)
    assert [r.user for r in after.resolve(RotationTarget("primary"), at)] == ["bob"]


def test_a_directory_sees_overrides_another_one_made_once_it_refreshes(store):
    """Two directories on one store, as two nodes of a cluster: an override added or removed
    through one counts in the other after its refresh; past ones are left out."""
    people = [User("alice", "Alice", contacts=(SmsTarget("+33600000001"),)),
              User("bob", "Bob", contacts=(SmsTarget("+33600000002"),))]
    daily = Rotation("primary", "UTC", timedelta(days=1), datetime(2026, 11, 30, 9),
                     ("alice", "bob"))
    here, there = OnCall(people, [daily], store), OnCall(people, [daily], store)
    at = NOW + timedelta(hours=3)
    made = here.add_override("primary", "bob", NOW, NOW + timedelta(hours=6), NOW)
    assert there.on_call("primary", at).user == "alice"
    there.refresh(NOW)
    assert there.on_call("primary", at).user == "bob"
    there.refresh(NOW + timedelta(hours=7))
    assert there.overrides("primary") == []
    there.refresh(NOW)
    assert here.remove_override("primary", made.id)
    there.refresh(NOW)
    assert there.on_call("primary", at).user == "alice"
