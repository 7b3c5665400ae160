"""The HTTP API, in process: a real Pager behind Starlette, driven through its test client."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Pager
from pager_actors.daemon.config import AlertmanagerConfig, Config, ServerConfig
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from tests.conftest import two_level_policy

SERVICES = ("checkout", "search")


def alertmanager_payload(*alerts, status="firing"):
    """A webhook body as Alertmanager 0.25 sends it (version 4)."""
    return {
        "receiver": "pager", "status": status, "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}', "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighLatency"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": alert_status, "labels": {"alertname": "HighLatency", **labels},
            "annotations": {"summary": summary}, "startsAt": "2026-11-28T09:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": f"{abs(hash(str(labels))):016x}"[:16],
        } for alert_status, labels, summary in alerts],
    }


@pytest.fixture
def world(request):
    yield from make_world(token=getattr(request, "param", None))


@pytest.fixture
def roomy():
    """A world whose body limit (1 MiB) lets hostile JSON reach the parser."""
    yield from make_world(limit=1 << 20)


def make_world(token=None, limit=2048):
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    pager = Pager.start(policies=InMemoryPolicyRepository(two_level_policy(s) for s in SERVICES),
                        mail=mail, sms=sms, timer=timer, max_in_flight=0)
    config = Config(source=Path("test.toml"),
                    server=ServerConfig(token=token, max_body_bytes=limit),
                    alertmanager=AlertmanagerConfig(service_label="service"),
                    services=tuple(two_level_policy(s) for s in SERVICES))
    app = create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)))
    with TestClient(app) as client:
        yield client, pager, mail, sms, timer
    pager.stop()


def test_alert_is_accepted_with_202_once_committed(world):
    """POST /api/v1/alerts answers 202 with the new status; level 1 is paged."""
    client, pager, mail, sms, _ = world
    response = client.post("/api/v1/alerts", json={"service_id": "checkout", "message": "p99"})
    assert response.status_code == 202
    assert response.json()["event"] == "incident_opened"
    status = response.json()["status"]
    assert {k: status[k] for k in ("service_id", "health", "level", "acknowledged",
                                   "message", "incident")} == {
        "service_id": "checkout", "health": "unhealthy", "level": 1, "acknowledged": False,
        "message": "p99", "incident": 1}
    assert [a["key"] for a in status["alerts"]] == ["default"]
    pager.flush()
    assert len(mail.sent) == 1 and len(sms.sent) == 1


def test_acknowledge_and_healthy_return_202(world):
    """The console's two buttons."""
    client, *_ = world
    client.post("/api/v1/alerts", json={"service_id": "checkout", "message": "p99"})
    acked = client.post("/api/v1/services/checkout/acknowledge")
    assert acked.status_code == 202 and acked.json()["status"]["acknowledged"] is True
    healed = client.post("/api/v1/services/checkout/healthy")
    assert healed.status_code == 202 and healed.json()["status"]["health"] == "healthy"


def test_status_and_list(world):
    """GET one service, and all of them."""
    client, *_ = world
    client.post("/api/v1/alerts", json={"service_id": "search", "message": "slow"})
    one = client.get("/api/v1/services/search")
    assert one.status_code == 200
    shown = one.json()
    assert {k: shown[k] for k in ("service_id", "health", "level", "acknowledged",
                                  "message", "incident", "maintenance")} == {
        "service_id": "search", "health": "unhealthy", "level": 1, "acknowledged": False,
        "message": "slow", "incident": 1, "maintenance": []}
    listed = client.get("/api/v1/services").json()["services"]
    assert [s["service_id"] for s in listed] == list(SERVICES)
    assert listed[0]["health"] == "healthy"


@pytest.mark.parametrize("call", [
    lambda c: c.post("/api/v1/alerts", json={"service_id": "ghost", "message": "x"}),
    lambda c: c.post("/api/v1/services/ghost/acknowledge"),
    lambda c: c.post("/api/v1/services/ghost/healthy"),
    lambda c: c.get("/api/v1/services/ghost"),
])
def test_unknown_service_is_404_with_a_reason(world, call):
    """Every route answers 404 with a JSON reason for a service without a policy."""
    client, pager, *_ = world
    response = call(client)
    assert response.status_code == 404 and "ghost" in response.json()["error"]
    assert pager.stats()["known_services"] == 0


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"message": "x"}', "missing field 'service_id'"),
    (b'{"service_id": "checkout"}', "missing field 'message'"),
    (b'{"service_id": "checkout", "message": 42}', "must be a non-empty string"),
])
def test_malformed_requests_are_400_and_change_nothing(world, body, reason):
    """Bad JSON or fields: 400, a reason, no state."""
    client, pager, *_ = world
    response = client.post("/api/v1/alerts", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and reason in response.json()["error"]
    assert pager.status("checkout").health.value == "healthy"


def test_oversized_body_is_413(world):
    """A body over max_body_bytes is refused before parsing."""
    client, pager, *_ = world
    big = {"service_id": "checkout", "message": "x" * 5000}
    response = client.post("/api/v1/alerts", json=big)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert pager.status("checkout").health.value == "healthy"


@pytest.mark.parametrize("world", ["s3cret"], indirect=True)
def test_token_is_required_on_the_api_when_configured(world):
    """Missing or wrong bearer token: 401. Right one: accepted. /healthz stays open."""
    client, *_ = world
    body = {"service_id": "checkout", "message": "x"}
    assert client.post("/api/v1/alerts", json=body).status_code == 401
    wrong = client.post("/api/v1/alerts", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/services").status_code == 401
    assert client.get("/api/v2/anything").status_code == 401
    right = client.post("/api/v1/alerts", json=body,
                        headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 202
    assert client.get("/healthz").status_code == 200


def test_alertmanager_firing_and_resolved_with_several_alerts(world):
    """One webhook with two firing alerts opens two incidents; a resolved one heals."""
    client, pager, *_ = world
    response = client.post("/api/v1/alertmanager", json=alertmanager_payload(
        ("firing", {"service": "checkout"}, "p99 above 2s"),
        ("firing", {"service": "search"}, "index lagging")))
    assert response.status_code == 202
    assert [r["event"] for r in response.json()["results"]] == ["incident_opened"] * 2
    assert pager.status("checkout").message == "p99 above 2s"
    resolved = client.post("/api/v1/alertmanager", json=alertmanager_payload(
        ("resolved", {"service": "checkout"}, "p99 above 2s"), status="resolved"))
    assert resolved.status_code == 202
    assert pager.status("checkout").health.value == "healthy"
    assert pager.status("search").health.value == "unhealthy"


def test_alertmanager_with_unknown_services(world):
    """Known alerts are taken (202) and unknown ones reported; all unknown: 404."""
    client, *_ = world
    mixed = client.post("/api/v1/alertmanager", json=alertmanager_payload(
        ("firing", {"service": "checkout"}, "down"),
        ("firing", {"service": "ghost"}, "down"),
        ("firing", {"team": "no-service-label"}, "down")))
    assert mixed.status_code == 202
    results = mixed.json()["results"]
    assert [r["accepted"] for r in results] == [True, False, False]
    assert results[1]["code"] == 404 and "ghost" in results[1]["error"]
    assert "no 'service' label" in results[2]["error"]
    only_unknown = client.post("/api/v1/alertmanager", json=alertmanager_payload(
        ("firing", {"service": "ghost"}, "down")))
    assert only_unknown.status_code == 404


def test_alertmanager_payload_of_another_version_is_400(world):
    """Only webhook version 4 is understood."""
    client, *_ = world
    payload = alertmanager_payload(("firing", {"service": "checkout"}, "x"))
    payload["version"] = "3"
    assert client.post("/api/v1/alertmanager", json=payload).status_code == 400


def test_metrics_move(world):
    """Alerts, notifications, escalations and open incidents show on /metrics."""
    client, pager, _, _, timer = world
    client.post("/api/v1/alerts", json={"service_id": "checkout", "message": "x"})
    pager.flush()
    [f.get(timeout=5) for f in timer.advance(timedelta(minutes=15))]
    pager.flush()
    text = client.get("/metrics").text
    for line in ('pager_alerts_received_total{source="api"} 1.0',
                 'pager_notifications_sent_total{channel="sms"} 2.0',
                 'pager_notifications_sent_total{channel="mail"} 1.0',
                 "pager_escalations_total 1.0", "pager_open_incidents 1.0",
                 "pager_incidents_opened_total 1.0",
                 'pager_mailbox_depth{actor="registry"} 0.0'):
        assert line in text, line


def test_unknown_route_and_method_are_json(world):
    """404 and 405 answer JSON too."""
    client, *_ = world
    assert client.get("/api/v2/nothing").json()["error"].startswith("no route")
    assert client.get("/api/v1/alerts").status_code in (404, 405)
    assert client.post("/api/v1/services/checkout/reboot").status_code == 404


def test_oversized_chunked_body_is_413(world):
    """Without a Content-Length, the body is counted as it streams in."""
    client, pager, *_ = world

    def chunks():
        yield b'{"service_id": "checkout", "message": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    response = client.post("/api/v1/alerts", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert pager.status("checkout").health.value == "healthy"


def test_lone_surrogate_in_a_message_is_400(world):
    """JSON allows a lone surrogate; UTF-8 storage does not: refused before any state."""
    client, pager, *_ = world
    response = client.post("/api/v1/alerts", content=b'{"service_id": "checkout", '
                                                     b'"message": "bad \\ud800 text"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Unicode" in response.json()["error"]
    assert pager.status("checkout").health.value == "healthy"


def test_an_unexpected_error_outside_the_api_routes_is_a_json_500():
    """An exception outside the API routes (here: /metrics) is a generic JSON 500."""
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), max_in_flight=0)

    def broken_timer_lag() -> tuple[float, float]:
        raise RuntimeError("timer gone")

    config = Config(source=Path("test.toml"), services=(two_level_policy("checkout"),))
    app = create_app(pager, config, Metrics(pager, broken_timer_lag))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/metrics")
        assert response.status_code == 500
        assert response.json() == {"error": "internal error"}  # "timer gone" goes to the log
    finally:
        pager.stop()


@pytest.mark.parametrize("body,reason", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"service_id": "checkout", "message": "x", "n": ' + b"9" * 5001 + b"}", "digits"),
    (b"\xff\xfe{}", "malformed JSON"),
])
def test_hostile_json_is_400_never_500(roomy, body, reason):
    """Deep nesting, huge numbers and bad encodings are client errors, and change nothing."""
    client, pager, *_ = roomy
    response = client.post("/api/v1/alerts", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert pager.status("checkout").health.value == "healthy"


@pytest.mark.parametrize("raw", [
    b'{"service_id": "checkout", "message": "x", "extra": {"deep": ["\\udc00"]}}',
    b'{"service_id": "checkout", "message": "x", "\\ud83d": 1}',
    b'{"service_id": "check\\ud800out", "message": "x"}',
])
def test_lone_surrogate_anywhere_in_an_alert_body_is_400(world, raw):
    """Every string of the body, keys included, must be storable text."""
    client, pager, *_ = world
    response = client.post("/api/v1/alerts", content=raw,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Unicode" in response.json()["error"]
    assert pager.stats()["known_services"] == 0


@pytest.mark.parametrize("where", ["service", "alertname", "summary"])
def test_alertmanager_alert_with_a_lone_surrogate_is_refused_alone(world, where):
    """The bad alert gets 400 in its result; the good one beside it is still taken."""
    client, pager, *_ = world
    bad = {"service": "search", "summary": "slow"}
    bad[where] = "bad \ud800"
    payload = alertmanager_payload(("firing", {"service": "checkout"}, "down"),
                                   ("firing", {k: v for k, v in bad.items() if k != "summary"},
                                    bad["summary"]))
    raw = json.dumps(payload).encode()  # ensure_ascii: the surrogate travels as \\ud800
    response = client.post("/api/v1/alertmanager", content=raw,
                           headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    good, refused = response.json()["results"]
    assert good["accepted"] is True
    assert refused["accepted"] is False and refused["code"] == 400
    assert "Unicode" in refused["error"]
    assert pager.status("search").health.value == "healthy"
    only_bad = alertmanager_payload(("firing", {k: v for k, v in bad.items() if k != "summary"},
                                     bad["summary"]))
    response = client.post("/api/v1/alertmanager", content=json.dumps(only_bad).encode(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 400


@pytest.mark.parametrize("world", ["s3cret"], indirect=True)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_accepted_in_any_case(world, scheme):
    """RFC 7235: the auth scheme is case-insensitive."""
    client, *_ = world
    response = client.post("/api/v1/alerts", json={"service_id": "checkout", "message": "x"},
                           headers={"Authorization": f"{scheme} s3cret"})
    assert response.status_code == 202


def test_an_unexpected_error_is_a_500_without_its_details(world, monkeypatch):
    """A bug answers a generic 500; what it said stays in the log, not in the body."""
    client, pager, *_ = world
    monkeypatch.setattr(pager, "state", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("secret detail of another service")))
    response = client.get("/api/v1/services/checkout")
    assert response.status_code == 500
    assert "secret detail" not in response.text


def test_readyz_says_why_the_pager_is_not_ready(world, monkeypatch):
    """/readyz: 200 while commits work; 503 with the reason while the store refuses them."""
    client, pager, *_ = world
    assert client.get("/readyz").json() == {"status": "ready"}
    monkeypatch.setattr(pager, "store_problem", lambda: "pager.db: commit failed: disk full")
    unready = client.get("/readyz")
    assert unready.status_code == 503
    assert unready.json() == {"status": "unready",
                              "reason": "pager.db: commit failed: disk full"}
    assert client.get("/healthz").status_code == 200  # liveness is another matter
    monkeypatch.undo()
    pager.stop()
    assert client.get("/readyz").json()["reason"] == "the pager is stopping"


def scoped_world():
    from pager_actors.daemon.config import ApiToken  # noqa: PLC0415

    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    pager = Pager.start(policies=InMemoryPolicyRepository(two_level_policy(s) for s in SERVICES),
                        mail=mail, sms=sms, timer=timer, max_in_flight=0)
    tokens = (ApiToken("cron", "ingest-token", frozenset({"ingest"})),
              ApiToken("ops", "operate-token", frozenset({"operate"})),
              ApiToken("board", "read-token", frozenset({"read"})))
    config = Config(source=Path("test.toml"), server=ServerConfig(token="all-token",
                                                                  tokens=tokens),
                    services=tuple(two_level_policy(s) for s in SERVICES))
    return pager, TestClient(create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0))))


@pytest.mark.parametrize("token,alert,ack,read", [
    ("ingest-token", 202, 403, 403),
    ("operate-token", 403, 202, 403),
    ("read-token", 403, 403, 200),
    ("all-token", 202, 202, 200),
    ("nope", 401, 401, 401),
])
def test_each_token_may_do_what_its_scopes_allow(token, alert, ack, read):
    """ingest: alerts and heartbeats; operate: acks and resolves; read: GETs; else 403."""
    pager, client = scoped_world()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        got = client.post("/api/v1/alerts", json={"service_id": "checkout", "message": "x"},
                          headers=auth)
        assert got.status_code == alert
        assert client.post("/api/v1/services/checkout/acknowledge",
                           headers=auth).status_code == ack
        assert client.get("/api/v1/services/checkout", headers=auth).status_code == read
        if alert == 403:
            assert "may not ingest" in got.json()["error"]
    finally:
        pager.stop()


def test_sms_inbound_answers_404_when_replies_are_off():
    """Without public_url and a Twilio gateway, the webhook is not there."""
    from pager_actors.daemon.replies import routes  # noqa: PLC0415

    pager = Pager.start(policies=InMemoryPolicyRepository([]), mail=RecordingMailSender(),
                        sms=RecordingSmsSender(), timer=ManualTimer())
    try:
        config = Config(source=Path("t.toml"))
        app = create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)),
                         extra_routes=routes(pager, links=None, twilio_token=None,
                                             public_url=None))
        response = TestClient(app).post("/api/v1/sms/inbound", data={"Body": "ACK 1234"})
        assert response.status_code == 404 and "replies are off" in response.json()["error"]
    finally:
        pager.stop()
