"""Password hashes: argon2id to make, argon2 or bcrypt to verify, one check at a time.

Verifying a hash costs about 0.1 s of CPU and 64 MiB, on purpose.
`PasswordChecker` runs every check on one thread of its own, so a flood of
logins queues there (and past `max_waiting` is refused at once) instead of
taking the cores that page people, or the threads that serve the console's
reads. A login for an unknown account is checked against a dummy
hash made with the parameters of the configured users' hashes, so it takes
as long as one for a known account.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError

from pager_actors.domain.people import User

_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# The PHC string argon2 writes: salt and digest in unpadded base64.
_ARGON2 = re.compile(r"\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+"
                     r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}")
BCRYPT_COSTS = range(4, 17)
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; other tools cut there too
# Past these a single check would hold the checker (and a core) for seconds.
ARGON2_MAX_MEMORY_KIB = 2 * 1024 * 1024
ARGON2_MAX_TIME_COST = 10
ARGON2_MAX_PARALLELISM = 16
MAX_PASSWORD_CHARS = 1024


# argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes) but one lane instead of
# four: a check then takes one core (about 0.14 s here), never both.
HASHER = argon2.PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    """An argon2id hash of `password`: 64 MiB, 3 passes, 1 lane."""
    return HASHER.hash(password)


def check_password_hash(text: object) -> str:
    """`text` if it is an argon2 or bcrypt hash we can verify in reasonable time, else
    ValueError. No message ever contains the hash."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string (a {type(text).__name__} was given; its value "
                        "is not shown)")
    if text.startswith("$argon2"):
        try:
            if not _ARGON2.fullmatch(text):
                raise InvalidHashError()
            found = argon2.extract_parameters(text)
        except (InvalidHashError, ValueError) as error:
            raise ValueError("not a well-formed argon2 hash (its value is not shown); make "
                             "one with `pager-actors hash-password`") from error
        if (found.memory_cost > ARGON2_MAX_MEMORY_KIB or found.time_cost > ARGON2_MAX_TIME_COST
                or found.parallelism > ARGON2_MAX_PARALLELISM):
            raise ValueError(f"argon2 parameters too costly to verify at each login "
                             f"(m={found.memory_cost}, t={found.time_cost}, "
                             f"p={found.parallelism}; at most m={ARGON2_MAX_MEMORY_KIB}, "
                             f"t={ARGON2_MAX_TIME_COST}, p={ARGON2_MAX_PARALLELISM})")
        return text
    matched = _BCRYPT.fullmatch(text)
    if matched is not None:
        cost = int(matched.group(1))
        if cost not in BCRYPT_COSTS:
            raise ValueError(f"bcrypt cost {cost} outside {BCRYPT_COSTS.start} to "
                             f"{BCRYPT_COSTS.stop - 1}")
        return text
    raise ValueError("not an argon2 or bcrypt hash (its value is not shown); make one with "
                     "`pager-actors hash-password`")


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches `password_hash` (argon2 or bcrypt). Never raises for a
    wrong password or a damaged hash: both are a mismatch."""
    if password_hash.startswith("$argon2"):
        try:
            return argon2.PasswordHasher().verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        return bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], password_hash.encode())
    except ValueError:
        return False


def _profile(password_hash: str) -> str:
    """What a hash's cost depends on: argon2's parameters, or bcrypt's cost prefix."""
    if password_hash.startswith("$argon2"):
        return password_hash.rsplit("$", 2)[0]  # $argon2id$v=19$m=...,t=...,p=...
    return password_hash[:7]  # $2b$12$


def _dummy_hash(profile: str) -> str:
    secret = secrets.token_hex(16)
    if profile.startswith("$argon2"):
        found = argon2.extract_parameters(f"{profile}$AAAAAAAAAAAAAAAAAAAAAA$"
                                          "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        return argon2.PasswordHasher.from_parameters(found).hash(secret)
    return bcrypt.hashpw(secret.encode(), profile.encode() + bcrypt.gensalt()[7:]).decode()


_DEFAULT_PROFILE = (f"$argon2id$v=19$m={HASHER.memory_cost},t={HASHER.time_cost},"
                    f"p={HASHER.parallelism}")


class CheckerBusy(Exception):
    """Too many logins are waiting for a password check; try again shortly."""


class PasswordChecker:
    """Checks passwords on `concurrency` threads of its own; at most `max_waiting` wait."""

    def __init__(self, concurrency: int = 1, max_waiting: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="pager-password")
        self._max_waiting = max_waiting
        self._waiting = 0
        self._lock = threading.Lock()
        self._dummies: dict[str, str] = {}

    async def check(self, user: User | None, password: str, everyone: Iterable[User]) -> bool:
        """Whether `user` (None: no such account) logs in with `password`. Raises
        CheckerBusy at once when too many checks are waiting."""
        with self._lock:
            if self._waiting >= self._max_waiting:
                raise CheckerBusy()
            self._waiting += 1
        try:
            hashes = [u.password_hash for u in everyone if u.password_hash]
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._check, user, password, hashes)
        finally:
            with self._lock:
                self._waiting -= 1

    def _check(self, user: User | None, password: str, hashes: list[str]) -> bool:
        if user is not None and user.password_hash is not None:
            return verify_password(user.password_hash, password[:MAX_PASSWORD_CHARS])
        # No such account (or one that cannot log in): the same work, then no.
        verify_password(self._dummy(hashes), password[:MAX_PASSWORD_CHARS])
        return False

    def _dummy(self, hashes: list[str]) -> str:
        """A hash of a random secret, as costly as most configured users' hashes."""
        common = Counter(map(_profile, hashes)).most_common(1)
        profile = common[0][0] if common else _DEFAULT_PROFILE
        if profile not in self._dummies:  # only this checker's threads get here
            self._dummies[profile] = _dummy_hash(profile)
        return self._dummies[profile]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
