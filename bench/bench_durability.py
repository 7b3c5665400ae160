"""Durability and scale benchmark. Prints a table, then one JSON line. Run with `make bench`.

1. Warm alerts/s on SQLite (group commit, synchronous=FULL) next to in-memory,
   same process, rounds alternating.
2. Time for `Pager.start` to recover 10,000 open incidents from SQLite: every
   timeout re-armed through the timer port.
3. Threads and RSS while 10,000 of 100,000 monitored services alert at once,
   with at most 2,000 live service actors.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.memory import (
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.sqlite import SqliteStore
from bench.bench_engine import in_threads, policies, report
from pager_actors import Pager
from pager_actors.domain import MonitoredService, RaiseAlert, decide
from pager_actors.ports import Transition


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Subject:
    def __init__(self, count: int, store=None) -> None:
        self.mail, self.sms = RecordingMailSender(), RecordingSmsSender()
        self.pager = Pager.start(policies=policies(count), mail=self.mail, sms=self.sms,
                                 timer=ManualTimer(), store=store)

    def round(self, services: list[str], callers: int) -> float:
        in_threads(callers, services, self.pager.healthy)
        self.pager.flush(timeout=120)
        started = time.perf_counter()
        in_threads(callers, services, lambda s: self.pager.alert(s, "page"))
        self.pager.flush(timeout=120)
        return len(services) / (time.perf_counter() - started)


def durable_vs_memory(count: int, rounds: int, callers: int, tmp: Path) -> tuple[float, float]:
    services = [f"svc-{i}" for i in range(count)]
    store = SqliteStore(tmp / "throughput.db")
    memory, durable = Subject(count), Subject(count, store)
    for subject in (memory, durable):  # cold round: actors created
        in_threads(callers, services, lambda s, p=subject.pager: p.alert(s, "cold"))
        subject.pager.flush(timeout=120)
    mem_rates, sql_rates = [], []
    for _ in range(rounds):
        mem_rates.append(memory.round(services, callers))
        sql_rates.append(durable.round(services, callers))
    memory.pager.stop()
    durable.pager.stop()
    store.close()
    return statistics.median(mem_rates), statistics.median(sql_rates)


def recovery_seconds(count: int, tmp: Path) -> float:
    """Seconds from Pager.start to every open incident's timeout re-armed."""
    repo = policies(count)
    path = tmp / "recovery.db"
    store = SqliteStore(path)
    now = datetime.now(UTC)
    batch = []
    for i in range(count):
        service_id = f"svc-{i}"
        decision = decide(MonitoredService(service_id), RaiseAlert("down"), repo.get(service_id),
                          now=now, ack_timeout=timedelta(minutes=15))
        batch.append(Transition(0, decision.service, ()))
        if len(batch) == 1000:
            store.commit(batch)
            batch = []
    store.commit(batch)
    store.close()
    timer = ManualTimer()
    started = time.perf_counter()
    store = SqliteStore(path)
    pager = Pager.start(policies=repo, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=timer, store=store)
    pager.flush(timeout=120)
    seconds = time.perf_counter() - started
    assert len(timer.armed) == count, len(timer.armed)
    pager.stop()
    store.close()
    return seconds


def storm(total: int, alerting: int, callers: int, max_live: int) -> dict[str, float]:
    """Threads and memory while `alerting` of `total` services alert."""
    base_threads, base_rss = threading.active_count(), rss_mib()
    repo = policies(total)
    pager = Pager.start(policies=repo, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), passivate_after=timedelta(seconds=30),
                        max_live_services=max_live)
    peak = [threading.active_count()]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], threading.active_count())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    services = [f"svc-{i}" for i in range(0, total, total // alerting)][:alerting]
    started = time.perf_counter()
    in_threads(callers, services, lambda s: pager.alert(s, "storm"))
    pager.flush(timeout=300)
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    figures = {
        "storm_services": total, "storm_alerting": alerting, "storm_max_live": max_live,
        "storm_seconds": round(seconds, 2),
        "storm_alerts_per_s": round(alerting / seconds),
        "storm_threads_before": base_threads,
        "storm_threads_peak": peak[0],
        "storm_rss_before_mib": round(base_rss, 1),
        "storm_rss_after_mib": round(rss_mib(), 1),
        "storm_incidents_opened": pager.stats().get("opened", 0),
    }
    pager.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--recover", type=int, default=10_000)
    parser.add_argument("--storm-total", type=int, default=100_000)
    parser.add_argument("--storm-alerting", type=int, default=10_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("pykka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        memory, durable = durable_vs_memory(args.services, args.rounds, args.callers, Path(tmp))
        recovery = recovery_seconds(args.recover, Path(tmp))
    figures: dict[str, float] = {
        "memory_alerts_per_s": round(memory), "sqlite_alerts_per_s": round(durable),
        "sqlite_vs_memory": round(durable / memory, 3),
        "recover_incidents": args.recover, "recover_seconds": round(recovery, 3),
    }
    figures.update(storm(args.storm_total, args.storm_alerting, args.callers, 2000))
    rows = [
        ("warm alerts/s, in-memory store", f"{memory:,.0f}"),
        ("warm alerts/s, SQLite (group commit, FULL sync)", f"{durable:,.0f}"),
        ("SQLite / in-memory", f"{durable / memory:.3f}x"),
        (f"recover {args.recover:,} open incidents", f"{recovery:.3f} s"),
        (f"storm: {args.storm_alerting:,} of {args.storm_total:,} services alert",
         f"{figures['storm_seconds']} s, {figures['storm_alerts_per_s']:,} alerts/s"),
        ("storm: threads before / peak", f"{figures['storm_threads_before']} / "
                                         f"{figures['storm_threads_peak']}"),
        ("storm: RSS before / after", f"{figures['storm_rss_before_mib']} / "
                                      f"{figures['storm_rss_after_mib']} MiB"),
    ]
    report(rows, figures)


if __name__ == "__main__":
    main()
