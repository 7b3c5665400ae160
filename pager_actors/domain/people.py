"""People: the `[[users]]` who log into the console and, later, are paged by name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pager_actors.domain.model import Contact

# The same ids as `user:ID` targets.
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_MAX_CHARS = 100


def check_user_id(user_id: object) -> str:
    """`user_id` if it is a valid id (people type it to log in), else ValueError."""
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise ValueError(f"not a user id (1-64 of A-Z a-z 0-9 . _ -, starting with a "
                         f"letter or digit): {str(user_id)[:80]!r}")
    return user_id


def check_user_name(name: object) -> str:
    """A display name: 1-100 printable characters, not only spaces, else ValueError."""
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_CHARS \
            or not name.isprintable():
        raise ValueError(f"a name is 1-{NAME_MAX_CHARS} printable characters, "
                         f"got {str(name)[:40]!r}")
    return name


@dataclass(frozen=True, slots=True)
class User:
    """A person. `password_hash` (argon2 or bcrypt) lets them log into the console; a
    person without one is only a contact. The hash never appears in a repr."""

    id: str
    name: str
    password_hash: str | None = field(default=None, repr=False)
    contacts: tuple[Contact, ...] = ()
