"""Forwarded commands and their answers as JSON, for the `commands` table (issue 11).

A command is `{"type": <class name>, <field>: <value>, ...}`; times are ISO 8601
with their offset. Only the commands a caller sends can be forwarded: a timer's
firing and a page's failure are their owner's own (`pager_actors._shards.not_here`),
so `TimerFired` and `PageFailed` are refused (ValueError). Decoding builds the
dataclass, so its own checks run again on the owner.

An answer is `{"outcome": ...}` or `{"error": ...}`:

- an `Outcome` carries its service, seq, event, reason and state (`state_json`,
  with the state's version), but not its effects: the origin gets `effects=()`.
  Nothing that answers a caller reads them (the HTTP API, the console and the
  SMS/link replies read `event`, `reason` and `state`); the effects are the
  owner's to carry out, and it did.
- an error carries its type's name, its message, and the `service_id` and `shard`
  it names, if any. The engine's, the domain's and the store's errors are rebuilt
  as themselves, with the owner's message, so the origin's callers (and the
  daemon's status codes) see no difference; any other error becomes
  `OwnerFailedError` naming the owner's type.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from adapters import state_json
from pager_actors.domain import (
    Acknowledge,
    Command,
    EndMaintenance,
    Heartbeat,
    PagerError,
    RaiseAlert,
    ReportHealthy,
    ResolveAlert,
    StartMaintenance,
    UnknownServiceError,
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
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    TransitionRefusedError,
    VersionConflictError,
)

# Every command a caller can send, by the name that goes on the wire.
FORWARDED: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    RaiseAlert, ResolveAlert, Acknowledge, ReportHealthy, Heartbeat, StartMaintenance,
    EndMaintenance)}

# Errors the origin raises as themselves (subclasses before their bases does not matter:
# the name is matched exactly).
KNOWN_ERRORS: dict[str, type[BaseException]] = {cls.__name__: cls for cls in (
    UnknownServiceError, NotOwnerError, PagerOverloadedError, PagerStoppedError,
    ServiceQuarantinedError, DeadLetterError, ForwardTimeoutError, StoreError,
    TransitionRefusedError, VersionConflictError, StoreCorruptError, StoreLockedError,
    PagerError, ValueError)}

# The attributes an error names its subject by, carried when present.
_ERROR_FIELDS = ("service_id", "shard", "applied", "timeout")


def encode_command(command: Command) -> str:
    """The command as JSON; ValueError for a command that is never forwarded."""
    name = type(command).__name__
    if FORWARDED.get(name) is not type(command):
        raise ValueError(f"a {name} is never forwarded")
    data: dict[str, Any] = {"type": name}
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        data[field.name] = value.isoformat() if isinstance(value, datetime) else value
    return json.dumps(data, separators=(",", ":"))


def decode_command(text: str) -> Command:
    """The command back; ValueError if the text is not one (or fails the command's checks)."""
    try:
        data = json.loads(text)
        cls = FORWARDED[data.pop("type")]
        fields = {field.name: field for field in dataclasses.fields(cls)}
        if not set(data) <= set(fields):
            raise ValueError(f"unknown fields {sorted(set(data) - set(fields))}")
        values = {name: _time(value) if "datetime" in str(fields[name].type) else value
                  for name, value in data.items()}
        command: Command = cls(**values)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a forwarded command: {error!r}") from None
    return command


def encode_outcome(outcome: Outcome) -> str:
    """The outcome as an answer, without its effects."""
    state = outcome.state
    return json.dumps({"outcome": {
        "service_id": outcome.service_id, "seq": outcome.seq, "event": outcome.event,
        "reason": outcome.reason, "version": state.version,
        "state": state_json.encode(state)}}, separators=(",", ":"))


def encode_error(error: BaseException) -> str:
    """The error as an answer: its type's name, its message and the subject it names."""
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    for name in _ERROR_FIELDS:
        value = getattr(error, name, None)
        if isinstance(value, str | int | float | bool):
            data[name] = value
    return json.dumps({"error": data}, separators=(",", ":"))


def decode_answer(text: str) -> Outcome | BaseException:
    """An answer back: the owner's Outcome (with `effects=()`), or the error to raise."""
    data = json.loads(text)
    if "outcome" in data:
        found = data["outcome"]
        state = state_json.decode(found["service_id"], found["version"], found["state"])
        return Outcome(found["service_id"], found["seq"], found["event"], found["reason"],
                       state, ())
    return decode_error(data["error"])


def decode_error(data: dict[str, Any]) -> BaseException:
    """The owner's error rebuilt as itself, with its message; OwnerFailedError if unknown."""
    kind, message = str(data.get("type")), str(data.get("message"))
    cls = KNOWN_ERRORS.get(kind)
    if cls is None:
        return OwnerFailedError(kind, message)
    # Built without its __init__, whose arguments vary (a version conflict's counts): the
    # owner's message is kept word for word and the subject's attributes are set again.
    error = cls.__new__(cls)
    BaseException.__init__(error, message)
    for name in _ERROR_FIELDS:
        if name in data:
            setattr(error, name, data[name])
    return error


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    return datetime.fromisoformat(value)
