"""Answering a page over HTTP, in process: link pages and the SMS webhook never answer 500
to anything a client sends, and an unexpected error tells the client nothing of itself."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Pager
from pager_actors.daemon.config import Config
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.replies import MAX_FORM_BYTES, routes, twilio_signature
from pager_actors.domain import PageFormat
from pager_actors.domain.links import LinkKey, Links
from tests.conftest import ONCALL_SMS, two_level_policy

PUBLIC_URL = "http://testserver"  # the test client's own base URL
INBOUND = f"{PUBLIC_URL}/api/v1/sms/inbound"
TWILIO_TOKEN = "twilio-auth-token"
LINKS = Links(PUBLIC_URL, (LinkKey(b"a-link-signing-secret-of-at-least-32-bytes"),))
NON_ASCII_IDS = ["abc.\u00e9.def", f"abc.{LINKS.keys[0].kid}.\u00e9\u00e9",  # key id, MAC
                 f"\u00e9.{LINKS.keys[0].kid}.def", "\u2603"]


@pytest.fixture
def world():
    """A paged incident on `checkout`: its mail (with links) and its SMS (with a code)."""
    mail, sms = RecordingMailSender(), RecordingSmsSender()
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=mail, sms=sms, timer=ManualTimer(), max_in_flight=0,
                        page_format=PageFormat(links=LINKS, reply_codes=True))
    config = Config(source=Path("test.toml"), services=(two_level_policy("checkout"),))
    app = create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)),
                     extra_routes=routes(pager, links=LINKS, twilio_token=TWILIO_TOKEN,
                                         public_url=PUBLIC_URL))
    try:
        pager.alert("checkout", "p99 latency").get(timeout=10)
        pager.flush()
        with TestClient(app) as client:
            yield client, pager, mail, sms
    finally:
        pager.stop()


def acknowledged(pager: Pager) -> bool:
    state = pager.state("checkout")
    assert state.incident is not None
    return state.incident.acknowledged


def signed_post(client: TestClient, params: list[tuple[str, str]], body: bytes | None = None
                ) -> httpx.Response:
    """POST the form `params` (or the raw `body`) to the webhook, signed as Twilio signs."""
    signature = twilio_signature(TWILIO_TOKEN.encode(), INBOUND, params)
    return client.post("/api/v1/sms/inbound",
                       content=urlencode(params).encode() if body is None else body,
                       headers={"X-Twilio-Signature": signature,
                                "Content-Type": "application/x-www-form-urlencoded"})


def reply_code(sms: RecordingSmsSender) -> str:
    [page] = [s for s in sms.sent if s.to == ONCALL_SMS.number]
    found = re.search(r"Reply ACK (\w+) to acknowledge", page.text)
    assert found is not None
    return found[1]


def test_a_signed_sms_reply_acknowledges_in_process(world):
    """The webhook, as wired here, acts on a signed ACK: the refusals below are meaningful."""
    client, pager, _, sms = world
    answer = signed_post(client, [("Body", f"ACK {reply_code(sms)}"),
                                  ("From", ONCALL_SMS.number), ("MessageSid", "SM1")])
    assert answer.status_code == 200 and "checkout #1 acknowledged" in answer.text
    assert acknowledged(pager)


def test_an_oversized_sms_webhook_body_is_413_and_changes_nothing(world):
    """Over 16 KiB, even signed and naming the paged number, is refused before it is read."""
    client, pager, _, sms = world
    params = [("Body", f"ACK {reply_code(sms)}"), ("From", ONCALL_SMS.number),
              ("MessageSid", "SM1"), ("Padding", "x" * MAX_FORM_BYTES)]
    answer = signed_post(client, params)
    assert answer.status_code == 413
    assert answer.json()["error"].endswith(f"is over the {MAX_FORM_BYTES}-byte limit")
    assert not acknowledged(pager)


def test_an_oversized_sms_webhook_body_without_length_is_413(world):
    """A chunked body (no Content-Length) is counted as it arrives."""
    client, pager, *_ = world
    chunks = iter([b"Body=" + b"x" * MAX_FORM_BYTES, b"x" * 1024])
    answer = client.post("/api/v1/sms/inbound", content=chunks,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and "byte limit" in answer.json()["error"]
    assert not acknowledged(pager)


@pytest.mark.parametrize("body", [
    b"Body=ACK \xff\xfe&From=%2B33600000001",   # raw bytes that are not UTF-8
    b"Body=ACK+%FF%FE&From=%2B33600000001",     # percent-escapes that decode to no UTF-8
    b"Body=%ED%A0%80",                          # a lone surrogate, escaped
])
def test_an_sms_webhook_body_that_is_not_utf8_is_400(world, body):
    """Not UTF-8, raw or percent-escaped: a precise 400, and nothing changes."""
    client, pager, *_ = world
    answer = client.post("/api/v1/sms/inbound", content=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400
    assert answer.json() == {"error": "the form is not UTF-8"}
    assert not acknowledged(pager)


def test_a_valid_link_shows_its_page(world):
    """GET on a link from the mail shows the button: the refusals below are meaningful."""
    client, pager, mail, _ = world
    [page] = mail.sent
    link = re.search(r"^Acknowledge: (\S+)$", page.body, re.MULTILINE)
    assert link is not None
    shown = client.get(link[1])
    assert shown.status_code == 200 and "Acknowledge incident #1" in shown.text
    assert not acknowledged(pager)


@pytest.mark.parametrize("link_id", NON_ASCII_IDS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_non_ascii_link_id_is_an_invalid_link_not_a_500(world, method, link_id):
    """A link id outside ASCII is a forged link: the "not valid" page (403), nothing done."""
    client, pager, *_ = world
    answer = client.request(method, f"/respond/{link_id}")
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "<title>Link not valid</title>" in answer.text
    assert "this link is not valid" in answer.text
    assert not acknowledged(pager)


def test_an_unexpected_error_is_a_generic_json_500_and_logged(caplog):
    """The client reads "internal error" and nothing of the exception; the log has it all."""
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), max_in_flight=0)

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret-detail /var/lib/pager token=hunter2")

    config = Config(source=Path("test.toml"), services=(two_level_policy("checkout"),))
    app = create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)),
                     extra_routes=[Route("/boom", broken, methods=["GET"])])
    try:
        with caplog.at_level(logging.ERROR, logger="pager_actors"), \
                TestClient(app, raise_server_exceptions=False) as client:
            answer = client.get("/boom")
    finally:
        pager.stop()
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error"}
    assert "secret-detail" not in answer.text and "RuntimeError" not in answer.text
    [record] = [r for r in caplog.records if r.name.startswith("pager_actors")]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "internal error in GET /boom"
    assert "secret-detail" in str(record.exc_info[1])
