"""Shared fixtures: every test ends with all actors stopped."""

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
