"""Rotations: who is on call at an instant, with handoffs at local wall time.

Pure arithmetic over `zoneinfo`; no clock is read (callers pass instants).

- A shift of a whole number of days (`1d`, `1w`) hands off at the same local
  wall time every time: a daily 09:00 handoff stays at 09:00 across a DST
  change, so that shift lasts 23 h or 25 h.
  - A handoff time that does not exist (the spring-forward gap) moves to the
    first valid instant after it: the end of the gap.
  - A handoff time that occurs twice (the autumn fold) uses its first occurrence.
- Any other shift (`12h`, `90m`) is counted in absolute time from `start`.

Overrides lie on top: while one covers an instant, its user is on call; when
several cover it, the one created last wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

DAY = timedelta(days=1)
MIN_SHIFT = timedelta(hours=1)


class Shift(NamedTuple):
    """`user` is on call from `start` (included) to `end` (excluded); None: nobody.
    `override` is the id of the override that put them there, if one did."""

    user: str | None
    start: datetime
    end: datetime
    override: int | None = None


class Override(NamedTuple):
    """`user` takes the rotation from `start` to `end`. `id` grows with creation: on an
    overlap the highest wins."""

    id: int
    user: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Rotation:
    """Users taking turns: `users[0]` from `start` (a naive local wall time in
    `time_zone`), then the next one each `shift`."""

    id: str
    time_zone: str
    shift: timedelta
    start: datetime
    users: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.shift < MIN_SHIFT:
            raise ValueError(f"a shift lasts at least 1h, got {self.shift}")
        if not self.users:
            raise ValueError(f"rotation {self.id!r} has no users")
        if self.start.tzinfo is not None:
            raise ValueError("a rotation's start is a local wall time, without offset")
        ZoneInfo(self.time_zone)  # an unknown zone raises here, not at page time

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def by_wall_clock(self) -> bool:
        """Whole days: handoffs at local wall time; else absolute time."""
        return self.shift % DAY == timedelta(0)

    def handoff(self, n: int) -> datetime:
        """The instant (UTC) of handoff number `n` (0: the rotation's start)."""
        if self.by_wall_clock:
            return to_instant(self.start + n * self.shift, self.zone)
        return to_instant(self.start, self.zone) + n * self.shift

    def index_at(self, instant: datetime) -> int | None:
        """The number of the last handoff at or before `instant`; None before `start`."""
        first = self.handoff(0)
        if instant < first:
            return None
        n = int((instant - first) / self.shift)  # exact for absolute shifts
        while n > 0 and self.handoff(n) > instant:  # DST moved wall-clock handoffs by hours
            n -= 1
        while self.handoff(n + 1) <= instant:
            n += 1
        return n

    def shift_at(self, instant: datetime) -> Shift:
        """Who the rotation itself puts on call at `instant` (overrides aside)."""
        n = self.index_at(instant)
        if n is None:
            return Shift(None, datetime.min.replace(tzinfo=UTC), self.handoff(0))
        return Shift(self.users[n % len(self.users)], self.handoff(n), self.handoff(n + 1))


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time: its first occurrence in a fold, and the
    end of the gap for a time that does not exist."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)
    # In a gap: the instant the clocks jumped, which is the first whole second whose wall
    # time is not earlier than `wall`. Zones change offsets on whole seconds.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)   # before the jump
    high = first.astimezone(UTC)                              # after it
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low) // timedelta(seconds=2))
        if middle.astimezone(zone).replace(tzinfo=None) < wall:
            low = middle
        else:
            high = middle
    return high


def on_call(rotation: Rotation, overrides: Iterable[Override], instant: datetime) -> Shift:
    """Who is on call at `instant`, overrides applied, from when until when."""
    own = rotation.shift_at(instant)
    covering = [o for o in overrides if o.start <= instant < o.end]
    start = min([own.start, *(o.start for o in covering)])
    end = max([own.end, *(o.end for o in covering)])
    return next(s for s in shifts(rotation, overrides, start, end, limit=1_000_000)
                if s.start <= instant < s.end)


def shifts(rotation: Rotation, overrides: Iterable[Override], start: datetime,
           end: datetime, *, limit: int = 1000) -> list[Shift]:
    """The shifts from `start` to `end`, overrides applied: consecutive, with no gap and
    no overlap, the first and last cut at `start` and `end`. A handoff between two shifts
    of the same user stays a boundary; an override's span is one shift. At most `limit`
    shifts (ValueError past it)."""
    if end <= start:
        raise ValueError("the range ends before it starts")
    covering = sorted((o for o in overrides if o.end > start and o.start < end),
                      key=lambda o: o.id)
    cuts = {start, end}
    cuts.update(t for o in covering for t in (o.start, o.end) if start < t < end)
    moment = start
    while moment < end:  # the rotation's own handoffs within the range
        own = rotation.shift_at(moment)
        if own.end < end:
            cuts.add(own.end)
        moment = own.end
        if len(cuts) > 2 * limit + 2:
            raise ValueError(f"more than {limit} shifts in the range")
    bounds = sorted(cuts)
    found: list[Shift] = []
    keys: list[tuple[str, int | None]] = []
    for low, high in itertools.pairwise(bounds):
        winner = next((o for o in reversed(covering) if o.start <= low < o.end), None)
        key: tuple[str, int | None]
        user: str | None
        if winner is not None:
            user, override, key = winner.user, winner.id, ("override", winner.id)
        else:
            user, override = rotation.shift_at(low).user, None
            key = ("rotation", rotation.index_at(low))
        if keys and keys[-1] == key:
            found[-1] = found[-1]._replace(end=high)
        else:
            found.append(Shift(user, low, high, override))
            keys.append(key)
    if len(found) > limit:
        raise ValueError(f"more than {limit} shifts in the range")
    return found
