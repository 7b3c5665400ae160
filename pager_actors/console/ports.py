"""The console's own ports: where its sessions and failed logins are kept, and the values
they carry.

One daemon keeps them in memory (`sessions.SessionStore`, `limits.LoginLimiter`);
a cluster keeps them in its PostgreSQL database (`adapters.pg_console`), so a
user logged in on one node is logged in on every node, and failed logins add
up across nodes. The console calls these on a worker thread (they may wait on a
database), never on the event loop. A store that cannot answer raises
`pager_actors.ports.StoreError`; the console shows a 503 page.

This module imports only the standard library and the domain, so adapters may
implement it without importing the console.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from pager_actors.domain.people import User

SESSION_LIFETIME = 12 * 3600.0  # a night on call, then log in again
ACCOUNT_KEY_CHARS = 128

Flash = tuple[str, str]  # (kind, text): "success", "info", "warning" or "error", and what to say


def credential(user: User) -> str:
    """What a session is bound to besides the user's id: their current password hash."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()


def account_key(account: str) -> str:
    """The name failed logins are counted under: case and surrounding spaces ignored,
    bounded, so `Alice `, `alice` and `ALICE` share one count."""
    return account.strip().casefold()[:ACCOUNT_KEY_CHARS]


@dataclass(frozen=True)
class Session:
    """A live session: its id (the cookie's value), its user, its CSRF token and the
    credential (`credential(user)`) it was made with."""

    id: str
    user_id: str
    csrf: str
    credential: str


def new_session(user: User) -> Session:
    """A session for `user`: a fresh random id (256 bits) and CSRF token."""
    return Session(secrets.token_urlsafe(32), user.id, secrets.token_urlsafe(32),
                   credential(user))


class Sessions(Protocol):
    """Server-side sessions, so logout and a removed user end one at once everywhere.

    `lifetime` is how long a session lives from its creation, in seconds. A flash is
    a message the next page shows once; it is kept with the session (not in a
    process), so the next page shows it whichever node serves it.
    """

    @property
    def lifetime(self) -> float: ...

    def create(self, user: User) -> Session:
        """A new session for `user`, with a fresh random id and CSRF token."""
        ...

    def get(self, session_id: str | None) -> Session | None:
        """The live session `session_id`, or None (unknown, ended or expired)."""
        ...

    def end(self, session_id: str) -> None:
        """End it now; ending an unknown session does nothing."""
        ...

    def set_flash(self, session: Session, flash: Flash) -> None:
        """What the session's next page says, replacing any message not yet shown."""
        ...

    def take_flash(self, session: Session) -> Flash | None:
        """The message waiting for the session, removed: each is shown once."""
        ...


@dataclass(frozen=True)
class LoginLimits:
    per_account: int = 5
    per_client: int = 20
    overall: int = 100
    window: float = 900.0  # seconds
    max_tracked: int = 10_000  # accounts and clients remembered at most, each (in memory)


@dataclass(frozen=True)
class Refusal:
    """Why a login attempt is refused now, and for how long (seconds, rounded up)."""

    scope: str  # "account", "client" or "overall"
    retry_after: int


class LoginAttempts(Protocol):
    """Failed logins counted per account (`account_key`), per client address and overall,
    each in a sliding window (`LoginLimits`); see `limits` for the rules."""

    def refused(self, account: str, client: str) -> Refusal | None:
        """The limit that refuses an attempt for `account` from `client` now, if any: the
        first full one of account, client, overall."""
        ...

    def failed(self, account: str, client: str) -> None:
        """Count one failed login for `account` from `client`."""
        ...

    def succeeded(self, account: str) -> None:
        """`account` logged in: forget its failures (not its client's)."""
        ...
