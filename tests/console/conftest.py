"""The console in process: a Pager with fakes, the console app, cheap password hashes and
a clock the tests move by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import argon2
import pytest
from starlette.testclient import TestClient

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Pager
from pager_actors.console import create_console
from pager_actors.domain.people import User
from tests.conftest import two_level_policy

PASSWORD = "correct horse"
# The same algorithm as `hash-password`, at the lowest cost: the tests log in often.
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cheap_hash(password: str = PASSWORD) -> str:
    return CHEAP.hash(password)


class Clock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Site:
    """The console under test and what it stands on."""

    pager: Pager
    policies: InMemoryPolicyRepository
    users: list[User]
    clock: Clock
    wall: datetime
    apps: list[object] = field(default_factory=list)

    def app(self, **options):
        app = create_console(self.pager, service_ids=self.policies.service_ids,
                             policy=self.policies.get, users=lambda: self.users,
                             ack_timeout=timedelta(minutes=15), clock=self.clock,
                             now=lambda: self.wall, **options)
        self.apps.append(app)
        return app

    def client(self, app=None, **options) -> TestClient:
        return TestClient(app or self.app(), follow_redirects=False, **options)


@pytest.fixture
def site():
    policies = InMemoryPolicyRepository([two_level_policy("checkout"),
                                         two_level_policy("search")])
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), max_in_flight=0)
    users = [User("alice", "Alice Martin", cheap_hash()), User("bob", "Bob Chen", cheap_hash()),
             User("carol", "Carol Contact-Only")]
    yield Site(pager, policies, users, Clock(), datetime.now(UTC))
    pager.stop()


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]*)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def log_in(client: TestClient, user: str = "alice", password: str = PASSWORD,
           next_page: str = "/"):
    """The login form, filled in and posted as a browser would."""
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf": token, "user": user, "password": password,
                                       "next": next_page})


def logged_in(client: TestClient, user: str = "alice") -> TestClient:
    response = log_in(client, user)
    assert response.status_code == 303, response.text
    return client
