"""Every form carries a CSRF token; a POST without the session's token gets 403 and
changes nothing."""

from __future__ import annotations

import pytest

from tests.console.conftest import csrf_of, logged_in

POSTS = [
    ("/services/checkout/acknowledge", {"incident": "1"}),
    ("/services/checkout/resolve", {"incident": "1"}),
    ("/services/checkout/maintenance", {"end": "2999-01-01T00:00", "reason": "x"}),
    ("/services/checkout/maintenance/1/end", {}),
    ("/logout", {}),
]


@pytest.fixture
def incident(site):
    site.pager.alert("checkout", "p99 above 2s").get(timeout=5)
    return site


def test_every_form_on_every_page_carries_the_session_token(incident):
    """Each <form method="post"> of the service page has the session's token."""
    client = logged_in(incident.client())
    page = client.get("/services/checkout").text
    forms = page.count('<form method="post"')
    assert forms >= 4  # logout, acknowledge, resolve, start maintenance
    assert page.count(f'name="csrf" value="{csrf_of(page)}"') == forms


@pytest.mark.parametrize("path,fields", POSTS)
@pytest.mark.parametrize("token", [None, "", "forged"])
def test_a_post_without_the_right_token_is_403_and_changes_nothing(incident, path, fields,
                                                                   token):
    """Missing, empty or wrong token: 403, the incident and the session stay as they were."""
    client = logged_in(incident.client())
    before = incident.pager.state("checkout")
    data = dict(fields) if token is None else {**fields, "csrf": token}
    response = client.post(path, data=data)
    assert response.status_code == 403
    assert "This form was refused" in response.text
    assert incident.pager.state("checkout") == before
    assert client.get("/").status_code == 200, "the session survives a refused form"


def test_another_sessions_token_is_refused(incident):
    """Bob's token does not work in Alice's session."""
    alice, bob = logged_in(incident.client()), logged_in(incident.client(), "bob")
    response = alice.post("/services/checkout/acknowledge",
                          data={"csrf": csrf_of(bob.get("/").text), "incident": "1"})
    assert response.status_code == 403
    assert not incident.pager.state("checkout").incident.acknowledged


def test_a_post_without_a_session_is_403(incident):
    """No session, any token: 403 (no redirect that would lose the form)."""
    response = incident.client().post("/services/checkout/acknowledge",
                                      data={"csrf": "anything", "incident": "1"})
    assert response.status_code == 403 and "Your session has ended" in response.text


def test_the_right_token_acts(incident):
    """The control: the same form with the page's token acknowledges."""
    client = logged_in(incident.client())
    token = csrf_of(client.get("/services/checkout").text)
    response = client.post("/services/checkout/acknowledge",
                           data={"csrf": token, "incident": "1"})
    assert response.status_code == 303
    assert incident.pager.state("checkout").incident.acknowledged_by == "console:Alice Martin"
