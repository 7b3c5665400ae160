"""Start a local PostgreSQL 15 and three pager nodes on it, to watch a failover.

    .venv/bin/python examples/cluster/start.py

PostgreSQL comes from Debian's `postgresql` package (initdb and pg_ctl in a
temporary folder, run as the `postgres` user when started as root: the server
refuses root), listening on 127.0.0.1 only. The nodes listen on 127.0.0.1:8081,
8082 and 8083 (node-1.toml … node-3.toml) and log their pages instead of sending
them. The script prints what to try, then waits; Ctrl-C stops the nodes (SIGTERM:
each hands its shards over) and PostgreSQL, and removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg import PostgresServer  # noqa: E402 - the tests' throwaway PostgreSQL

TRY = """
Three nodes share one PostgreSQL; each holds about a third of the 64 shards:
  curl -s localhost:8081/api/v1/cluster | python3 -m json.tool

Send an alert to any node; the owner of `checkout` pages level 1 (see its log):
  curl -s -XPOST localhost:8082/api/v1/alerts -d '{{"service_id": "checkout", "message": "down"}}'

Kill the owner (-9), and watch another node take its shards within the 5 s lease
and page level 2 when the 30 s ack timeout is due:
  kill -9 <pid of the owner, below>
  tail -f {logs}/node-*.log

Nodes: {pids}
Ctrl-C stops everything.
"""


def main() -> None:
    server = PostgresServer().start()
    nodes: list[subprocess.Popen[bytes]] = []
    logs = server.root / "logs"
    logs.mkdir()
    try:
        dsn = server.dsn(server.create_database())
        for i in (1, 2, 3):
            with (logs / f"node-{i}.log").open("ab") as out:
                nodes.append(subprocess.Popen(
                    [sys.executable, "-m", "pager_actors", "run", "--config",
                     str(HERE / f"node-{i}.toml")], cwd=ROOT, stdout=out,
                    stderr=subprocess.STDOUT, env={**os.environ, "PAGER_STATE": dsn}))
        for i in (1, 2, 3):
            _wait_ready(f"http://127.0.0.1:808{i}")
        pids = ", ".join(f"node-{i} pid {p.pid} (port 808{i})" for i, p in enumerate(nodes, 1))
        print(TRY.format(logs=logs, pids=pids), flush=True)
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
        server.stop()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready: see its log")


if __name__ == "__main__":
    main()
