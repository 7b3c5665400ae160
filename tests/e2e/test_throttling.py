"""Per-contact throttling through the daemon: real SMTP, a Twilio-shaped SMS gateway, SQLite,
plain `sms:` targets, short windows so the tests stay quick."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(120)

PHONE = "+33600000001"
SERVICES = [f"svc{n:02}" for n in range(20)]


def start(tmp_path, smtp, sms, window: str) -> Daemon:
    """20 services, each paging PHONE; SMS at most 1 per `window` (the daemon's default
    limit)."""
    services = "".join(f'\n[[services]]\nid = "{sid}"\nlevels = [["sms:{PHONE}"]]\n'
                       for sid in SERVICES)
    text = config_text(port=new_port(), state=tmp_path / "pager.db", smtp_port=smtp.port,
                       sms_url=sms.base_url, ack_timeout="1h", services=services)
    text = text.replace('from = "+15550000000"\n',
                        f'from = "+15550000000"\nthrottle_window = "{window}"\n', 1)
    config = tmp_path / "pager.toml"
    config.write_text(text)
    return Daemon(config, tmp_path / "daemon.log",
                  env={"PAGER_SMS_AUTH_TOKEN": "tok"}).start()


def alert(daemon: Daemon, sid: str) -> None:
    response = daemon.api("POST", "/api/v1/alerts", json={"service_id": sid, "message": "down"})
    assert response.status_code == 202, response.text


def events(daemon: Daemon, sid: str, incident: int = 1) -> list[str]:
    found = daemon.api("GET", f"/api/v1/services/{sid}/incidents/{incident}").json()
    return [entry["event"] for entry in found.get("timeline", [])]


def sms_depth(daemon: Daemon) -> float:
    for line in daemon.api("GET", "/metrics").text.splitlines():
        if line.startswith('pager_mailbox_depth{actor="sms"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no sms mailbox depth in /metrics")


def test_a_burst_of_20_incidents_to_one_phone_gives_1_message_now_and_1_bundle_later(tmp_path):
    """20 alerts at once: the phone gets one page at once and, once the 2 s window allows,
    one bundle naming the other 19; every page's row is then settled."""
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        daemon = start(tmp_path, smtp, sms, window="2s")
        try:
            with ThreadPoolExecutor(max_workers=20) as pool:
                list(pool.map(lambda sid: alert(daemon, sid), SERVICES))
            assert sms.wait_for(lambda messages: len(messages) >= 2, timeout=30)
            first, bundle = sms.messages[:2]
            assert "level 1 page, incident #1" in first.body
            paged_first = first.body[1:6]
            head = "19 more pages: "
            assert bundle.body.startswith(head), bundle.body
            assert sorted(bundle.body.removeprefix(head).split(", ")) == [
                f"{sid} L1 #1" for sid in SERVICES if sid != paged_first]
            assert bundle.at - first.at >= 1.0  # held for the window, not sent at once
            wait_for(lambda: all(events(daemon, sid)[-1] == "delivered" for sid in SERVICES),
                     10, "every page's delivery in its timeline")
            assert len(sms.messages) == 2 and {m.to for m in sms.messages} == {PHONE}
        finally:
            assert daemon.terminate() == 0


def test_a_restart_within_the_window_keeps_holding_the_phone(tmp_path):
    """The throttle is rebuilt from the state file: after a restart, a page to the phone
    paged a moment ago waits for its window (here an hour) instead of going out."""
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        daemon = start(tmp_path, smtp, sms, window="1h")
        try:
            alert(daemon, "svc00")
            wait_for(lambda: events(daemon, "svc00")[-1:] == ["delivered"], 10,
                     "the first page delivered")
        finally:
            assert daemon.terminate() == 0
        daemon.start()
        try:
            alert(daemon, "svc01")
            wait_for(lambda: sms_depth(daemon) == 1, 10, "the second page held")
            assert events(daemon, "svc01") == ["opened", "paged"]
            assert len(sms.messages) == 1
        finally:
            assert daemon.terminate() == 0
        assert "held_pages_left_pending" in daemon.log.read_text()
