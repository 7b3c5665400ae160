"""HTTP ingest benchmark: alerts/s accepted by the daemon's POST /api/v1/alerts, on loopback.

Starts the daemon as a subprocess (SQLite store, log senders, PAGER_LOG_LEVEL=warning).
The load generator is `wrk` (Debian package `wrk`) when installed: a Lua script sends,
for each of 1,000 services in turn, POST /api/v1/alerts then POST .../healthy, so every
alert opens an incident, pages two targets and arms a timer; it stops itself after a
fixed number of requests. Without wrk, a Python generator (httpx) does the same with
fewer requests in flight; it saturates before the daemon does, so its figure is a floor.
For comparison, the same alerts run in process against a Pager on SQLite.

The reference for the HTTP stack is a bare Starlette app (`bare_app`) that parses the
same JSON body and answers 202 to both requests, served by `build_server` (the daemon's
uvicorn settings and protocol) in its own process and loaded by the same wrk script in
the same run: `daemon / bare` is what the daemon's own work costs (issue 12 wants at
least 0.6x, with p99 at most 50 ms at 64 connections).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import ManualTimer
from adapters.sqlite import SqliteStore
from bench.bench_engine import in_threads, policies, report
from pager_actors import Pager
from pager_actors.daemon.config import ServerConfig
from pager_actors.daemon.run import GRACEFUL_SECONDS
from pager_actors.daemon.server import build_server
from tests.servers import free_port


def config(port: int, state: Path, services: int) -> str:
    lines = [f'[server]\nlisten = "127.0.0.1:{port}"\n[pager]\nack_timeout = "1h"\n'
             f'state = "{state}"\n[mail]\nkind = "log"\nmax_per_contact = 0\n'
             '[sms]\nkind = "log"\nmax_per_contact = 0\n']  # ingest, not throttling
    for i in range(services):
        lines.append(f'[[services]]\nid = "svc-{i}"\nlevels = [["mailto:oncall{i}@example.com",'
                     f' "sms:+3360{i:07d}"], ["sms:+3361{i:07d}"]]\n')
    return "".join(lines)


async def blast(url: str, paths_bodies: list[tuple[str, dict[str, str] | None]],
                concurrency: int) -> list[float]:
    """Send every request with `concurrency` in flight; return latencies (s) of 202s."""
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[str, dict[str, str] | None]] = asyncio.Queue()
    for item in paths_bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while not queue.empty():
                path, body = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(path, json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


WRK_SCRIPT = """
-- Alternate alert / healthy per service, so every alert is a real one; stop after `limit`.
local services, limit, sent = %(services)d, %(limit)d, 0
local alert = 'POST'
request = function()
  sent = sent + 1
  if sent > limit then wrk.thread:stop() end
  local i = math.floor((sent - 1) / 2) %% services
  if sent %% 2 == 1 then
    return wrk.format('POST', '/api/v1/alerts', {['Content-Type'] = 'application/json'},
                      '{"service_id": "svc-' .. i .. '", "message": "load"}')
  end
  return wrk.format('POST', '/api/v1/services/svc-' .. i .. '/healthy')
end
response = function(status, headers, body)
  if status ~= 202 then print('unexpected status ' .. status) end
end
"""


def with_wrk(url: str, services: int, seconds: int, concurrency: int, tmp: Path
             ) -> dict[str, float]:
    """Run wrk (2 threads) for `seconds`, each thread capped at 200,000 requests."""
    script = tmp / "alerts.lua"
    script.write_text(WRK_SCRIPT % {"services": services, "limit": 200_000})
    done = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                           "-s", str(script), url], capture_output=True, text=True,
                          timeout=seconds + 60, check=True)
    out = done.stdout
    if "unexpected status" in out:
        raise RuntimeError(out)
    rate = float(out.split("Requests/sec:")[1].split()[0])

    def percentile(label: str) -> float:
        value = out.split(f" {label} ")[1].split()[0]
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = value.lstrip("0123456789.")
        return float(value[: len(value) - len(unit)]) * scale[unit]

    total = int(out.split(" requests in ")[0].split()[-1])
    return {"http_generator": "wrk", "http_requests": total,
            "http_alerts_per_s": round(rate / 2), "http_commands_per_s": round(rate),
            "http_p50_ms": percentile("50%"), "http_p99_ms": percentile("99%")}


def bare_app() -> Starlette:
    """The reference: plain Starlette that parses the alert's JSON body and answers 202."""

    async def alert(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"service_id": body["service_id"], "accepted": True},
                            status_code=202)

    async def healthy(request: Request) -> Response:
        return JSONResponse({"service_id": request.path_params["service_id"],
                             "accepted": True}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/api/v1/alerts", alert, methods=["POST"]),
        Route("/api/v1/services/{service_id}/healthy", healthy, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"])])


def serve_bare(port: int) -> None:
    """Serve `bare_app` on `port` with the daemon's server settings, until SIGTERM."""
    build_server(bare_app(), config=ServerConfig(port=port),
                 graceful_shutdown=GRACEFUL_SECONDS).run()


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{url} did not start")
        time.sleep(0.1)


def over_bare(services: int, seconds: int, concurrency: int, tmp: Path) -> dict[str, float]:
    """The same wrk load on `bare_app`, in its own process."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)],
                              stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        figures = with_wrk(url, services, seconds, concurrency, tmp)
        return {key.replace("http_", "bare_"): value for key, value in figures.items()}
    finally:
        server.terminate()
        server.wait(timeout=20)


def with_python(url: str, services: int, rounds: int) -> dict[str, float]:
    ids = [f"svc-{i}" for i in range(services)]
    alerts = [("/api/v1/alerts", {"service_id": s, "message": "load"}) for s in ids]
    heals = [(f"/api/v1/services/{s}/healthy", None) for s in ids]
    latencies, spent = [], 0.0
    for _ in range(rounds):
        asyncio.run(blast(url, heals, 8))
        started = time.perf_counter()
        latencies += asyncio.run(blast(url, alerts, 8))
        spent += time.perf_counter() - started
    latencies.sort()
    return {"http_generator": "python-httpx", "http_requests": len(latencies),
            "http_alerts_per_s": round(len(latencies) / spent),
            "http_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "http_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2)}


def over_http(services: int, rounds: int, concurrency: int, tmp: Path) -> dict[str, float]:
    port = free_port()
    path = tmp / "pager.toml"
    path.write_text(config(port, tmp / "http.db", services))
    env = {**os.environ, "PAGER_LOG_LEVEL": "warning"}
    daemon = subprocess.Popen([sys.executable, "-m", "pager_actors", "run", "--config",
                               str(path)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, daemon)
        warm = [("/api/v1/alerts", {"service_id": f"svc-{i}", "message": "warm"})
                for i in range(services)]
        asyncio.run(blast(url, warm, 8))  # every service actor created before timing
        asyncio.run(blast(url, [(f"/api/v1/services/svc-{i}/healthy", None)
                                for i in range(services)], 8))
        if shutil.which("wrk"):
            return with_wrk(url, services, rounds, concurrency, tmp)
        return with_python(url, services, rounds)
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)


def in_process(services: int, rounds: int, tmp: Path) -> float:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = SqliteStore(tmp / "inproc.db")
    pager = Pager.start(policies=policies(services), mail=LogMailSender(), sms=LogSmsSender(),
                        timer=ManualTimer(), store=store)
    ids = [f"svc-{i}" for i in range(services)]
    in_threads(4, ids, lambda s: pager.alert(s, "load"))
    pager.flush(timeout=120)
    spent = 0.0
    for _ in range(rounds):
        in_threads(4, ids, pager.healthy)
        pager.flush(timeout=120)
        started = time.perf_counter()
        in_threads(4, ids, lambda s: pager.alert(s, "load"))
        pager.flush(timeout=120)
        spent += time.perf_counter() - started
    pager.stop()
    store.close()
    return services * rounds / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10,
                        help="seconds of wrk load, or rounds of the Python generator")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    with tempfile.TemporaryDirectory() as tmp:
        figures = over_http(args.services, args.rounds, args.concurrency, Path(tmp))
        if figures["http_generator"] == "wrk":
            figures.update(over_bare(args.services, args.rounds, args.concurrency, Path(tmp)))
            figures["http_vs_bare"] = round(
                figures["http_commands_per_s"] / figures["bare_commands_per_s"], 3)
        local = in_process(args.services, args.rounds, Path(tmp))
    figures["in_process_alerts_per_s"] = round(local)
    figures["http_vs_in_process"] = round(figures["http_alerts_per_s"] / local, 3)
    generator = figures["http_generator"]
    rows = [
        (f"HTTP ({generator}): {figures['http_requests']:,} requests",
         f"{figures['http_alerts_per_s']:,} alerts/s"),
        ("HTTP latency p50 / p99", f"{figures['http_p50_ms']} / {figures['http_p99_ms']} ms"),
    ]
    if "bare_requests" in figures:
        rows += [
            (f"daemon, {args.concurrency} connections",
             f"{figures['http_commands_per_s']:,} requests/s, p50 {figures['http_p50_ms']} ms,"
             f" p99 {figures['http_p99_ms']} ms"),
            (f"bare Starlette, {args.concurrency} connections",
             f"{figures['bare_commands_per_s']:,} requests/s, p50 {figures['bare_p50_ms']} ms,"
             f" p99 {figures['bare_p99_ms']} ms"),
            ("daemon / bare", f"{figures['http_vs_bare']}x"),
        ]
    rows += [
        ("in process (SQLite, 4 threads)", f"{figures['in_process_alerts_per_s']:,} alerts/s"),
        ("HTTP / in process", f"{figures['http_vs_in_process']}x"),
    ]
    report(rows, figures)


if __name__ == "__main__":
    main()
