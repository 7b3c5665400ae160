"""Forwarded commands and their answers as JSON: every command a caller can send, outcomes
without effects, and errors rebuilt as themselves on the origin."""

from __future__ import annotations

import dataclasses
import importlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import state_json
from adapters.command_json import (
    FORWARDED,
    decode_answer,
    decode_command,
    encode_command,
    encode_error,
    encode_outcome,
)
from pager_actors.domain import (
    Acknowledge,
    EndMaintenance,
    Heartbeat,
    MonitoredService,
    PageFailed,
    PagerError,
    RaiseAlert,
    ReportHealthy,
    ResolveAlert,
    StartMaintenance,
    TimerFired,
    UnknownServiceError,
    decide,
)
from pager_actors.errors import (
    DeadLetterError,
    ForwardTimeoutError,
    NotOwnerError,
    OwnerFailedError,
    PagerOverloadedError,
    PagerStoppedError,
    ServiceQuarantinedError,
)
from pager_actors.ports import (
    Outcome,
    StoreError,
    TransitionRefusedError,
    VersionConflictError,
)
from tests.conftest import two_level_policy

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

keys = st.text(min_size=1, max_size=30).filter(str.isprintable)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)  # NUL included
people = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
incidents = st.none() | st.integers(min_value=0, max_value=2**62)
times = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]))
commands = st.one_of(
    st.builds(RaiseAlert, texts, keys),
    st.builds(ResolveAlert, keys, people),
    st.builds(Acknowledge, people, incidents),
    st.builds(ReportHealthy, people, incidents),
    st.just(Heartbeat()),
    st.builds(StartMaintenance, times, st.none() | times, texts),
    st.builds(EndMaintenance, st.integers(min_value=0, max_value=2**62)),
)


@settings(max_examples=300, deadline=None)
@given(commands)
def test_every_forwarded_command_comes_back_equal(command):
    """Any command a caller can send decodes to an equal command of the same type."""
    again = decode_command(encode_command(command))
    assert type(again) is type(command)
    assert again == command


def test_the_codec_knows_every_command_a_caller_can_send():
    """Every command of the domain but TimerFired and PageFailed is forwardable, so a new
    command cannot be forgotten here."""
    decide_module = importlib.import_module("pager_actors.domain.decide")
    every = {cls.__name__ for cls in vars(decide_module).values()
             if isinstance(cls, type) and dataclasses.is_dataclass(cls)
             and cls.__module__ == decide_module.__name__}
    assert set(FORWARDED) == every - {"TimerFired", "PageFailed"}


@pytest.mark.parametrize("command", [TimerFired("t"), PageFailed(1, 1, 1, 1, "mailto:a@b.c")])
def test_the_owners_own_commands_are_never_encoded(command):
    """A timer's firing and a page's failure are refused: they are never forwarded."""
    with pytest.raises(ValueError, match="never forwarded"):
        encode_command(command)


@pytest.mark.parametrize("text", [
    "not json", '{"type": "TimerFired"}', '{"type": "RaiseAlert"}',
    '{"type": "RaiseAlert", "message": "x", "colour": "red"}',
    '{"type": "RaiseAlert", "message": 5}',
    '{"type": "ResolveAlert", "key": ""}',
    '{"type": "StartMaintenance", "end": 5}',
])
def test_what_is_not_a_forwarded_command_is_refused(text):
    """Text that is not a forwardable command, or fails the command's checks, raises ValueError."""
    with pytest.raises(ValueError):
        decode_command(text)


def test_an_outcome_comes_back_with_its_state_and_without_effects():
    """The outcome's service, seq, event, reason and whole state (version included) travel;
    its effects do not."""
    decision = decide(MonitoredService("checkout", version=4), RaiseAlert("disk full", "disk"),
                      two_level_policy("checkout"), now=NOW, ack_timeout=timedelta(minutes=15))
    state = decision.service._replace(version=5)
    outcome = Outcome("checkout", 7, decision.event, decision.reason, state, decision.effects)
    assert decision.effects
    again = decode_answer(encode_outcome(outcome))
    assert again == outcome._replace(effects=())
    assert again.state.version == 5
    assert json.loads(encode_outcome(outcome))["outcome"]["state"] == state_json.encode(state)


@pytest.mark.parametrize("error", [
    UnknownServiceError("checkout"),
    NotOwnerError("checkout", 12),
    PagerOverloadedError("16 commands unsettled"),
    PagerStoppedError("the pager is stopped"),
    ServiceQuarantinedError("quarantined"),
    DeadLetterError("dropped"),
    StoreError("PostgreSQL at db:5432/pager: disk full"),
    TransitionRefusedError("checkout", "too big"),
    VersionConflictError("checkout", 3, 4),
    ForwardTimeoutError("checkout", 10, None),
    ValueError("bad key"),
])
def test_known_errors_come_back_as_themselves(error):
    """The engine's, the domain's and the store's errors, and ValueError, are rebuilt with
    their type, message and subject."""
    again = decode_answer(encode_error(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    for name in ("service_id", "shard", "applied"):
        assert getattr(again, name, None) == getattr(error, name, None)


def test_a_not_owner_error_keeps_its_service_and_shard():
    """NotOwnerError names the service and shard on the origin as on the owner."""
    again = decode_answer(encode_error(NotOwnerError("search", 40)))
    assert isinstance(again, NotOwnerError)
    assert (again.service_id, again.shard) == ("search", 40)


def test_any_other_error_becomes_owner_failed():
    """An error the origin cannot rebuild is an OwnerFailedError naming the owner's type and
    words: a PagerError, so callers treat it as the engine's."""
    again = decode_answer(encode_error(KeyError("boom")))
    assert isinstance(again, OwnerFailedError)
    assert isinstance(again, PagerError)
    assert str(again) == "the owner failed: KeyError: 'boom'"
