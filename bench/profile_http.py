"""Where the daemon's POST /api/v1/alerts time goes: CPU per request, by thread.

Serves one of three apps in a subprocess, warms it, loads it with bench_http's wrk
script (64 connections, 10 s) and reads each thread's CPU time from /proc before and
after (Linux only):

- `daemon`: the daemon, as bench_http runs it (SQLite, 1,000 services);
- `bare`: bench_http's bare Starlette app;
- `instant`: the daemon's HTTP app (routes, guard, payloads, views, server) over a
  Pager whose commands are committed at once: the HTTP layer without the engine.

`--py-spy ARGS` also records the server with py-spy (not a project dependency:
`pip install py-spy`), e.g. `--py-spy "--gil -r 200 -f raw"`; with 1,000 actor threads
py-spy samples far below the asked rate, so keep its duration short.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_http import blast, config, wait_ready, with_wrk
from pager_actors._future import CommandFuture
from pager_actors.daemon.config import load_config
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.run import GRACEFUL_SECONDS
from pager_actors.daemon.server import build_server
from pager_actors.domain import MonitoredService
from pager_actors.ports import Outcome
from tests.servers import free_port


class InstantPager:
    """Every command committed before it is returned: no actor, no store."""

    stopping = False

    def alert(self, service_id: str, message: str, key: str) -> CommandFuture[Any]:
        return self._done(service_id, "incident_opened")

    def healthy(self, service_id: str) -> CommandFuture[Any]:
        return self._done(service_id, "resolved")

    acknowledge = heartbeat = healthy

    def store_problem(self) -> None:
        return None

    @staticmethod
    def _done(service_id: str, event: str) -> CommandFuture[Any]:
        future: CommandFuture[Any] = CommandFuture()
        future.set(Outcome(service_id, 1, event, None, MonitoredService(service_id), ()))
        return future


def serve_instant(path: str) -> None:
    settings, pager = load_config(path), InstantPager()
    app = create_app(pager, settings, Metrics(pager, lambda: (0.0, 0.0)))  # type: ignore[arg-type]
    build_server(app, config=settings.server, graceful_shutdown=GRACEFUL_SECONDS).run()


def cpu_by_thread(pid: int) -> dict[str, float]:
    """Seconds of CPU (user + system, and system alone) of the main thread and the others."""
    tick, found = os.sysconf("SC_CLK_TCK"), collections.defaultdict[str, float](float)
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        who = "main thread" if int(task) == pid else "other threads"
        found[who] += (int(fields[11]) + int(fields[12])) / tick
        found[f"{who}, system"] += int(fields[12]) / tick
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=["daemon", "bare", "instant"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--py-spy", default=None, metavar="ARGS")
    parser.add_argument("--serve-instant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_instant:
        serve_instant(args.serve_instant)
        return
    with tempfile.TemporaryDirectory() as name:
        tmp, port = Path(name), free_port()
        (tmp / "pager.toml").write_text(config(port, tmp / "http.db", 1000))
        command = {"daemon": ["-m", "pager_actors", "run", "--config", str(tmp / "pager.toml")],
                   "bare": [str(Path(__file__).with_name("bench_http.py")), "--serve-bare",
                            str(port)],
                   "instant": [__file__, "daemon", "--serve-instant", str(tmp / "pager.toml")],
                   }[args.app]
        server = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL,
                                  env={**os.environ, "PAGER_LOG_LEVEL": "warning"})
        url, spy = f"http://127.0.0.1:{port}", None
        try:
            wait_ready(url, server)
            ids = range(1000)
            asyncio.run(blast(url, [("/api/v1/alerts", {"service_id": f"svc-{i}",
                                                         "message": "warm"}) for i in ids], 8))
            asyncio.run(blast(url, [(f"/api/v1/services/svc-{i}/healthy", None)
                                    for i in ids], 8))
            if args.py_spy is not None:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-d",
                                        str(max(args.seconds - 2, 1)), "--threads",
                                        "--nonblocking", "-o", "profile.txt",
                                        *shlex.split(args.py_spy)])
            before, started = cpu_by_thread(server.pid), time.monotonic()
            figures = with_wrk(url, 1000, args.seconds, 64, tmp)
            after = cpu_by_thread(server.pid)
            spent = {who: after[who] - before.get(who, 0.0) for who in after}
            wall = time.monotonic() - started
        finally:
            if spy is not None:
                spy.wait(timeout=120)
            server.terminate()
            server.wait(timeout=20)
    requests = figures["http_requests"]
    total = spent["main thread"] + spent["other threads"]
    print(f"{args.app}: {figures['http_commands_per_s']:,} requests/s, p50 "
          f"{figures['http_p50_ms']} ms, p99 {figures['http_p99_ms']} ms; "
          f"{total / wall:.2f} cores")
    for who in ("main thread", "main thread, system", "other threads", "other threads, system"):
        print(f"  {who:<22} {1e6 * spent[who] / requests:6.0f} us CPU per request")
    print(f"  {'all':<22} {1e6 * total / requests:6.0f} us CPU per request")


if __name__ == "__main__":
    main()
