"""The daemon's composition root: config -> adapters -> Pager -> HTTP server, and back down.

Start order: store (refuses a corrupt file before anything else starts),
senders, timer, Pager (recovers), HTTP. SIGTERM/SIGINT: uvicorn stops
accepting and finishes in-flight requests, then the pager drains and stops
its actors, then the timer and the store close. Exit code 0.
"""

from __future__ import annotations

import logging
import signal
import ssl
import sys

import structlog

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import InMemoryPolicyRepository
from adapters.smtp import SmtpMailSender
from adapters.sqlite import SqliteStore
from adapters.timer import ThreadedTimer
from adapters.twilio import TwilioSmsSender
from pager_actors._adapter_actors import RetryPolicy
from pager_actors._pager import Pager
from pager_actors.daemon.config import Config
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.server import build_server
from pager_actors.ports import MailSender, SmsSender, StoreError

log = structlog.get_logger("pager_actors.daemon")

GRACEFUL_SECONDS = 4


def mail_sender(config: Config) -> MailSender:
    mail = config.mail
    if mail.kind == "log":
        return LogMailSender()
    tls = ssl.create_default_context(cafile=str(mail.ca_file) if mail.ca_file else None)
    return SmtpMailSender(mail.host, mail.port, mail.sender, starttls=mail.starttls,
                          username=mail.username, password=mail.password,
                          timeout=mail.timeout.total_seconds(), tls_context=tls)


def sms_sender(config: Config) -> SmsSender:
    sms = config.sms
    if sms.kind == "log":
        return LogSmsSender()
    assert sms.account_sid and sms.auth_token and sms.from_number
    return TwilioSmsSender(sms.base_url, sms.account_sid, sms.auth_token, sms.from_number,
                           timeout=sms.timeout.total_seconds())


def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code."""
    try:
        store = SqliteStore(config.pager.state)
    except StoreError as error:
        log.critical("store_unusable", error=str(error))
        return 2
    timer = ThreadedTimer()
    pager = Pager.start(
        policies=InMemoryPolicyRepository(config.services), mail=mail_sender(config),
        sms=sms_sender(config), timer=timer, ack_timeout=config.pager.ack_timeout, store=store,
        passivate_after=config.pager.passivate_after,
        max_live_services=config.pager.max_live_services,
        retry=RetryPolicy(attempts=config.pager.delivery_attempts,
                          backoff=config.pager.retry_backoff.total_seconds()),
        # Requests all arrive on the event loop's thread: per-thread backpressure would
        # block the loop. uvicorn's limit_concurrency bounds the load instead (503 past it).
        max_in_flight=0,
    )
    metrics = Metrics(pager, lambda: (timer.last_lag, timer.max_lag))
    server = build_server(create_app(pager, config, metrics), config=config.server,
                          graceful_shutdown=GRACEFUL_SECONDS)
    log.info("daemon_listening", host=config.server.host, port=config.server.port,
             services=len(config.services), state=str(config.pager.state),
             mail=config.mail.kind, sms=config.sms.kind)
    # uvicorn handles SIGTERM/SIGINT while serving, then raises the signal again for the
    # handler that was there before: make that one a no-op, so the shutdown below runs
    # and the process exits 0.
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: received.append(number))
    try:
        server.run()
    finally:
        log.info("daemon_stopping")
        pager.stop(timeout=5)
        timer.close()
        store.close()
        log.info("daemon_stopped")
    return 0 if server.started else 1


def configure_stdlib_logging() -> None:
    """uvicorn logs through the standard library: keep its warnings, on stderr."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
