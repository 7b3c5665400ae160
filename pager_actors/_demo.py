"""`python -m pager_actors demo`: one incident, escalated once, then acknowledged."""

from __future__ import annotations

import threading
from datetime import timedelta

from pager_actors._pager import Pager
from pager_actors.domain import EmailTarget, EscalationPolicy, Level, SmsTarget
from pager_actors.logs import get_logger
from pager_actors.ports import MailSender, SmsSender, Timer

log = get_logger("pager_actors.demo")

DEMO_POLICY = EscalationPolicy("checkout", [
    Level([EmailTarget("oncall@example.com"), SmsTarget("+33600000001")]),
    Level([SmsTarget("+33600000002")]),
])


class _Watch:
    """Wraps the SMS sender to learn when level 2 was paged, without polling."""

    def __init__(self, sms: SmsSender) -> None:
        self._sms = sms
        self.level_two = threading.Event()

    def send_sms(self, to: str, text: str) -> None:
        self._sms.send_sms(to, text)
        if "level 2" in text:
            self.level_two.set()


def run_demo(*, policies: object, mail: MailSender, sms: SmsSender, timer: Timer,
             ack_timeout: timedelta) -> int:
    """Play the incident; return a process exit code."""
    watch = _Watch(sms)
    pager = Pager.start(policies=policies, mail=mail, sms=watch, timer=timer,  # type: ignore[arg-type]
                        ack_timeout=ack_timeout)
    try:
        log.info("demo_step", step="1/3", action="alert", service="checkout")
        pager.alert("checkout", "p99 latency > 2s").get(timeout=5)
        log.info("demo_status", **_fields(pager))
        log.info("demo_step", step="2/3", action="wait for the ack timeout",
                 seconds=ack_timeout.total_seconds())
        if not watch.level_two.wait(timeout=ack_timeout.total_seconds() + 10):
            log.error("demo_failed", reason="level 2 was never paged")
            return 1
        log.info("demo_status", **_fields(pager))
        log.info("demo_step", step="3/3", action="acknowledge")
        pager.acknowledge("checkout").get(timeout=5)
        pager.flush(timeout=5)
        log.info("demo_status", **_fields(pager))
        return 0
    finally:
        pager.stop()


def _fields(pager: Pager) -> dict[str, object]:
    status = pager.status("checkout")
    return {"service": "checkout", "health": status.health.value, "page_level": status.level,
            "acknowledged": status.acknowledged, "message": status.message}
