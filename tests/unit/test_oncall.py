"""On-call arithmetic, checked against a brute-force model that walks the schedule minute
by minute, on Europe/Paris and America/New_York across the 2026 DST changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pager_actors.oncall import Override, Rotation, on_call, shifts, to_instant

USERS = ("alice", "bob", "carol")
MINUTE = timedelta(minutes=1)


def brute_force(rotation: Rotation, overrides: list[Override], start: datetime,
                end: datetime) -> dict[datetime, str | None]:
    """Who is on call at each minute, by walking from the rotation's start: a wall-clock
    handoff happens at the first minute whose local time is not earlier than its wall time
    (so a gap's handoff falls at the gap's end and a fold's at its first pass); an absolute
    one every `shift`. Then the override created last that covers the minute wins."""
    zone = ZoneInfo(rotation.time_zone)
    first = rotation.start.replace(tzinfo=zone, fold=0).astimezone(UTC)
    moment = first - timedelta(days=2)
    while moment.astimezone(zone).replace(tzinfo=None) < rotation.start:
        moment += MINUTE
    begin = moment  # the first minute at or after the start's wall time
    whole_days = rotation.shift % timedelta(days=1) == timedelta(0)
    taken, handoffs, walls = {}, 0, rotation.start + rotation.shift
    current = None
    moment = min(begin, start)
    while moment < end:
        if moment >= begin:
            if current is None:
                current = 0
            elif whole_days:
                while moment.astimezone(zone).replace(tzinfo=None) >= walls:
                    handoffs, walls = handoffs + 1, walls + rotation.shift
                current = handoffs
            else:
                current = (moment - begin) // rotation.shift
        if moment >= start:
            user = None if current is None else rotation.users[current % len(rotation.users)]
            winners = [o for o in overrides if o.start <= moment < o.end]
            taken[moment] = max(winners, key=lambda o: o.id).user if winners else user
        moment += MINUTE
    return taken


CASES = [
    # zone, shift, first handoff (local), range start (local), days
    ("Europe/Paris", timedelta(days=1), datetime(2026, 3, 27, 9), datetime(2026, 3, 27, 6), 4),
    ("Europe/Paris", timedelta(days=1), datetime(2026, 3, 27, 2, 30), datetime(2026, 3, 27), 4),
    ("Europe/Paris", timedelta(days=1), datetime(2026, 10, 23, 2, 30), datetime(2026, 10, 23),
     4),
    ("Europe/Paris", timedelta(hours=12), datetime(2026, 10, 24, 9), datetime(2026, 10, 24, 6),
     4),
    ("America/New_York", timedelta(days=1), datetime(2026, 3, 6, 2, 15), datetime(2026, 3, 6),
     4),
    ("America/New_York", timedelta(days=1), datetime(2026, 10, 30, 1, 30),
     datetime(2026, 10, 30), 4),
    ("America/New_York", timedelta(hours=12), datetime(2026, 3, 7, 21), datetime(2026, 3, 7),
     4),
    # Weekly: long enough to hold a handoff on each side of the change. Mondays 09:00, and
    # Sundays at a time in the spring gap (02:30 Paris, 02:15 New York) or the autumn fold
    # (02:30 Paris, 01:30 New York); a gap handoff falls on the change itself, so those
    # ranges run on to the handoff a week later.
    ("Europe/Paris", timedelta(weeks=1), datetime(2026, 3, 23, 9), datetime(2026, 3, 23, 6),
     10),
    ("Europe/Paris", timedelta(weeks=1), datetime(2026, 3, 22, 2, 30), datetime(2026, 3, 21),
     16),
    ("Europe/Paris", timedelta(weeks=1), datetime(2026, 10, 19, 9), datetime(2026, 10, 19, 6),
     10),
    ("Europe/Paris", timedelta(weeks=1), datetime(2026, 10, 18, 2, 30), datetime(2026, 10, 23),
     10),
    ("America/New_York", timedelta(weeks=1), datetime(2026, 3, 2, 9), datetime(2026, 3, 2), 10),
    ("America/New_York", timedelta(weeks=1), datetime(2026, 3, 1, 2, 15), datetime(2026, 2, 28),
     16),
    ("America/New_York", timedelta(weeks=1), datetime(2026, 10, 26, 9), datetime(2026, 10, 26),
     10),
    ("America/New_York", timedelta(weeks=1), datetime(2026, 10, 25, 1, 30),
     datetime(2026, 10, 30), 10),
]


def offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The minutes in [start, end) at which the zone's UTC offset differs from the minute
    before: its DST changes."""
    found, moment = [], start
    while moment < end:
        if moment.astimezone(zone).utcoffset() != (moment - MINUTE).astimezone(zone).utcoffset():
            found.append(moment)
        moment += MINUTE
    return found


def case_id(case: tuple[str, timedelta, datetime, datetime, int]) -> str:
    zone, shift, first, since, days = case
    hours = shift.total_seconds() / 3600
    return f"{zone.split('/')[1]}-{hours:g}h-{first:%a%H%M}-{since:%d%b}+{days}d"


@pytest.mark.parametrize("zone,shift,first,since,days", CASES, ids=map(case_id, CASES))
def test_on_call_matches_the_minute_by_minute_model(zone, shift, first, since, days):
    """Every minute of 4 to 16 days across a DST change, with two overlapping overrides;
    the range holds a handoff on each side of the change."""
    rotation = Rotation("primary", zone, shift, first, USERS)
    tz = ZoneInfo(zone)
    start = since.replace(tzinfo=tz).astimezone(UTC)
    end = start + timedelta(days=days)
    [change] = offset_changes(tz, start, end)
    handoffs = [h for h in map(rotation.handoff, range(200)) if start <= h < end]
    assert any(h < change for h in handoffs) and any(h > change for h in handoffs), handoffs
    overrides = [Override(1, "dave", start + timedelta(hours=30), start + timedelta(hours=40)),
                 Override(2, "erin", start + timedelta(hours=35), start + timedelta(hours=37))]
    expected = brute_force(rotation, overrides, start, end)
    tiled = shifts(rotation, overrides, start, end)
    assert tiled[0].start == start and tiled[-1].end == end
    for before, after in itertools.pairwise(tiled):
        assert before.end == after.start
    for shift_ in tiled:
        moment = shift_.start
        while moment < shift_.end:
            assert expected[moment] == shift_.user, f"{moment}: {shift_}"
            moment += MINUTE
    for moment in list(expected)[::97]:  # on_call agrees, and its shift contains the instant
        found = on_call(rotation, overrides, moment)
        assert found.user == expected[moment] and found.start <= moment < found.end


def test_a_daily_handoff_keeps_its_wall_time_across_dst():
    """09:00 stays 09:00 in Paris: the shift over the spring change lasts 23 h."""
    rotation = Rotation("p", "Europe/Paris", timedelta(days=1), datetime(2026, 3, 28, 9), USERS)
    paris = ZoneInfo("Europe/Paris")
    assert [rotation.handoff(n).astimezone(paris).hour for n in range(3)] == [9, 9, 9]
    assert rotation.handoff(1) - rotation.handoff(0) == timedelta(hours=23)
    autumn = Rotation("p", "Europe/Paris", timedelta(days=1), datetime(2026, 10, 24, 9), USERS)
    assert autumn.handoff(1) - autumn.handoff(0) == timedelta(hours=25)


def test_a_handoff_in_the_gap_moves_to_its_end_and_one_in_the_fold_to_its_first_pass():
    """02:30 does not exist on 29 March in Paris (03:00 does); it occurs twice on 25 October."""
    paris = ZoneInfo("Europe/Paris")
    assert to_instant(datetime(2026, 3, 29, 2, 30), paris) == \
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert to_instant(datetime(2026, 10, 25, 2, 30), paris) == \
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_before_the_start_nobody_is_on_call():
    """The instant is before the rotation's first handoff: no one (the fallback's case)."""
    rotation = Rotation("p", "UTC", timedelta(days=1), datetime(2026, 12, 1, 9), USERS)
    found = on_call(rotation, [], datetime(2026, 11, 30, tzinfo=UTC))
    assert found.user is None and found.end == datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_the_last_created_override_wins():
    """Two overrides cover an instant: the one with the higher id."""
    rotation = Rotation("p", "UTC", timedelta(days=1), datetime(2026, 11, 1, 9), USERS)
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    overrides = [Override(2, "late", at - timedelta(hours=1), at + timedelta(hours=1)),
                 Override(1, "early", at - timedelta(hours=5), at + timedelta(hours=5))]
    found = on_call(rotation, overrides, at)
    assert (found.user, found.override) == ("late", 2)
    after = on_call(rotation, overrides, at + timedelta(hours=2))
    assert (after.user, after.start) == ("early", at + timedelta(hours=1))


@pytest.mark.parametrize("bad", [
    lambda: Rotation("p", "Mars/Olympus", timedelta(days=1), datetime(2026, 1, 1), USERS),
    lambda: Rotation("p", "UTC", timedelta(minutes=30), datetime(2026, 1, 1), USERS),
    lambda: Rotation("p", "UTC", timedelta(days=1), datetime(2026, 1, 1), ()),
])
def test_bad_rotations_are_refused(bad):
    """Unknown zones, shifts under an hour, rotations without users."""
    with pytest.raises(Exception):
        bad()


@settings(max_examples=150, deadline=None)
@given(zone=st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]),
       hours=st.sampled_from([1, 5, 12, 24, 48, 24 * 7]),
       offset=st.integers(min_value=-24 * 20, max_value=24 * 400),
       span=st.integers(min_value=1, max_value=24 * 30),
       overrides=st.lists(st.tuples(st.integers(0, 24 * 30), st.integers(1, 48)), max_size=4))
def test_shifts_tile_any_range_exactly(zone, hours, offset, span, overrides):
    """Property: the shifts of any range start at its start, end at its end, and touch."""
    rotation = Rotation("p", zone, timedelta(hours=hours), datetime(2026, 1, 5, 9), USERS)
    start = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(hours=offset, minutes=17)
    end = start + timedelta(hours=span)
    layered = [Override(i, f"u{i}", start + timedelta(hours=at), start + timedelta(hours=at + n))
               for i, (at, n) in enumerate(overrides)]
    tiled = shifts(rotation, layered, start, end)
    assert tiled[0].start == start and tiled[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(tiled))
    assert all(s.start < s.end for s in tiled)
