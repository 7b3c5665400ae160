"""The rotations API in process: who is on call, shifts that tile a range, overrides."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Pager
from pager_actors.daemon.config import ApiToken, Config, ServerConfig
from pager_actors.daemon.http import create_app
from pager_actors.daemon.metrics import Metrics
from pager_actors.domain import SmsTarget
from pager_actors.domain.people import User
from pager_actors.oncall import Rotation
from pager_actors.oncall.directory import OnCall
from tests.conftest import two_level_policy

PEOPLE = [User("alice", "Alice", contacts=(SmsTarget("+33600000001"),)),
          User("bob", "Bob", contacts=(SmsTarget("+33600000002"),))]
ROTATION = Rotation("primary", "Europe/Paris", timedelta(days=1), datetime(2026, 3, 27, 9),
                    ("alice", "bob"))
READ, OPERATE = {"Authorization": "Bearer r"}, {"Authorization": "Bearer o"}


@pytest.fixture
def api():
    store = InMemoryStore()
    oncall = OnCall(PEOPLE, [ROTATION], store)
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    tokens = (ApiToken("r", "r", frozenset({"read"})), ApiToken("o", "o", frozenset({"operate"})))
    config = Config(source=Path("t.toml"), server=ServerConfig(tokens=tokens))
    with TestClient(create_app(pager, config, Metrics(pager, lambda: (0.0, 0.0)),
                               oncall=oncall)) as client:
        yield client, store
    pager.stop()


def test_who_is_on_call_with_times_in_the_rotations_zone(api):
    """oncall?at= answers the user and the shift's bounds, with offsets (23 h over DST)."""
    client, _ = api
    answer = client.get("/api/v1/rotations/primary/oncall",
                        params={"at": "2026-03-29T12:00:00+00:00"}, headers=READ).json()
    assert answer == {"user": "alice", "from": "2026-03-29T09:00:00+02:00",
                      "until": "2026-03-30T09:00:00+02:00", "override": False}
    listed = client.get("/api/v1/rotations", headers=READ).json()["rotations"]
    assert [r["id"] for r in listed] == ["primary"]
    assert client.get("/api/v1/rotations/nope/oncall", headers=READ).status_code == 404


def test_shifts_tile_the_range_and_overrides_apply(api):
    """An override is a shift of its own; past 1,000 shifts the range is refused."""
    client, store = api
    made = client.post("/api/v1/rotations/primary/overrides", headers=OPERATE, json={
        "user": "bob", "start": "2030-01-02T10:00:00+00:00", "end": "2030-01-02T12:00:00+00:00"})
    assert made.status_code == 201 and made.json()["user"] == "bob"
    shifts = client.get("/api/v1/rotations/primary/shifts", headers=READ, params={
        "from": "2030-01-02T00:00:00+00:00", "until": "2030-01-03T00:00:00+00:00"}).json()
    spans = [(s["user"], s["from"], s["until"], s["override"]) for s in shifts["shifts"]]
    assert spans[0][1] == "2030-01-02T01:00:00+01:00" and spans[-1][2] == \
        "2030-01-03T01:00:00+01:00"
    assert all(a[2] == b[1] for a, b in itertools.pairwise(spans))
    assert ("bob", "2030-01-02T11:00:00+01:00", "2030-01-02T13:00:00+01:00", True) in spans
    too_long = client.get("/api/v1/rotations/primary/shifts", headers=READ, params={
        "from": "2030-01-01T00:00:00+00:00", "until": "2033-01-01T00:00:00+00:00"})
    assert too_long.status_code == 400 and "1000" in too_long.json()["error"]
    assert store.overrides()["primary"][0].user == "bob"  # stored


@pytest.mark.parametrize("body,reason", [
    ({"user": "zoe", "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"},
     "no user 'zoe'"),
    ({"user": "bob", "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"},
     "after 'start'"),
    ({"user": "bob", "start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"},
     "already past"),
    ({"user": "bob", "start": "2030-01-01T00:00:00Z"}, "give 'user', 'start' and 'end'"),
])
def test_bad_overrides_are_400(api, body, reason):
    """The user must exist; the span must end after it starts, and not be over."""
    client, _ = api
    response = client.post("/api/v1/rotations/primary/overrides", headers=OPERATE, json=body)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_overrides_need_the_operate_scope_and_can_be_removed(api):
    """read may look, operate may change; DELETE removes, a second DELETE is 404."""
    client, _ = api
    body = {"user": "bob", "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}
    assert client.post("/api/v1/rotations/primary/overrides", headers=READ,
                       json=body).status_code == 403
    made = client.post("/api/v1/rotations/primary/overrides", headers=OPERATE, json=body).json()
    path = f"/api/v1/rotations/primary/overrides/{made['id']}"
    assert client.delete(path, headers=OPERATE).status_code == 200
    assert client.delete(path, headers=OPERATE).status_code == 404
