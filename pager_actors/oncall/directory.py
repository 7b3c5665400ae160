"""The on-call directory: people, rotations and overrides in force, and the resolver that
turns `user:` and `rotation:` targets into contacts when a page is decided.

The arithmetic is `rotation.py` (pure); this part holds state: the config's
people and rotations (swapped whole on a reload) and the overrides, which are
written to the store before they count (`StateStore.add_override`). Reads
never lock: the resolver runs in every service actor's thread, and sees
either the old tables or the new ones.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pager_actors.domain.decide import Reached
from pager_actors.domain.model import RotationTarget, UserTarget
from pager_actors.domain.people import User
from pager_actors.oncall.rotation import Override, Rotation, Shift, on_call, shifts


class OverrideStore(Protocol):
    """The part of the state store that keeps overrides."""

    def add_override(self, rotation: str, user: str, start: datetime, end: datetime,
                     created: datetime) -> Override: ...

    def remove_override(self, rotation: str, override: int) -> bool: ...

    def overrides(self) -> dict[str, list[Override]]: ...


class UnknownRotationError(LookupError):
    pass


class OnCall:
    def __init__(self, users: Sequence[User], rotations: Sequence[Rotation],
                 store: OverrideStore) -> None:
        self._store = store
        self._lock = threading.Lock()  # for writers; readers take the current tables
        self._users: dict[str, User] = {}
        self._rotations: dict[str, Rotation] = {}
        self._overrides: dict[str, tuple[Override, ...]] = {
            rotation: tuple(found) for rotation, found in store.overrides().items()}
        self.replace(users, rotations)

    def replace(self, users: Sequence[User], rotations: Sequence[Rotation]) -> None:
        """A reload: the new people and rotations, at once. Overrides stay."""
        self._users = {user.id: user for user in users}
        self._rotations = {rotation.id: rotation for rotation in rotations}

    # -- resolving ---------------------------------------------------------------------

    def resolve(self, target: UserTarget | RotationTarget, now: datetime) -> list[Reached]:
        """Whom `target` stands for at `now`: the contacts of the user, or of whoever the
        rotation (overrides applied) puts on call. Nobody: an empty list."""
        if isinstance(target, UserTarget):
            return self._contacts(target.id, "user")
        rotation = self._rotations.get(target.id)
        if rotation is None:
            return []
        user = on_call(rotation, self._overrides.get(target.id, ()), now).user
        return self._contacts(user, f"rotation {target.id}") if user is not None else []

    def _contacts(self, user_id: str, via: str) -> list[Reached]:
        user = self._users.get(user_id)
        return [Reached(contact, user_id, via) for contact in user.contacts] if user else []

    def owner(self, contact_uri: str) -> str | None:
        """The id of the user this contact belongs to, if any."""
        return next((user.id for user in self._users.values()
                     if any(c.uri == contact_uri for c in user.contacts)), None)

    # -- reading -----------------------------------------------------------------------

    def rotations(self) -> list[Rotation]:
        return list(self._rotations.values())

    def rotation(self, rotation_id: str) -> Rotation:
        rotation = self._rotations.get(rotation_id)
        if rotation is None:
            raise UnknownRotationError(f"no rotation {rotation_id!r}")
        return rotation

    def on_call(self, rotation_id: str, at: datetime) -> Shift:
        return on_call(self.rotation(rotation_id), self._overrides.get(rotation_id, ()), at)

    def shifts(self, rotation_id: str, start: datetime, end: datetime) -> list[Shift]:
        return shifts(self.rotation(rotation_id), self._overrides.get(rotation_id, ()),
                      start, end)

    def overrides(self, rotation_id: str) -> list[Override]:
        self.rotation(rotation_id)
        return list(self._overrides.get(rotation_id, ()))

    # -- overrides -------------------------------------------------------------------------

    def add_override(self, rotation_id: str, user: str, start: datetime, end: datetime,
                     now: datetime) -> Override:
        """Store it, then let it count. ValueError for an unknown user or a bad span.

        The overrides already past at `now` leave memory here: adding is the only way the
        list grows, so it stays as long as the overrides in force (the store prunes its
        copy every hour)."""
        self.rotation(rotation_id)
        if user not in self._users:
            raise ValueError(f"no user {user!r}")
        if not start < end:
            raise ValueError("'end' must be after 'start'")
        if end <= now:
            raise ValueError("'end' is already past")
        with self._lock:
            override = self._store.add_override(rotation_id, user, start, end, now)
            self._forget_past(now)
            self._overrides[rotation_id] = (*self._overrides.get(rotation_id, ()), override)
            return override

    def remove_override(self, rotation_id: str, override_id: int) -> bool:
        self.rotation(rotation_id)
        with self._lock:
            if not self._store.remove_override(rotation_id, override_id):
                return False
            self._overrides[rotation_id] = tuple(
                o for o in self._overrides.get(rotation_id, ()) if o.id != override_id)
            return True

    def refresh(self, now: datetime) -> None:
        """Read the overrides again from the store, where another node of a cluster may
        have added or removed some; those already past are left out."""
        with self._lock:  # an override added here meanwhile is in what is read
            found = self._store.overrides()
            self._overrides = {rotation: kept for rotation, listed in found.items()
                               if (kept := tuple(o for o in listed if o.end > now))}

    def forget_past(self, now: datetime) -> None:
        """Drop the overrides that ended (the store prunes its copy on its own)."""
        with self._lock:
            self._forget_past(now)

    def _forget_past(self, now: datetime) -> None:
        """The lock held: a new table, swapped in whole, so readers never see half of it."""
        self._overrides = {rotation: kept for rotation, found in self._overrides.items()
                           if (kept := tuple(o for o in found if o.end > now))}
