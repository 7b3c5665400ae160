"""Answering a page through the daemon: the links of a real mail, and signed SMS replies."""

from __future__ import annotations

import email
import re
from email import policy as email_policy

import httpx
import pytest

from pager_actors.daemon.replies import twilio_signature
from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(90)

SECRET = "a-link-signing-secret-of-at-least-32-bytes"
TOKEN = "api-token"
SERVICES = """
[[users]]
id = "bob"
name = "Bob"
contacts = ["sms:+33600000001"]

[[services]]
id = "checkout"
levels = [["mailto:alice@example.com", "sms:+33600000001"], ["sms:+33600000002"]]
"""
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def world(tmp_path):
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        port = new_port()
        text = config_text(port=port, state=tmp_path / "pager.db", smtp_port=smtp.port,
                           sms_url=sms.base_url, ack_timeout="1h", services=SERVICES)
        text = text.replace("[server]\n", f'[server]\npublic_url = "http://127.0.0.1:{port}"\n'
                                          f'secret = "{SECRET}"\ntoken = "{TOKEN}"\n', 1)
        config = tmp_path / "pager.toml"
        config.write_text(text)
        daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
        daemon.start()
        try:
            yield daemon, smtp, sms
        finally:
            assert daemon.terminate() == 0


def alert(daemon: Daemon, message: str = "p99 latency") -> dict:
    response = daemon.api("POST", "/api/v1/alerts", headers=AUTH,
                          json={"service_id": "checkout", "message": message})
    assert response.status_code == 202, response.text
    return response.json()


def status(daemon: Daemon) -> dict:
    return daemon.api("GET", "/api/v1/services/checkout", headers=AUTH).json()


def links_in(mail_data: str) -> dict[str, str]:
    message = email.message_from_string(mail_data, policy=email_policy.default)
    body = message.get_content().replace("\r\n", "\n")
    return dict(re.findall(r"^(Acknowledge|Resolve|Incident): (\S+)$", body, re.MULTILINE))


def test_the_links_of_a_real_mail(world):
    """GET changes nothing; POST acknowledges; a second POST says so; a forged link and a
    link of a closed incident act on nothing."""
    daemon, smtp, _ = world
    alert(daemon)
    wait_for(lambda: smtp.received, 10, "the page by mail")
    links = links_in(smtp.received[0].data)
    assert links["Incident"] == f"{daemon.url}/services/checkout/incidents/1"
    assert "alice" not in links["Acknowledge"]

    shown = httpx.get(links["Acknowledge"], timeout=10)
    assert shown.status_code == 200 and "Acknowledge incident #1" in shown.text
    assert shown.headers["content-security-policy"].endswith("frame-ancestors 'none'")
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert status(daemon)["acknowledged"] is False  # the GET changed nothing

    done = httpx.post(links["Acknowledge"], timeout=10)
    assert done.status_code == 200 and "checkout #1 acknowledged" in done.text
    assert status(daemon)["acknowledged"] is True
    again = httpx.post(links["Acknowledge"], timeout=10)
    assert again.status_code == 200 and "already acknowledged" in again.text

    timeline = daemon.api("GET", "/api/v1/services/checkout/incidents/1",
                          headers=AUTH).json()["timeline"]
    [acked] = [e for e in timeline if e["event"] == "acknowledged"]
    assert acked["by"] == "mail:a***@example.com"

    forged = links["Resolve"].rsplit("/", 1)[0] + "/" + links["Resolve"].rsplit("/", 1)[1][::-1]
    assert httpx.post(forged, timeout=10).status_code == 403
    assert status(daemon)["health"] == "unhealthy"

    daemon.api("POST", "/api/v1/services/checkout/healthy", headers=AUTH)
    alert(daemon, "again")  # incident #2: the old link must not touch it
    late = httpx.post(links["Resolve"], timeout=10)
    assert "no longer open" in late.text
    assert status(daemon)["incident"] == 2 and status(daemon)["health"] == "unhealthy"


def inbound(daemon: Daemon, sender: str, body: str, sid: str, signed: bool = True
            ) -> httpx.Response:
    params = [("AccountSid", "AC42"), ("Body", body), ("From", sender),
              ("MessageSid", sid), ("To", "+15550000000")]
    url = f"{daemon.url}/api/v1/sms/inbound"
    headers = {"X-Twilio-Signature": twilio_signature(b"tok", url, params) if signed else "x"}
    return httpx.post(url, data=dict(params), headers=headers, timeout=10)


def test_signed_sms_replies_from_the_paged_number_act_once(world):
    """ACK <code> from the paged number acknowledges, by the user that number belongs to;
    other numbers, forged signatures and a repeated MessageSid change nothing more."""
    daemon, _, sms = world
    alert(daemon)
    wait_for(lambda: sms.messages, 10, "the page by SMS")
    [page] = sms.messages
    code = re.search(r"Reply ACK (\d{4,6}) to acknowledge", page.body)[1]

    assert inbound(daemon, "+33600000001", f"ack {code}", "SM1", signed=False).status_code \
        == 403
    stranger = inbound(daemon, "+33699999999", f"ACK {code}", "SM2")
    assert "Not paged for this incident" in stranger.text
    assert inbound(daemon, "+33600000001", "ACK 000000", "SM3").text.count("Unknown code")
    assert status(daemon)["acknowledged"] is False

    acked = inbound(daemon, "+33600000001", f"Ack {code}", "SM4")
    assert acked.headers["content-type"].startswith("text/xml")
    assert "<Message>checkout #1 acknowledged" in acked.text
    repeated = inbound(daemon, "+33600000001", f"Ack {code}", "SM4")
    assert repeated.text == acked.text  # answered again, acted once
    timeline = daemon.api("GET", "/api/v1/services/checkout/incidents/1",
                          headers=AUTH).json()["timeline"]
    assert [e["by"] for e in timeline if e["event"] == "acknowledged"] == ["sms:bob"]

    resolved = inbound(daemon, "+33600000001", f"res {code}", "SM5")
    assert "checkout #1 resolved" in resolved.text and status(daemon)["health"] == "healthy"
    assert "no longer open" in inbound(daemon, "+33600000001", f"ACK {code}", "SM6").text
