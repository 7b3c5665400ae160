"""Several daemons on one PostgreSQL database, as the cluster end-to-end tests run them."""

from __future__ import annotations

import os
import random
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pager_actors.cluster import SHARDS, shard_of
from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.pg import PASSWORD


class Cluster:
    """`size` daemons with one config but their own port and node name, one database;
    `server` and `sms` are lines added to those sections of every node's config.

    The config names the database without its password; PAGER_STATE gives it
    whole, as a deployment would.
    """

    def __init__(self, tmp_path: Path, dsn: str, *, smtp_port: int, sms_url: str,
                 services: str, size: int = 3, ack_timeout: str = "2s",
                 lease_ttl: str = "3s", seed: int = 0, server: str = "", sms: str = "") -> None:
        self.dsn = dsn
        self.headers: dict[str, str] = {}
        token = re.search(r'token = "([^"]+)"', server)
        if token:  # the API asks for it: every request of the cluster's carries it
            self.headers = {"Authorization": f"Bearer {token[1]}"}
        self.random = random.Random(seed)
        self.daemons: list[Daemon] = []
        for i in range(size):
            port = new_port()
            text = config_text(port=port, state=dsn.replace(f":{PASSWORD}@", "@"),
                               smtp_port=smtp_port, sms_url=sms_url, ack_timeout=ack_timeout,
                               services=services)
            text = text.replace("[server]\n", f"[server]\n{server}", 1).replace(
                'kind = "twilio"\n', f'kind = "twilio"\n{sms}', 1)
            text += f'\n[cluster]\nnode = "node-{i}"\nlease_ttl = "{lease_ttl}"\n'
            config = tmp_path / f"node-{i}.toml"
            config.write_text(text)
            self.daemons.append(Daemon(config, tmp_path / f"node-{i}.log",
                                       env={"PAGER_SMS_AUTH_TOKEN": "tok",
                                            "PAGER_STATE": dsn}))

    def start(self) -> Cluster:
        for daemon in self.daemons:
            daemon.start()
        self.wait_settled()
        return self

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop_quietly()

    # -- what the database says ----------------------------------------------------

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as db:
            return db.execute(sql, params).fetchall()

    def leases(self) -> dict[int, str | None]:
        """Each shard's holder, if its lease has not lapsed."""
        return dict(self.query("SELECT shard, CASE WHEN expires_at > now() THEN node END "
                               "FROM leases"))

    def owner(self, service_id: str) -> Daemon:
        """The daemon whose node holds the service's shard now."""
        node = self.leases()[shard_of(service_id)]
        assert node is not None, f"nobody holds {service_id}'s shard"
        return self.daemons[int(node.rsplit("-", 1)[1])]

    def others(self, daemon: Daemon) -> list[Daemon]:
        return [d for d in self.daemons if d is not daemon and d.proc is not None
                and d.proc.poll() is None]

    def wait_settled(self, timeout: float = 30) -> None:
        """Every shard held, by the running daemons only, each holding a fair share."""
        alive = {f"node-{i}" for i, d in enumerate(self.daemons)
                 if d.proc is not None and d.proc.poll() is None}

        def settled() -> bool:
            holders = list(self.leases().values())
            if None in holders or set(holders) != alive:
                return False
            share = -(-SHARDS // len(alive))
            return all(holders.count(node) <= share for node in alive)

        wait_for(settled, timeout, f"the {SHARDS} shards spread over {sorted(alive)}")

    def outbox(self, service_id: str) -> list[tuple[int, int, int, str, str]]:
        """(incident, level, round, target, status) of each of the service's pages."""
        return self.query("SELECT incident, level, round, target, status FROM outbox "
                          "WHERE service_id = %s ORDER BY seq", service_id)

    # -- requests --------------------------------------------------------------------

    def any(self) -> Daemon:
        """A running daemon, at random."""
        return self.random.choice([d for d in self.daemons
                                   if d.proc is not None and d.proc.poll() is None])

    def api(self, method: str, path: str, via: Daemon | None = None, **kwargs: object
            ) -> httpx.Response:
        """A request to `via`, or to a running daemon at random, with the API's token."""
        return (via or self.any()).api(method, path, headers=self.headers, **kwargs)

    def alert(self, service_id: str, message: str = "down", key: str | None = None,
              via: Daemon | None = None) -> httpx.Response:
        body = {"service_id": service_id, "message": message,
                **({"key": key} if key is not None else {})}
        return self.api("POST", "/api/v1/alerts", via=via, json=body)

    def logs(self) -> str:
        return "\n".join(d.log.read_text(errors="replace") for d in self.daemons
                         if d.log.exists())


@contextmanager
def paused(daemon: Daemon) -> Iterator[None]:
    """SIGSTOP the daemon's process for the block, then SIGCONT it."""
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def services_text(count: int, levels: int = 2, prefix: str = "svc") -> str:
    """`count` services, each paging one number per level: +3361<service:3><level>."""
    return "".join(
        f'\n[[services]]\nid = "{prefix}-{i}"\nlevels = ['
        + ", ".join(f'["sms:+3361{i:03d}{level:02d}"]' for level in range(1, levels + 1))
        + "]\n" for i in range(count))


def number(service: int, level: int) -> str:
    return f"+3361{service:03d}{level:02d}"
