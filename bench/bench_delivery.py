"""Delivery benchmark: time-to-page against a slow SMTP relay and SMS gateway, on loopback.

The daemon runs as a subprocess (SQLite, the real SMTP and Twilio senders, [mail] and
[sms] max_concurrency as given, PAGER_LOG_LEVEL=warning) with 1,000 services, each
paging one mail address and one phone number. An SMTP server (aiosmtpd) and a
Twilio-shaped gateway run in this process and take 50 ms per message.

1. Burst: 1,000 alerts posted with 8 requests in flight (this Python client slows
   down past that; see bench_http.py). A page's time-to-page runs
   from its alert's 202 (as this client saw it) to the server accepting the message.
   Also: the time from the last 202 to the last page (target: 15 s at most).
2. Hung number: a fresh daemon; the gateway holds every request to one number (its
   service alerts first), then 100 other services alert one every 20 ms. Their SMS
   time-to-page shows the delay a hung recipient causes others (target: 1 s at most).

Bounded: fixed counts, every wait has a deadline. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_engine import report
from tests.e2e.daemon import Daemon, wait_for
from tests.servers import SmsGateway, SmtpServer, free_port

GATEWAY_DELAY = 0.05  # seconds per message, at both servers
PACE = 0.02  # seconds between the alerts of the hung-number scenario


def mail_of(i: int) -> str:
    return f"oncall{i}@example.com"


def number_of(i: int) -> str:
    return f"+3360{i:07d}"


def config(port: int, state: Path, smtp: SmtpServer, sms: SmsGateway, services: int,
           concurrency: int) -> str:
    lines = [f"""
[server]
listen = "127.0.0.1:{port}"

[pager]
ack_timeout = "1h"
state = "{state}"

[mail]
kind = "smtp"
host = "127.0.0.1"
port = {smtp.port}
sender = "pager@example.com"
max_concurrency = {concurrency}

[sms]
kind = "twilio"
base_url = "{sms.base_url}"
account_sid = "{sms.account_sid}"
auth_token = "{sms.auth_token}"
from = "+15550000000"
timeout = "60s"
max_concurrency = {concurrency}
"""]
    for i in range(services):
        lines.append(f'[[services]]\nid = "svc-{i}"\n'
                     f'levels = [["mailto:{mail_of(i)}", "sms:{number_of(i)}"]]\n')
    return "".join(lines)


def start_daemon(tmp: Path, name: str, smtp: SmtpServer, sms: SmsGateway, services: int,
                 concurrency: int) -> Daemon:
    path = tmp / f"{name}.toml"
    path.write_text(config(free_port(), tmp / f"{name}.db", smtp, sms, services, concurrency))
    return Daemon(path, tmp / f"{name}.log", env={"PAGER_LOG_LEVEL": "warning"}).start()


async def post_alerts(url: str, services: list[int], concurrency: int) -> dict[int, float]:
    """POST an alert for each service with `concurrency` in flight; when each 202 came."""
    accepted: dict[int, float] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in services:
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                response = await client.post("/api/v1/alerts",
                                             json={"service_id": f"svc-{i}", "message": "down"})
                if response.status_code != 202:
                    raise RuntimeError(f"svc-{i}: {response.status_code} {response.text}")
                accepted[i] = time.perf_counter()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return accepted


def post_alerts_elsewhere(url: str, services: list[int], concurrency: int) -> dict[int, float]:
    """post_alerts in a process of its own, so the client and the servers here do not share
    a GIL. perf_counter() is CLOCK_MONOTONIC on Linux: the same clock in every process."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_post_alerts, (url, services, concurrency))


def _post_alerts(url: str, services: list[int], concurrency: int) -> dict[int, float]:
    return asyncio.run(post_alerts(url, services, concurrency))


def post_paced(url: str, services: list[int]) -> dict[int, float]:
    """One alert every PACE seconds, each waiting for its 202."""
    accepted: dict[int, float] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        due = time.perf_counter()
        for i in services:
            response = client.post("/api/v1/alerts",
                                   json={"service_id": f"svc-{i}", "message": "down"})
            if response.status_code != 202:
                raise RuntimeError(f"svc-{i}: {response.status_code} {response.text}")
            accepted[i] = time.perf_counter()
            due += PACE
            time.sleep(max(due - time.perf_counter(), 0))
    return accepted


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms."""
    ordered = sorted(seconds)
    p99 = ordered[max(int(len(ordered) * 0.99) - 1, 0)]
    return (round(statistics.median(ordered) * 1000), round(p99 * 1000),
            round(ordered[-1] * 1000))


def burst(tmp: Path, services: int, concurrency: int, in_flight: int) -> dict[str, float]:
    with SmtpServer(delay=GATEWAY_DELAY) as smtp, \
            SmsGateway(account_sid="AC42", auth_token="tok", delay=GATEWAY_DELAY) as sms:
        daemon = start_daemon(tmp, "burst", smtp, sms, services, concurrency)
        try:
            started = time.perf_counter()
            accepted = post_alerts_elsewhere(daemon.url, list(range(services)), in_flight)
            wait_for(lambda: len(smtp.received) >= services and len(sms.messages) >= services,
                     timeout=120, what="every page of the burst")
        finally:
            daemon.terminate(timeout=20)
        mail_at = {int(m.recipients[0].removeprefix("oncall").split("@")[0]): m.at
                   for m in smtp.received}
        sms_at = {int(m.to[5:]): m.at for m in sms.messages}
        connections = smtp.connections
    mail = [mail_at[i] - accepted[i] for i in range(services)]
    text = [sms_at[i] - accepted[i] for i in range(services)]
    last_202 = max(accepted.values())
    mail_p = percentiles(mail)
    sms_p = percentiles(text)
    return {"burst_alerts": services, "concurrency": concurrency,
            "burst_202s_s": round(last_202 - started, 2),
            "mail_ttp_p50_ms": mail_p[0], "mail_ttp_p99_ms": mail_p[1],
            "mail_ttp_max_ms": mail_p[2],
            "sms_ttp_p50_ms": sms_p[0], "sms_ttp_p99_ms": sms_p[1], "sms_ttp_max_ms": sms_p[2],
            "last_page_after_last_202_s": round(
                max(*mail_at.values(), *sms_at.values()) - last_202, 2),
            "smtp_connections": connections}


def hung_number(tmp: Path, services: int, concurrency: int, others: int) -> dict[str, float]:
    with SmtpServer(delay=GATEWAY_DELAY) as smtp, \
            SmsGateway(account_sid="AC42", auth_token="tok", delay=GATEWAY_DELAY) as sms:
        sms.hang_on(number_of(0))
        daemon = start_daemon(tmp, "hung", smtp, sms, services, concurrency)
        try:
            asyncio.run(post_alerts(daemon.url, [0], 1))
            if not sms.hanging.wait(timeout=30):
                raise RuntimeError("the hung number's page never reached the gateway")
            accepted = post_paced(daemon.url, list(range(1, others + 1)))
            wanted = {number_of(i) for i in accepted}
            if not sms.wait_for(lambda sent: wanted <= {m.to for m in sent}, timeout=60):
                raise RuntimeError("pages to other numbers did not arrive")
            held = number_of(0) not in {m.to for m in sms.messages}
        finally:
            sms.release()
            daemon.terminate(timeout=20)
        sms_at = {int(m.to[5:]): m.at for m in sms.messages}
    delays = [sms_at[i] - accepted[i] for i in accepted]
    p50, p99, worst = percentiles(delays)
    return {"hung_others": others, "hung_still_held": held, "hung_others_sms_p50_ms": p50,
            "hung_others_sms_p99_ms": p99, "hung_others_sms_max_ms": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="[mail] and [sms] max_concurrency")
    parser.add_argument("--others", type=int, default=100,
                        help="alerts for other numbers while one hangs (0: skip that part)")
    parser.add_argument("--in-flight", type=int, default=8, help="HTTP requests in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = burst(Path(tmp), args.services, args.concurrency, args.in_flight)
        if args.others:
            figures.update(hung_number(Path(tmp), args.services, args.concurrency,
                                       args.others))
    rows = [
        (f"burst: {figures['burst_alerts']:,} alerts, all 202s in",
         f"{figures['burst_202s_s']} s"),
        ("mail time-to-page p50 / p99 / max",
         f"{figures['mail_ttp_p50_ms']} / {figures['mail_ttp_p99_ms']} / "
         f"{figures['mail_ttp_max_ms']} ms"),
        ("SMS time-to-page p50 / p99 / max",
         f"{figures['sms_ttp_p50_ms']} / {figures['sms_ttp_p99_ms']} / "
         f"{figures['sms_ttp_max_ms']} ms"),
        ("last page after the last 202 (target <= 15 s)",
         f"{figures['last_page_after_last_202_s']} s"),
        ("SMTP connections for the burst", f"{figures['smtp_connections']}"),
    ]
    if args.others:
        rows += [
            (f"one number hung: {figures['hung_others']} other numbers' SMS p50 / p99 / max "
             "(target <= 1 s)",
             f"{figures['hung_others_sms_p50_ms']} / {figures['hung_others_sms_p99_ms']} / "
             f"{figures['hung_others_sms_max_ms']} ms"),
            ("hung number's page still held at the end", str(figures["hung_still_held"])),
        ]
    report(rows, figures)


if __name__ == "__main__":
    main()
