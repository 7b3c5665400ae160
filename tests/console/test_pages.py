"""The pages and their actions, in process: what a logged-in person sees and does."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pager_actors import EscalationPolicy, Level, SmsTarget
from pager_actors.daemon.config import Config, ServerConfig
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.errors import ServiceQuarantinedError
from tests.console.conftest import csrf_of, log_in, logged_in


def post(client: TestClient, path: str, **fields: str):
    page = client.get("/services/checkout").text
    return client.post(path, data={"csrf": csrf_of(page), **fields})


def flash(client: TestClient, path: str = "/services/checkout") -> str:
    found = re.search(r'class="flash[^"]*"[^>]*>([^<]*)<', client.get(path).text)
    assert found is not None, "no message on the page"
    return found.group(1)


def test_the_overview_puts_unacknowledged_incidents_first(site):
    """Unacknowledged, then acknowledged (with who), then healthy; it refreshes itself."""
    site.pager.alert("search", "index lag").get(timeout=5)
    site.pager.acknowledge("search", by="console:Bob Chen").get(timeout=5)
    site.pager.alert("checkout", "p99 above 2s", key="HighLatency").get(timeout=5)
    page = logged_in(site.client()).get("/").text
    assert page.index(">checkout<") < page.index(">search<")
    assert "Not acknowledged" in page and "Acknowledged by console:Bob Chen" in page
    assert "1 not acknowledged" in page and "<title>(1) Services · Pager</title>" in page
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "<code>HighLatency</code> p99 above 2s" in page


def test_the_overview_says_when_everything_is_healthy(site):
    """No incident: one calm line, every service listed as healthy."""
    page = logged_in(site.client()).get("/").text
    assert "All 2 services are healthy." in page
    assert page.count('<span class="ok">Healthy</span>') == 2


def test_the_service_page_masks_every_contact(site):
    """The policy shows masked contacts only; no full address or number in the HTML."""
    site.pager.alert("checkout", "down").get(timeout=5)
    site.pager.flush()
    page = logged_in(site.client()).get("/services/checkout").text
    assert "o***@example.com" in page and "+336****0001" in page
    for contact in ("oncall@example.com", "+33600000001", "+33600000002"):
        assert contact not in page


def test_the_service_page_shows_the_snapshot_when_the_policy_changed(site):
    """An incident opened under the old policy: both are shown, the snapshot first."""
    site.pager.alert("checkout", "down").get(timeout=5)
    site.policies.put(EscalationPolicy("checkout", [Level([SmsTarget("+33611111111")])]))
    page = logged_in(site.client()).get("/services/checkout").text
    assert "escalates along the policy in force when it opened" in page
    assert "+336****1111" in page and "+336****0002" in page


def test_acknowledge_and_resolve_name_the_console_user(site):
    """Both actions record `console:<name>`; the page says what happened."""
    site.pager.alert("checkout", "down").get(timeout=5)
    client = logged_in(site.client())
    assert post(client, "/services/checkout/acknowledge", incident="1").status_code == 303
    assert flash(client) == "You acknowledged incident #1: escalation stopped."
    page = client.get("/services/checkout").text
    assert "acknowledged by console:Alice Martin" in page
    assert re.search(r'class="what">Acknowledged</span>\s*<span class="details">level 1, '
                     r"round 1 · by console:Alice Martin", page)
    assert post(client, "/services/checkout/acknowledge", incident="1").status_code == 303
    assert flash(client) == "Incident #1 was already acknowledged by console:Alice Martin."
    assert post(client, "/services/checkout/resolve", incident="1").status_code == 303
    assert flash(client) == "Incident #1 resolved."
    [entry] = [e for e in site.pager.timeline("checkout", 1) if e.event == "resolved"]
    assert entry.by == "console:Alice Martin"


def test_an_action_on_an_incident_no_longer_open_does_nothing(site):
    """The page showed #1; #2 is open now: the console says so and acknowledges nothing."""
    site.pager.alert("checkout", "down").get(timeout=5)
    client = logged_in(site.client())
    token = csrf_of(client.get("/services/checkout").text)
    site.pager.healthy("checkout").get(timeout=5)
    site.pager.alert("checkout", "down again").get(timeout=5)
    response = client.post("/services/checkout/acknowledge",
                           data={"csrf": token, "incident": "1"})
    assert response.status_code == 303
    assert "incident #2 is open now" in flash(client)
    assert not site.pager.state("checkout").incident.acknowledged


def test_maintenance_starts_and_ends_from_the_page(site):
    """A window until a UTC time, with a reason; then ended early."""
    client = logged_in(site.client())
    end = (site.wall + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = post(client, "/services/checkout/maintenance", end=end, reason="db upgrade")
    assert response.status_code == 303
    assert flash(client).startswith("Maintenance window 1 runs until ")
    [window] = site.pager.state("checkout").windows
    assert window.reason == "db upgrade"
    assert window.end == datetime.fromisoformat(end).replace(tzinfo=UTC)
    page = client.get("/services/checkout").text
    assert "End window 1 now" in page and "db upgrade" in page
    assert post(client, "/services/checkout/maintenance/1/end").status_code == 303
    assert flash(client) == "Maintenance window 1 ended: alerts still firing page now."
    assert site.pager.state("checkout").windows == ()


@pytest.mark.parametrize("end,reason,says", [
    ("", "", "give the end as a date and time"),
    ("yesterday", "", "give the end as a date and time"),
    ("2000-01-01T00:00", "", "is already past"),
    ("2999-01-01T00:00", "", "at most 7 days"),
    ("SOON", "x" * 201, "the reason is at most 200 printable characters"),
    ("SOON", "bell\x07", "the reason is at most 200 printable characters"),
])
def test_a_bad_window_is_explained_and_not_started(site, end, reason, says):
    """Past, too long, unreadable, or a reason too long: the page says why; no window."""
    client = logged_in(site.client())
    if end == "SOON":
        end = (site.wall + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    post(client, "/services/checkout/maintenance", end=end, reason=reason)
    assert says in flash(client)
    assert site.pager.state("checkout").windows == ()


def test_history_and_one_incident_with_its_timeline(site):
    """Closed incidents are listed, newest first, and each opens with its timeline."""
    for n in range(2):
        site.pager.alert("checkout", f"outage {n + 1}").get(timeout=5)
        site.pager.healthy("checkout", by="api").get(timeout=5)
    client = logged_in(site.client())
    page = client.get("/services/checkout/incidents").text
    assert page.index(">#2<") < page.index(">#1<") and "outage 1" in page
    one = client.get("/services/checkout/incidents/1").text
    assert "incident #1" in one and "Incident opened" in one and "by api" in one
    missing = client.get("/services/checkout/incidents/9")
    assert missing.status_code == 404 and "No such incident" in missing.text


def test_unknown_pages_and_services_are_html_404s(site):
    """A person gets a page, not JSON, outside the API."""
    client = logged_in(site.client())
    for path in ("/services/nope", "/nowhere", "/services/nope/incidents"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
    assert post(client, "/services/nope/maintenance/1/end").status_code == 404


def test_pages_forbid_framing_and_outside_resources(site):
    """CSP: nothing from elsewhere, no framing, forms post here; no caching of pages."""
    response = logged_in(site.client()).get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "form-action 'self'" in policy and response.headers["cache-control"] == "no-store"
    css = site.client().get(re.search(r'href="(/static/console\.css\?v=\w+)"',
                                      response.text).group(1))
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_every_field_has_a_label_and_the_page_a_language(site):
    """Accessible markup: lang, one h1, a label for each visible input."""
    site.pager.alert("checkout", "down").get(timeout=5)
    client = logged_in(site.client())
    for path in ("/", "/services/checkout", "/login"):
        page = (client if path != "/login" else site.client()).get(path).text
        assert '<html lang="en">' in page and page.count("<h1") == 1
        visible = re.findall(r'<input id="([^"]+)"', page)
        for field in visible:
            assert f'<label for="{field}"' in page, f"{path}: #{field} has no label"


@pytest.fixture
def daemon_app(site):
    """The daemon's app with an API token and the console mounted, as run.py builds it."""
    config = Config(source=Path("t.toml"), server=ServerConfig(token="api-token"))
    app = create_app(site.pager, config, Metrics(site.pager, lambda: (0.0, 0.0)),
                     services=site.policies.service_ids, console=site.app())
    return TestClient(app, follow_redirects=False)


def test_the_api_stays_json_and_the_console_gets_the_rest(daemon_app):
    """Mounted: /api/ answers JSON (401, 404), probes unchanged, the rest is the console."""
    assert daemon_app.get("/api/v1/nowhere").json() == {"error": "missing or wrong bearer token"}
    headers = {"Authorization": "Bearer api-token"}
    missing = daemon_app.get("/api/v1/nowhere", headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert daemon_app.get("/healthz").json() == {"status": "ok"}
    assert daemon_app.get("/").status_code == 303
    page = daemon_app.get("/nowhere")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_a_console_session_does_not_reach_the_api(daemon_app):
    """Logged in, without the token: the API still answers 401."""
    assert log_in(daemon_app).status_code == 303
    assert daemon_app.get("/").status_code == 200
    assert daemon_app.get("/api/v1/services").status_code == 401
    assert daemon_app.post("/api/v1/services/checkout/acknowledge").status_code == 401


def test_the_api_token_does_not_open_the_console(daemon_app):
    """The API's bearer token on a console page: sent to the login form."""
    response = daemon_app.get("/", headers={"Authorization": "Bearer api-token"})
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_a_service_that_cannot_be_read_does_not_hide_the_others(site, monkeypatch):
    """One service's state fails (quarantined): it is listed apart with the reason, and
    every other service is shown as usual."""
    site.pager.alert("checkout", "down").get(timeout=5)
    real = site.pager.state

    def state(service_id, timeout=5.0):
        if service_id == "search":
            raise ServiceQuarantinedError("search is quarantined for 300 s")
        return real(service_id, timeout)

    monkeypatch.setattr(site.pager, "state", state)
    page = logged_in(site.client()).get("/")
    assert page.status_code == 200
    assert "Cannot tell" in page.text and "search is quarantined for 300 s" in page.text
    assert "Not acknowledged" in page.text


def test_an_open_incidents_own_page_has_its_buttons(site):
    """The page a mail links to (/services/{id}/incidents/{n}) acts while n is open."""
    site.pager.alert("checkout", "down").get(timeout=5)
    client = logged_in(site.client())
    page = client.get("/services/checkout/incidents/1").text
    assert re.search(r"Incident #1:\s*not acknowledged", page)
    assert ">Acknowledge</button>" in page
    response = client.post("/services/checkout/acknowledge",
                           data={"csrf": csrf_of(page), "incident": "1"})
    assert response.status_code == 303
    site.pager.healthy("checkout").get(timeout=5)
    closed = client.get("/services/checkout/incidents/1").text
    assert ">Acknowledge</button>" not in closed and ">Resolve</button>" not in closed
