"""A real PostgreSQL for the tests: Debian's binaries, a throwaway cluster, one database a test.

`PostgresServer` runs `initdb` and `pg_ctl` in a temporary folder, as the
unprivileged `postgres` user when the tests run as root (the server refuses
root). It listens on 127.0.0.1 on a free port and on a unix socket in that
folder, with PostgreSQL's default durability (fsync and synchronous_commit on).
TCP logins need a password (scram-sha-256): the store tests connect as the role
`pager` with `PASSWORD`, as a deployment would; the fixture's own admin work goes
through the socket. `restart()` is `pg_ctl restart`: every open connection drops.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.servers import free_port

PASSWORD = secrets.token_urlsafe(16)  # the `pager` role's, new each session
OWNER = "postgres"  # the system user Debian's package creates
PG_TIMEOUT = 60  # seconds pg_ctl waits for a start or a stop


class Unavailable(Exception):
    """PostgreSQL cannot run here (no binaries, no unprivileged user): skip, with this."""


def find_bindir() -> Path:
    """The folder of initdb, pg_ctl and postgres: Debian's newest, else the PATH's."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                        else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise Unavailable("PostgreSQL's binaries (initdb, pg_ctl, postgres) are not installed: "
                      "apt-get install postgresql (.ci/run does)")


def _unprivileged() -> tuple[list[str], int | None]:
    """The prefix that runs a command as OWNER when we are root, and OWNER's uid."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam(OWNER).pw_uid
    except KeyError:
        raise Unavailable(f"running as root and there is no {OWNER!r} user to run PostgreSQL "
                          "as (it refuses root)") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", OWNER, "--"], uid
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--init-groups"], uid
    raise Unavailable("running as root without runuser or setpriv to drop to "
                      f"{OWNER!r}")


class PostgresServer:
    """One throwaway PostgreSQL cluster; call `stop()` (it also removes the folder)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self._prefix, uid = _unprivileged()
        self.root = Path(tempfile.mkdtemp(prefix="pager-pg-"))
        if uid is not None:
            os.chown(self.root, uid, -1)
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self.running = False

    def _run(self, *command: str, timeout: float = PG_TIMEOUT + 30) -> None:
        done = subprocess.run([*self._prefix, *command], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.root)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}\n--- server log:\n{tail}")

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def start(self) -> PostgresServer:
        """initdb, then start on a free port (another one if that port was taken meanwhile)."""
        pwfile = self.root / "superuser-password"
        pwfile.write_text(secrets.token_urlsafe(16) + "\n")
        os.chown(pwfile, os.stat(self.root).st_uid, -1)
        self._run(self._tool("initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={pwfile}")
        pwfile.unlink()
        for attempt in range(5):
            self.port = free_port()
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                           f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                           "synchronous_commit = on\n")
            try:
                self._ctl("start")
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        self.running = True
        with self.admin() as db:
            db.execute(f"CREATE ROLE pager LOGIN PASSWORD '{PASSWORD}'")
        return self

    def _ctl(self, action: str) -> None:
        self._run(self._tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(PG_TIMEOUT), "-m", "fast", action)

    def restart(self) -> None:
        """pg_ctl restart: every connection to the server drops; back when it returns."""
        self._ctl("restart")

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is down inside the block, and started again on leaving it."""
        self._ctl("stop")
        try:
            yield
        finally:
            self._ctl("start")

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its folder."""
        try:
            if self.running:
                self.running = False
                self._ctl("stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection through the unix socket, autocommit."""
        return psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def dsn(self, database: str, password: str = PASSWORD) -> str:
        """The URL a pager would be given: TCP, the `pager` role and its password."""
        return f"postgresql://pager:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database owned by `pager`; its name."""
        name = f"pager_test_{next(self._names)}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} OWNER pager")
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, disconnecting whoever is still on it."""
        with contextlib.suppress(psycopg.OperationalError), self.admin() as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class CommitCutter:
    """A TCP relay in front of the server that can drop one client's connection at its next
    COMMIT: `cut = "before"` drops it without passing the COMMIT on (the server rolls
    back); `cut = "after"` passes the COMMIT on and drops the connection instead of
    passing the answer back (the server commits; the client cannot know). The test
    server speaks plain TCP (no TLS), so the relay can see the COMMIT go by."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.cut: str | None = None
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def dsn(self, database: str) -> str:
        return (f"postgresql://pager:{PASSWORD}@127.0.0.1:{self.port}/{database}"
                "?sslmode=disable")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            swallow = threading.Event()  # the server's next answer is not passed back
            for target, args in ((self._to_server, (client, upstream, swallow)),
                                 (self._to_client, (upstream, client, swallow))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _to_server(self, client: socket.socket, upstream: socket.socket,
                   swallow: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self.cut and b"COMMIT" in chunk:
                    mode, self.cut = self.cut, None
                    self.cuts += 1
                    if mode == "before":
                        break
                    swallow.set()
                upstream.sendall(chunk)
        if not swallow.is_set():
            _close(client, upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket,
                   swallow: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                if swallow.is_set():
                    break  # the COMMIT's answer: dropped with the connection
                client.sendall(chunk)
        _close(client, upstream)

    def close(self) -> None:
        _close(self._listener, *self._sockets)  # shutdown() wakes the thread in accept()
        for thread in self._threads:
            thread.join(timeout=10)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
