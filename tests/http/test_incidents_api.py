"""The incident API in process: keyed alerts, Alertmanager fingerprints, maintenance,
heartbeats and the incident history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import EscalationPolicy, Pager
from pager_actors.daemon.config import Config, ServerConfig
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from tests.conftest import two_level_policy
from tests.http.test_api import alertmanager_payload


@pytest.fixture
def api():
    base = two_level_policy("checkout")
    policies = [base, EscalationPolicy("cron", base.levels, heartbeat=timedelta(minutes=5))]
    timer, started = ManualTimer(), datetime.now(UTC)
    # The pager's clock follows the manual timer, so a heartbeat's deadline passes with it.
    pager = Pager.start(policies=InMemoryPolicyRepository(policies), mail=RecordingMailSender(),
                        sms=RecordingSmsSender(), timer=timer, max_in_flight=0,
                        clock=lambda: started + timer.now)
    config = Config(source=Path("t.toml"), server=ServerConfig(), services=tuple(policies))
    with TestClient(create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)))) as client:
        yield client, pager, timer
    pager.stop()


def alert(client, key, status="firing", service="checkout"):
    body = {"service_id": service, "message": f"{key} {status}", "key": key, "status": status}
    return client.post("/api/v1/alerts", json=body)


def test_keyed_alerts_through_the_api(api):
    """Each row of the table, over HTTP."""
    client, *_ = api
    assert alert(client, "HighLatency").json()["event"] == "incident_opened"
    assert alert(client, "DiskFull").json()["event"] == "alert_added"
    again = alert(client, "DiskFull").json()
    assert (again["event"], again["reason"]) == ("ignored", "duplicate")
    assert alert(client, "HighLatency", "resolved").json()["event"] == "alert_resolved"
    unknown = alert(client, "Nope", "resolved").json()
    assert (unknown["event"], unknown["reason"]) == ("ignored", "unknown_alert")
    shown = client.get("/api/v1/services/checkout").json()
    assert [a["key"] for a in shown["alerts"]] == ["DiskFull"]
    assert shown["alerts"][0]["since"].endswith("Z") and shown["incident"] == 1
    assert alert(client, "DiskFull", "resolved").json()["event"] == "resolved"


@pytest.mark.parametrize("body,reason", [
    ({"service_id": "checkout", "message": "x", "key": ""}, "field 'key'"),
    ({"service_id": "checkout", "message": "x", "key": "a" * 201}, "field 'key'"),
    ({"service_id": "checkout", "message": "x", "key": 5}, "field 'key'"),
    ({"service_id": "checkout", "message": "x", "status": "maybe"}, "field 'status'"),
])
def test_bad_keys_and_statuses_are_400(api, body, reason):
    """A key outside 1-200 printable characters, or an unknown status: 400."""
    client, *_ = api
    response = client.post("/api/v1/alerts", json=body)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_alertmanager_resolves_only_the_fingerprint_that_resolved(api):
    """The bug of the issue: a firing HighLatency, a resolved DiskFull that never fired."""
    client, pager, timer = api
    firing = alertmanager_payload(("firing", {"service": "checkout", "alertname": "HighLatency"},
                                   "p99 above 2s"))
    assert client.post("/api/v1/alertmanager", json=firing).status_code == 202
    stray = alertmanager_payload(("resolved", {"service": "checkout", "alertname": "DiskFull"},
                                  "disk"), status="resolved")
    [result] = client.post("/api/v1/alertmanager", json=stray).json()["results"]
    assert result["event"] == "ignored"
    pager.flush()
    [escalated] = [f.get(timeout=5) for f in timer.advance(timedelta(minutes=15))]
    assert escalated.event == "escalated"
    resolved = dict(firing, status="resolved")
    resolved["alerts"] = [dict(firing["alerts"][0], status="resolved")]
    [closed] = client.post("/api/v1/alertmanager", json=resolved).json()["results"]
    assert closed["event"] == "resolved" and closed["key"] == firing["alerts"][0]["fingerprint"]


def test_maintenance_windows_over_http(api):
    """201 with an id; alerts are suppressed; DELETE ends it and the firing key pages."""
    client, _pager, _ = api
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = client.post("/api/v1/services/checkout/maintenance",
                          json={"end": end, "reason": "deploy"})
    assert created.status_code == 201
    window = created.json()
    assert window["id"] == 1 and window["reason"] == "deploy" and window["end"].endswith("Z")
    assert alert(client, "HighLatency").json()["event"] == "suppressed"
    shown = client.get("/api/v1/services/checkout").json()
    assert shown["health"] == "healthy" and shown["maintenance"] == [window]
    ended = client.delete("/api/v1/services/checkout/maintenance/1")
    assert ended.status_code == 200 and ended.json()["status"]["health"] == "unhealthy"
    assert client.delete("/api/v1/services/checkout/maintenance/1").status_code == 404


@pytest.mark.parametrize("body,reason", [
    ({}, "missing field 'end'"),
    ({"end": "tomorrow"}, "not an ISO 8601 time"),
    ({"end": "2030-01-01T00:00:00"}, "needs a UTC offset"),
    ({"end": "2020-01-01T00:00:00Z"}, "already past"),
    ({"start": "2030-01-01T00:00:00Z", "end": "2029-12-31T00:00:00Z"}, "after 'start'"),
    ({"start": "2030-01-01T00:00:00Z", "end": "2030-01-09T00:00:00Z"}, "at most 7 days"),
])
def test_bad_windows_are_400(api, body, reason):
    """end required, after start, within 7 days of it, not past, with an offset."""
    client, *_ = api
    response = client.post("/api/v1/services/checkout/maintenance", json=body)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_heartbeats_over_http(api):
    """202 arms the countdown; silence fires the heartbeat key; no heartbeat configured: 400."""
    client, pager, timer = api
    assert client.post("/api/v1/services/cron/heartbeat").status_code == 202
    pager.flush()  # the 202 means committed; the timer is armed just after
    [missed] = [f.get(timeout=5) for f in timer.advance(timedelta(minutes=5))]
    assert missed.event == "incident_opened"
    assert client.get("/api/v1/services/cron").json()["alerts"][0]["message"] == \
        "no heartbeat for 5m"
    assert client.post("/api/v1/services/cron/heartbeat").json()["event"] == "resolved"
    refused = client.post("/api/v1/services/checkout/heartbeat")
    assert refused.status_code == 400 and "no heartbeat" in refused.json()["error"]


def test_incident_history_and_timeline(api):
    """The list names each incident; one incident shows its timeline, oldest first."""
    client, pager, _ = api
    alert(client, "a")
    client.post("/api/v1/services/checkout/acknowledge")
    client.post("/api/v1/services/checkout/healthy")
    alert(client, "b")
    pager.flush()
    listed = client.get("/api/v1/services/checkout/incidents").json()["incidents"]
    assert [i["number"] for i in listed] == [2, 1]
    assert listed[1]["acknowledged_by"] == "api" and listed[1]["closed"] is not None
    one = client.get("/api/v1/services/checkout/incidents/1").json()
    events = [e["event"] for e in one["timeline"]]
    assert events[:3] == ["opened", "paged", "paged"]
    assert events.count("delivered") == 2 and events[-1] == "resolved"
    paged = [e for e in one["timeline"] if e["event"] == "paged"]
    assert {e["target"] for e in paged} == {"o***@example.com", "+336****0001"}
    assert client.get("/api/v1/services/checkout/incidents/9").status_code == 404
    assert client.get("/api/v1/services/ghost/incidents").status_code == 404
