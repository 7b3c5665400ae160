"""One owner per state file: an exclusive, non-blocking `flock` on `<state>.lock`.

The lock lives in a file of its own, beside the database, so that it never
mixes with SQLite's own POSIX locks on the database file (closing any other
descriptor of that file would drop them). The kernel releases a `flock` when
its holder dies, even by SIGKILL, so a crash never leaves a stale lock. The
holder writes its pid into the lock file, for the refusal message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pager_actors.ports import StoreError, StoreLockedError


class StateLock:
    """Held from `acquire()` until `release()` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state: Path) -> StateLock:
        """Lock `state`, or raise StoreLockedError (held elsewhere) or StoreError (no directory)."""
        state = Path(os.path.realpath(state))  # a symlink to the file shares its lock
        directory = state.parent
        if not directory.is_dir():
            raise StoreError(f"{state}: the directory {directory} does not exist")
        path = state.with_name(state.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StoreError(f"{state}: cannot create the lock file {path}: "
                             f"{error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreLockedError(f"{state}: the state file is in use by another pager "
                                   f"({holder}); only one may own it") from None
        except OSError as error:
            os.close(fd)
            raise StoreError(f"{state}: cannot lock {path}: {error.strerror}") from error
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f"pid {pid}"
    return "pid unknown"
