"""The console's stores are pluggable: nodes sharing them act as one console, and a store
that fails makes a 503 page, never a 500 or a lost action."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from pager_actors.console.limits import LoginLimiter
from pager_actors.console.sessions import SessionStore
from pager_actors.ports import StoreError
from tests.console.conftest import csrf_of, log_in, logged_in


class FailingSessions(SessionStore):
    """In-memory sessions whose `failing` calls raise StoreError, as a database that went
    away would."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failing: set[str] = set()

    def _maybe_fail(self, call: str) -> None:
        if call in self.failing:
            raise StoreError(f"PostgreSQL at db:5432/pager: {call} failed: connection lost")

    def get(self, session_id):
        self._maybe_fail("get")
        return super().get(session_id)

    def create(self, user):
        self._maybe_fail("create")
        return super().create(user)

    def set_flash(self, session, flash):
        self._maybe_fail("set_flash")
        super().set_flash(session, flash)

    def take_flash(self, session):
        self._maybe_fail("take_flash")
        return super().take_flash(session)


def test_two_apps_sharing_their_stores_and_key_act_as_one_console(site):
    """The seam itself: a login on one app is a session on the other, and its forms pass."""
    shared = {"sessions": SessionStore(clock=site.clock),
              "limiter": LoginLimiter(clock=site.clock), "login_key": b"k" * 32}
    first, second = site.app(**shared), site.app(**shared)
    client = logged_in(site.client(first))
    other = site.client(second)
    other.cookies = client.cookies
    page = other.get("/services/checkout")
    assert page.status_code == 200
    assert other.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert client.get("/").status_code == 303


def test_a_login_key_shorter_than_32_bytes_is_refused(site):
    """A weak shared key is a configuration error, found at start."""
    with pytest.raises(ValueError, match="32 bytes"):
        site.app(login_key=b"short")


def test_sessions_that_cannot_be_read_make_a_503_page(site):
    """The store fails: a 503 HTML page saying so, with Retry-After; not a login form."""
    sessions = FailingSessions(clock=site.clock)
    client = logged_in(site.client(site.app(sessions=sessions)))
    sessions.failing.add("get")
    page = client.get("/services/checkout")
    assert page.status_code == 503 and page.headers["retry-after"] == "5"
    assert "could not read its sessions" in page.text
    sessions.failing.clear()
    assert client.get("/services/checkout").status_code == 200


def test_a_login_whose_session_cannot_be_kept_is_a_503(site):
    """The password is right but no session can be made: 503, no cookie."""
    sessions = FailingSessions(clock=site.clock)
    sessions.failing.add("create")
    response = log_in(site.client(site.app(sessions=sessions)))
    assert response.status_code == 503
    assert not any(c.startswith("pager_session=")
                   for c in response.headers.get_list("set-cookie"))


def test_an_action_whose_message_cannot_be_kept_still_happened(site, caplog):
    """Maintenance starts; only the message is lost, and logged; the page still shows."""
    sessions = FailingSessions(clock=site.clock)
    client = logged_in(site.client(site.app(sessions=sessions)))
    page = client.get("/services/checkout").text
    sessions.failing.update({"set_flash", "take_flash"})
    end = (site.wall + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    with caplog.at_level(logging.WARNING, logger="pager_actors"):
        response = client.post("/services/checkout/maintenance",
                               data={"csrf": csrf_of(page), "end": end, "reason": "upgrade"})
        assert response.status_code == 303
        assert client.get("/services/checkout").status_code == 200
    assert [w.reason for w in site.pager.state("checkout").windows] == ["upgrade"]
    events = [r.getMessage().split()[0] for r in caplog.records]
    assert "console_flash_lost" in events and "console_flash_unread" in events
