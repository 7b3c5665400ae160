"""Shared fixtures: every test ends with all actors stopped; a real PostgreSQL for those that
ask for one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pykka
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import EmailTarget, EscalationPolicy, Level, Pager, SmsTarget
from tests.pg import PostgresServer, Unavailable

ONCALL_MAIL = EmailTarget("oncall@example.com")
ONCALL_SMS = SmsTarget("+33600000001")
BACKUP_SMS = SmsTarget("+33600000002")


def two_level_policy(service_id: str) -> EscalationPolicy:
    return EscalationPolicy(service_id, [Level([ONCALL_MAIL, ONCALL_SMS]), Level([BACKUP_SMS])])


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every actor after each test, and fail the test if one survives."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    leaked = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=10)
    assert not leaked, f"actors outlived the test: {leaked}"


@pytest.fixture
def policies() -> InMemoryPolicyRepository:
    return InMemoryPolicyRepository([two_level_policy("checkout"), two_level_policy("search")])


@pytest.fixture
def mail() -> RecordingMailSender:
    return RecordingMailSender()


@pytest.fixture
def sms() -> RecordingSmsSender:
    return RecordingSmsSender()


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


@pytest.fixture
def pager(policies, mail, sms, timer) -> Iterator[Pager]:
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer,
                        ack_timeout=timedelta(minutes=15))
    yield pager
    pager.stop()


def settle(futures, timeout: float = 5.0) -> list[object]:
    """Wait for the futures the ManualTimer returned (pager futures)."""
    return [f.get(timeout=timeout) for f in futures]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped at its end whatever happened; the
    tests that need it skip, with the reason, where it cannot run."""
    try:
        server = PostgresServer()
    except Unavailable as reason:
        pytest.skip(str(reason))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database for this test alone: its URL, password included."""
    name = postgres.create_database()
    yield postgres.dsn(name)
    postgres.drop_database(name)
