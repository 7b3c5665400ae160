"""Slow-client benchmark: an authenticated alert's latency while thousands of half-sent requests
are open, against the same with none, on loopback.

Starts the daemon as a subprocess (SQLite store, log senders, a token, the default
request_timeout of 10 s, PAGER_LOG_LEVEL=warning). For each load (no idle connection,
then 2,000, then 4,100 half-sent requests, the count in the issue) it opens that many
connections, half of them stopped in the middle of their head and half after 6 bytes of a
100-byte body, then sends 50 sequential authenticated alerts, each on a new connection and
each for a service without an incident (so each opens one, commits and pages). It checks
the half-sent connections were all still open when the alerts were done, then waits until
the daemon has closed every one of them (at most 30 s) and records how long after its
first byte each was closed and what it was told. Also the daemon's resident memory
after each load's alerts. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_engine import report
from tests.servers import free_port

TOKEN = "bench-token"
HEAD = b"POST /api/v1/alerts HTTP/1.1\r\nHost: bench\r\nContent-Le"
BODY = (f"POST /api/v1/alerts HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        '{"service_id": ').encode()


def config(port: int, state: Path, services: int) -> str:
    lines = [f'[server]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
             f'[pager]\nack_timeout = "1h"\nstate = "{state}"\n'
             '[mail]\nkind = "log"\nmax_per_contact = 0\n'
             '[sms]\nkind = "log"\nmax_per_contact = 0\n']  # requests, not throttling
    for i in range(services):
        lines.append(f'[[services]]\nid = "svc-{i}"\nlevels = [["mailto:oncall{i}@example.com",'
                     f' "sms:+3360{i:07d}"], ["sms:+3361{i:07d}"]]\n')
    return "".join(lines)


def alert(port: int, service_id: str) -> float:
    """One authenticated alert on a new connection; seconds until its 202 was read."""
    body = json.dumps({"service_id": service_id, "message": "bench"})
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/api/v1/alerts", body=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        text = answer.read()
    finally:
        connection.close()
    if answer.status != 202:
        raise RuntimeError(f"alert for {service_id}: {answer.status} {text!r}")
    return time.perf_counter() - started


def half_sent(port: int, count: int) -> list[tuple[socket.socket, float]]:
    """`count` connections, each with a half-sent request; each with the time of its first byte."""
    held = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(BODY if i % 2 else HEAD)
        held.append((sock, time.monotonic()))
    return held


def nothing_received(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False


def wait_closed(held: list[tuple[socket.socket, float]], within: float
                ) -> tuple[list[float], int, int]:
    """Wait until the daemon closes each connection: seconds after its first byte, how many
    were answered 408, how many were still open at the end."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    first_byte = dict(held)
    for sock, _ in held:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, data=sock)
        received[sock] = b""
    closed_after: list[float] = []
    deadline = time.monotonic() + within
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.data
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[sock] += chunk
                continue
            closed_after.append(time.monotonic() - first_byte[sock])
            selector.unregister(sock)
    still_open = len(selector.get_map())
    selector.close()
    answered_408 = sum(data.startswith(b"HTTP/1.1 408") for data in received.values())
    return closed_after, answered_408, still_open


def raise_own_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"this process may open {hard} files; the benchmark needs {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measure(port: int, pid: int, loads: list[int], alerts: int) -> dict[str, object]:
    figures: dict[str, object] = {}
    for n, load in enumerate(loads):
        opened = time.monotonic()
        held = half_sent(port, load)
        opening = time.monotonic() - opened
        in_order = [alert(port, f"svc-{n * alerts + i}") for i in range(alerts)]
        latencies = sorted(in_order)
        figures[f"first_ms_{load}"] = round(in_order[0] * 1000, 2)
        open_after = sum(nothing_received(sock) for sock, _ in held)
        figures[f"rss_mib_{load}"] = rss_mib(pid)
        figures[f"p50_ms_{load}"] = round(statistics.median(latencies) * 1000, 2)
        figures[f"p99_ms_{load}"] = round(latencies[max(0, int(len(latencies) * 0.99) - 1)]
                                          * 1000, 2)
        figures[f"max_ms_{load}"] = round(latencies[-1] * 1000, 2)
        if load:
            closed_after, answered, still_open = wait_closed(held, within=30)
            figures[f"opening_s_{load}"] = round(opening, 2)
            figures[f"open_during_alerts_{load}"] = open_after
            figures[f"closed_after_min_s_{load}"] = round(min(closed_after), 2)
            figures[f"closed_after_max_s_{load}"] = round(max(closed_after), 2)
            figures[f"answered_408_{load}"] = answered
            figures[f"open_after_30s_{load}"] = still_open
        for sock, _ in held:
            sock.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 2000, 4100])
    args = parser.parse_args()
    raise_own_file_limit(max(args.loads) + 1000)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = Path(tmp) / "pager.toml"
        path.write_text(config(port, Path(tmp) / "pager.db", args.alerts * len(args.loads) + 1))
        env = {**os.environ, "PAGER_LOG_LEVEL": "warning"}
        daemon = subprocess.Popen([sys.executable, "-m", "pager_actors", "run", "--config",
                                   str(path)], env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    alert(port, f"svc-{args.alerts * len(args.loads)}")  # also warms the path
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the daemon did not start") from None
                    time.sleep(0.1)
            figures = measure(port, daemon.pid, args.loads, args.alerts)
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)

    loads = args.loads
    def row(key: str, unit: str = "") -> str:
        return " / ".join(f"{figures[f'{key}_{load}']:,}" for load in loads) + unit

    busy = [load for load in loads if load]
    def busy_row(key: str, unit: str = "") -> str:
        return " / ".join(f"{figures[f'{key}_{load}']:,}" for load in busy) + unit

    rows = [
        ("half-sent requests open", " / ".join(f"{load:,}" for load in loads)),
        (f"alert latency p50 ({args.alerts} sequential)", row("p50_ms", " ms")),
        ("alert latency p99", row("p99_ms", " ms")),
        ("alert latency max", row("max_ms", " ms")),
        ("the first alert (right behind the connections)", row("first_ms", " ms")),
        ("daemon RSS after the alerts", row("rss_mib", " MiB")),
        ("half-sent: seconds to open them", busy_row("opening_s", " s")),
        ("half-sent: still open after the alerts", busy_row("open_during_alerts")),
        ("half-sent: closed after (first one)", busy_row("closed_after_min_s", " s")),
        ("half-sent: closed after (last one)", busy_row("closed_after_max_s", " s")),
        ("half-sent: answered 408", busy_row("answered_408")),
        ("half-sent: open after 30 s", busy_row("open_after_30s")),
    ]
    report(rows, figures)


if __name__ == "__main__":
    main()
