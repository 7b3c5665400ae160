"""Server-side sessions in memory: a random id in an HttpOnly cookie, everything else here.

A session holds the user's id, its CSRF token, its expiry, a digest of the
password hash the user logged in with, and the message its next page shows.
The console looks the user up again on every request: a user removed from the
config (or whose hash changed) by a reload has no session any more.
`SessionStore` keeps them in this process only, so a restart logs everybody
out; a cluster keeps them in its database instead (`adapters.pg_console`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pager_actors.console.ports import (
    SESSION_LIFETIME,
    Flash,
    Session,
    credential,
    new_session,
)
from pager_actors.domain.people import User

__all__ = ["MAX_SESSIONS", "SESSION_LIFETIME", "Session", "SessionStore", "credential"]

MAX_SESSIONS = 10_000


@dataclass
class _Kept:
    session: Session
    expires: float
    flash: Flash | None = None


class SessionStore:
    """`Sessions` in memory. Thread-safe; time from `clock` (monotonic seconds). At most
    `max_sessions`: past that the oldest goes first."""

    def __init__(self, lifetime: float = SESSION_LIFETIME, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lifetime, self.max_sessions, self._clock = lifetime, max_sessions, clock
        self._sessions: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def create(self, user: User) -> Session:
        session = new_session(user)
        with self._lock:
            self._drop_expired()
            while len(self._sessions) >= self.max_sessions:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session.id] = _Kept(session, self._clock() + self._lifetime)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            kept = self._live(session_id)
            return kept.session if kept else None

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def set_flash(self, session: Session, flash: Flash) -> None:
        with self._lock:
            kept = self._live(session.id)
            if kept is not None:
                kept.flash = flash

    def take_flash(self, session: Session) -> Flash | None:
        with self._lock:
            kept = self._live(session.id)
            if kept is None:
                return None
            shown, kept.flash = kept.flash, None
            return shown

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _live(self, session_id: str) -> _Kept | None:
        """Under the lock: the session if it is still live; an expired one is dropped."""
        kept = self._sessions.get(session_id)
        if kept is not None and kept.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return kept

    def _drop_expired(self) -> None:
        now = self._clock()
        for sid in [sid for sid, kept in self._sessions.items() if kept.expires <= now]:
            del self._sessions[sid]
