"""Server-side sessions: a random id in an HttpOnly cookie, everything else in memory.

A session holds the user's id, its CSRF token, its expiry and a digest of the
password hash the user logged in with. The console looks the user up again on
every request: a user removed from the config (or whose hash changed) by a
reload has no session any more. Sessions live in this process only, so a
restart logs everybody out.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pager_actors.domain.people import User

SESSION_LIFETIME = 12 * 3600.0  # a night on call, then log in again
MAX_SESSIONS = 10_000


def credential(user: User) -> str:
    """What a session is bound to besides the user's id: their current password hash."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()


@dataclass
class Session:
    id: str
    user_id: str
    csrf: str
    expires: float
    credential: str
    flash: tuple[str, str] | None = None  # (kind, text), shown once by the next page

    def take_flash(self) -> tuple[str, str] | None:
        shown, self.flash = self.flash, None
        return shown


class SessionStore:
    """Sessions by id. Thread-safe; time from `clock` (monotonic seconds)."""

    def __init__(self, lifetime: float = SESSION_LIFETIME, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime, self.max_sessions, self._clock = lifetime, max_sessions, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: User) -> Session:
        """A new session for `user`, with a fresh id and CSRF token."""
        session = Session(secrets.token_urlsafe(32), user.id, secrets.token_urlsafe(32),
                          self._clock() + self.lifetime, credential(user))
        with self._lock:
            self._drop_expired()
            while len(self._sessions) >= self.max_sessions:  # the oldest goes first
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session `session_id`, or None (unknown or expired)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires <= self._clock():
                del self._sessions[session_id]
                return None
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _drop_expired(self) -> None:
        now = self._clock()
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]
