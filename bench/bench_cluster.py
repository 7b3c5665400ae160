"""Cluster benchmark: daemons on one PostgreSQL 15 (started here, as the tests start it).

Three figures, on loopback, log senders (no gateway), lease TTL 3 s:
- failover: `--kills` times, kill -9 the node owning a service, then send a command for
  that service to a survivor until one is answered 202; the time from the kill to
  that 202 (target: at most lease_ttl + 2 s). The killed node is started again
  before the next round.
- alerts/s through one node, then through three (requests spread over the nodes): each
  alert commits and pages on its owner, so through three nodes two in three are
  forwarded. On a 2-core machine three daemons and PostgreSQL share the cores:
  recorded, not judged.
- forwarded-command latency: alerts sent one at a time to a node that does not own
  their service, against alerts sent to the owner, p50 and p99.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_engine import report
from bench.bench_http import blast
from pager_actors.cluster import SHARDS, shard_of
from tests.pg import PostgresServer
from tests.servers import free_port

TTL = 3.0


class Node:
    def __init__(self, index: int, dsn: str, services: int, tmp: Path) -> None:
        self.index, self.port = index, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lines = [f'[server]\nlisten = "127.0.0.1:{self.port}"\n[pager]\nack_timeout = "1h"\n'
                 '[mail]\nkind = "log"\nmax_per_contact = 0\n'
                 '[sms]\nkind = "log"\nmax_per_contact = 0\n'
                 f'[cluster]\nnode = "node-{index}"\nlease_ttl = "{TTL:g}s"\n']
        lines += [f'[[services]]\nid = "svc-{i}"\nlevels = [["mailto:oncall{i}@example.com", '
                  f'"sms:+3360{i:07d}"], ["sms:+3361{i:07d}"]]\n' for i in range(services)]
        self.config = tmp / f"node-{index}.toml"
        self.config.write_text("".join(lines))
        self.env = {**os.environ, "PAGER_LOG_LEVEL": "warning", "PAGER_STATE": dsn}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.proc = subprocess.Popen([sys.executable, "-m", "pager_actors", "run", "--config",
                                      str(self.config)], env=self.env,
                                     stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node-{self.index} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def holders(dsn: str) -> dict[int, str | None]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return dict(db.execute("SELECT shard, CASE WHEN expires_at > now() THEN node END "
                               "FROM leases").fetchall())


def settled(dsn: str, nodes: list[Node], timeout: float = 60) -> None:
    alive = {f"node-{n.index}" for n in nodes if n.proc is not None and n.proc.poll() is None}
    share = -(-SHARDS // len(alive))
    deadline = time.monotonic() + timeout
    while True:
        found = list(holders(dsn).values())
        if set(found) == alive and all(found.count(node) <= share for node in alive):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the shards did not settle on {sorted(alive)}")
        time.sleep(0.1)


def owner(dsn: str, nodes: list[Node], service: str) -> Node:
    node = holders(dsn)[shard_of(service)]
    assert node is not None
    return nodes[int(node.rsplit("-", 1)[1])]


def failovers(dsn: str, nodes: list[Node], kills: int) -> list[float]:
    """Seconds from each kill -9 to the first command a survivor answered 202."""
    times = []
    for round_ in range(kills):
        service = f"svc-{round_}"
        victim = owner(dsn, nodes, service)
        survivor = next(n for n in nodes if n is not victim)
        killed = time.perf_counter()
        victim.kill()
        while True:
            try:
                reply = httpx.post(f"{survivor.url}/api/v1/alerts", timeout=15, json={
                    "service_id": service, "message": "failover", "key": f"k{round_}"})
                if reply.status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        times.append(time.perf_counter() - killed)
        victim.start()
        settled(dsn, nodes)
    return times


def throughput(nodes: list[Node], services: int, rounds: int) -> float:
    """Alerts/s (each after a healthy event) with requests spread over `nodes`."""
    spent, sent = 0.0, 0
    for _ in range(rounds):
        for phase in ("healthy", "alerts"):
            per_node: dict[str, list[tuple[str, dict[str, str] | None]]] = {
                n.url: [] for n in nodes}
            for i in range(services):
                url = nodes[i % len(nodes)].url
                per_node[url].append(
                    (f"/api/v1/services/svc-{i}/healthy", None) if phase == "healthy"
                    else ("/api/v1/alerts", {"service_id": f"svc-{i}", "message": "load"}))

            async def run(work: dict[str, list[tuple[str, dict[str, str] | None]]]) -> None:
                await asyncio.gather(*(blast(url, items, 16 // len(nodes) or 1)
                                       for url, items in work.items()))

            started = time.perf_counter()
            asyncio.run(run(per_node))
            if phase == "alerts":
                spent += time.perf_counter() - started
                sent += services
    return sent / spent


def latencies(dsn: str, nodes: list[Node], services: int, count: int
              ) -> tuple[list[float], list[float]]:
    """Alerts one at a time: to the service's owner, and to another node (forwarded)."""
    direct: list[float] = []
    forwarded: list[float] = []
    with httpx.Client(timeout=15) as client:
        for i in range(count):
            service = f"svc-{i % services}"
            own = owner(dsn, nodes, service)
            other = next(n for n in nodes if n is not own)
            for node, into in ((own, direct), (other, forwarded)):
                client.post(f"{node.url}/api/v1/services/{service}/healthy")
                started = time.perf_counter()
                reply = client.post(f"{node.url}/api/v1/alerts",
                                    json={"service_id": service, "message": "latency"})
                into.append(time.perf_counter() - started)
                if reply.status_code != 202:
                    raise RuntimeError(f"{reply.status_code} {reply.text}")
    return direct, forwarded


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--latency-samples", type=int, default=300)
    args = parser.parse_args()
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dsn = server.dsn(server.create_database())
            nodes = [Node(i, dsn, args.services, Path(tmp)) for i in range(3)]
            try:
                nodes[0].start()
                settled(dsn, nodes[:1])
                one = throughput(nodes[:1], args.services, args.rounds)
                for node in nodes[1:]:
                    node.start()
                settled(dsn, nodes)
                three = throughput(nodes, args.services, args.rounds)
                direct, forwarded = latencies(dsn, nodes, args.services,
                                              args.latency_samples)
                failover = failovers(dsn, nodes, args.kills)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        server.stop()
    figures = {
        "failover_p50_s": round(statistics.median(failover), 2),
        "failover_max_s": round(max(failover), 2), "lease_ttl_s": TTL,
        "alerts_per_s_1_node": round(one), "alerts_per_s_3_nodes": round(three),
        "direct_p50_ms": round(p(direct, 0.5), 1), "direct_p99_ms": round(p(direct, 0.99), 1),
        "forwarded_p50_ms": round(p(forwarded, 0.5), 1),
        "forwarded_p99_ms": round(p(forwarded, 0.99), 1),
    }
    report([
        (f"failover over {args.kills} kills -9 (TTL {TTL:g} s)",
         f"p50 {figures['failover_p50_s']} s, max {figures['failover_max_s']} s "
         f"(target <= {TTL + 2:g} s)"),
        ("alerts/s through 1 node", f"{figures['alerts_per_s_1_node']:,}"),
        ("alerts/s through 3 nodes", f"{figures['alerts_per_s_3_nodes']:,} "
                                     "(2 cores for 3 daemons and PostgreSQL: not judged)"),
        ("alert latency at the owner", f"p50 {figures['direct_p50_ms']} ms, "
                                       f"p99 {figures['direct_p99_ms']} ms"),
        ("alert latency forwarded", f"p50 {figures['forwarded_p50_ms']} ms, "
                                    f"p99 {figures['forwarded_p99_ms']} ms"),
    ], figures)


if __name__ == "__main__":
    main()
