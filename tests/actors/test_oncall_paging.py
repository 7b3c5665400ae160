"""Pages to rotations and users: whoever is on call when each page is decided, overrides
on top, the fallback when nobody is, all through the engine with a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import EscalationPolicy, Level, Pager
from pager_actors.domain import PageFormat, RotationTarget, SmsTarget, UserTarget
from pager_actors.domain.people import User
from pager_actors.oncall import Rotation
from pager_actors.oncall.directory import OnCall

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 09:00 in Paris: a handoff
PEOPLE = [User("alice", "Alice", contacts=(SmsTarget("+33600000001"),)),
          User("bob", "Bob", contacts=(SmsTarget("+33600000002"),)),
          User("dave", "Dave", contacts=(SmsTarget("+33600000004"),))]
DAILY = Rotation("primary", "Europe/Paris", timedelta(days=1), datetime(2026, 11, 29, 9, 0),
                 ("alice", "bob"))
POLICY = EscalationPolicy("checkout", [Level([RotationTarget("primary")]),
                                       Level([UserTarget("dave")])])


@pytest.fixture
def world():
    clock = [T0]
    store, sms, timer = InMemoryStore(clock=lambda: clock[0]), RecordingSmsSender(), ManualTimer()
    oncall = OnCall(PEOPLE, [DAILY], store)
    pager = Pager.start(policies=InMemoryPolicyRepository([POLICY]), mail=RecordingMailSender(),
                        sms=sms, timer=timer, store=store, clock=lambda: clock[0],
                        resolver=oncall.resolve, ack_timeout=timedelta(minutes=15),
                        page_format=PageFormat(fallback=(SmsTarget("+33699999999"),)))
    yield pager, oncall, sms, timer, clock
    pager.stop()


def test_a_rotation_level_pages_whoever_is_on_call_and_the_timeline_says_who(world):
    """On 30 November bob has the rotation (the second day): his phone is paged."""
    pager, _, sms, _, _ = world
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000002"]
    paged = [e for e in pager.timeline("checkout", 1) if e.event == "paged"]
    assert [(e.user, e.via, e.channel) for e in paged] == [("bob", "rotation primary", "sms")]


def test_an_override_switches_who_is_paged_next(world):
    """An override on top of the rotation: alice, not bob, is paged."""
    pager, oncall, sms, _, _clock = world
    oncall.add_override("primary", "alice", T0 - timedelta(hours=1), T0 + timedelta(hours=2),
                        T0)
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000001"]  # alice, by override


def test_each_page_asks_again_who_is_on_call(world):
    """A repeat at level 1 a day later goes to the next person of the rotation."""
    pager, _, sms, _timer, clock = world
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    clock[0] = T0 + timedelta(days=1)  # alice's day
    pager.ack_timeout("checkout").get(timeout=5)  # level 2: dave, a user
    pager.healthy("checkout").get(timeout=5)
    pager.alert("checkout", "again").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000002", "+33600000004", "+33600000001"]


def test_nobody_on_call_pages_the_fallback_and_still_arms_the_timeout(world):
    """Before the rotation's start: no_one_on_call, the fallback is paged, the timer armed."""
    pager, _, sms, timer, clock = world
    clock[0] = datetime(2026, 11, 1, tzinfo=UTC)
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33699999999"]
    events = [e.event for e in pager.timeline("checkout", 1)]
    assert "no_one_on_call" in events and len(timer.pending()) == 1


def test_the_fallback_hears_once_when_escalation_is_exhausted(world):
    """After the last level's timeout, nobody acknowledged: the fallback gets one page."""
    pager, _, sms, _, _ = world
    pager.alert("checkout", "down").get(timeout=5)
    pager.ack_timeout("checkout").get(timeout=5)
    assert pager.ack_timeout("checkout").get(timeout=5).event == "escalation_exhausted"
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000002", "+33600000004", "+33699999999"]
    assert "escalation exhausted" in sms.sent[-1].text


def test_past_overrides_leave_memory_when_the_next_one_is_made(world):
    """The clock passes an override's end: the next override made drops it from the
    directory, as the store's prune does from disk, and pages go back to the rotation."""
    pager, oncall, sms, _, clock = world
    oncall.add_override("primary", "alice", T0, T0 + timedelta(hours=1), clock[0])
    clock[0] = T0 + timedelta(hours=2)
    later = oncall.add_override("primary", "dave", T0 + timedelta(days=1),
                                T0 + timedelta(days=2), clock[0])
    assert oncall.overrides("primary") == [later]
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000002"]  # bob's day, no override now
