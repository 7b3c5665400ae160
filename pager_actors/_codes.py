"""Reply codes: the short code an SMS reply names an incident by ("ACK 4821").

A code is unique among open incidents and is not given again for 24 hours
after its incident closed, so a late reply can never act on a newer incident.
Codes are digits, easy to type on a phone: four while few are in use, five
or six once a quarter of the shorter ones are taken.

Shared by every service actor, so it takes a lock; a service reserves the
code of its next incident once, when it has none open, and caches it. What an
incident's code is lives in its state (committed with it); after a restart
`load()` rebuilds this table from the stored states.

In a cluster (`shard_of` given) the code space is split by shard: a code of
a service in shard s is a number equal to s modulo the shard count, so each
code belongs to one shard, and a shard to the one node holding its lease. The
table then holds the codes of the services this node runs (an adoption loads
those of its shards from the store, an abandonment forgets them), and codes are
unique across the cluster without a table of their own: the lease is the lock.
`shard_of_code` tells which shard, hence which node's store rows, a reply's
code belongs to.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

QUARANTINE = timedelta(hours=24)
_LENGTHS = (4, 5, 6)


class CodeUse(NamedTuple):
    """Who holds a code: an incident of a service (reserved or open), or nobody since
    `released` (the incident closed then)."""

    service_id: str
    incident: int
    released: datetime | None = None


def shard_of_code(code: str, shards: int) -> int | None:
    """The shard a cluster's reply code belongs to (None: not a code)."""
    return int(code) % shards if code.isdigit() and code.isascii() else None


class ReplyCodes:
    """`shard_of` (a cluster's shard map, and its shard count): codes are drawn from each
    service's own shard's part of the space."""

    def __init__(self, clock: Callable[[], datetime],
                 rng: random.Random | None = None,
                 shard_of: tuple[Callable[[str], int], int] | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._shard_of = shard_of
        self._lock = threading.Lock()
        self._uses: dict[str, CodeUse] = {}
        self._reserved: dict[tuple[str, int], str] = {}

    def load(self, uses: Iterable[tuple[str, str, int, datetime | None]]) -> None:
        """(code, service, incident, released) of open incidents and of those closed within
        a day, from the store."""
        with self._lock:
            for code, service_id, incident, released in uses:
                self._uses[code] = CodeUse(service_id, incident, released)
                if released is None:
                    self._reserved[(service_id, incident)] = code

    def reserve(self, service_id: str, incident: int) -> str:
        """The code of `incident` of `service_id`: the same one every time it is asked."""
        with self._lock:
            code = self._reserved.get((service_id, incident))
            if code is None:
                code = self._fresh(service_id)
                self._uses[code] = CodeUse(service_id, incident)
                self._reserved[(service_id, incident)] = code
            return code

    def release(self, code: str, at: datetime) -> None:
        """Its incident closed at `at`: the code rests a day, then may be given again."""
        with self._lock:
            use = self._uses.get(code)
            if use is not None and use.released is None:
                self._uses[code] = use._replace(released=at)
                self._reserved.pop((use.service_id, use.incident), None)

    def forget(self, services: Callable[[str], bool]) -> int:
        """Drop the codes of the services `services` accepts (no longer run here); how many."""
        with self._lock:
            gone = [code for code, use in self._uses.items() if services(use.service_id)]
            for code in gone:
                del self._uses[code]
            for key in [key for key in self._reserved if services(key[0])]:
                del self._reserved[key]
            return len(gone)

    def holder(self, code: str) -> CodeUse | None:
        """Who holds `code`: an incident not yet closed, or one closed within the last day
        (`released` set), else None."""
        return self._uses.get(code)

    def _fresh(self, service_id: str) -> str:
        now = self._clock()
        stale = [c for c, u in self._uses.items()
                 if u.released is not None and now - u.released > QUARANTINE]
        for code in stale:
            del self._uses[code]
        step, offset = 1, 0
        if self._shard_of is not None:
            shard_of, step = self._shard_of
            offset = shard_of(service_id)
        for length in _LENGTHS:
            space = len(range(offset, 10 ** length, step))  # codes of this shard
            taken = sum(1 for c in self._uses
                        if len(c) == length and (step == 1 or int(c) % step == offset))
            if taken * 4 < space or length == _LENGTHS[-1]:
                for _ in range(64):
                    code = str(self._rng.randrange(space) * step + offset).zfill(length)
                    if code not in self._uses:
                        return code
        raise RuntimeError("no reply code left: a million incidents in a day")
