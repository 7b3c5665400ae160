"""Reply codes: the short code an SMS reply names an incident by ("ACK 4821").

A code is unique among open incidents and is not given again for 24 hours
after its incident closed, so a late reply can never act on a newer incident.
Codes are digits, easy to type on a phone: four while few are in use, five
or six once a quarter of the shorter ones are taken.

Shared by every service actor, so it takes a lock; a service reserves the
code of its next incident once, when it has none open, and caches it. What an
incident's code is lives in its state (committed with it); after a restart
`load()` rebuilds this table from the stored states.

In a cluster the table holds the codes of the services this node runs: an
adoption loads those of its shards, an abandonment forgets them. Codes are
then unique per node only; a table shared by the cluster (one owner in the
database) is for the PostgreSQL phase of issue 11.
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


class ReplyCodes:
    def __init__(self, clock: Callable[[], datetime],
                 rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()
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
                code = self._fresh()
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

    def _fresh(self) -> str:
        now = self._clock()
        stale = [c for c, u in self._uses.items()
                 if u.released is not None and now - u.released > QUARANTINE]
        for code in stale:
            del self._uses[code]
        for length in _LENGTHS:
            space = 10 ** length
            taken = sum(1 for c in self._uses if len(c) == length)
            if taken * 4 < space or length == _LENGTHS[-1]:
                for _ in range(64):
                    code = str(self._rng.randrange(space)).zfill(length)
                    if code not in self._uses:
                        return code
        raise RuntimeError("no reply code left: a million incidents in a day")
