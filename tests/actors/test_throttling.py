"""Throttling and bundling per contact, through the actors: recording senders, a manual
throttle clock (wake-ups run when the test advances it), the in-memory, SQLite and PostgreSQL
stores."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualClock,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.postgres import PostgresStore
from adapters.sqlite import SqliteStore
from pager_actors import (
    EmailTarget,
    EscalationPolicy,
    Level,
    Pager,
    RetryPolicy,
    SmsTarget,
    Throttle,
    Throttling,
)
from pager_actors.domain import PageFormat
from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError

PHONE = SmsTarget("+33600000001")
MAIL = EmailTarget("oncall@example.com")
MINUTE = timedelta(minutes=1)
SERVICES = [f"svc{n:02}" for n in range(20)]


def policies(*levels: Level) -> InMemoryPolicyRepository:
    return InMemoryPolicyRepository(
        [EscalationPolicy(sid, list(levels or (Level([PHONE]), Level([MAIL]))))
         for sid in SERVICES])


class World:
    """A pager on `store` throttling SMS to 1 a minute (and mail as asked), on `clock`."""

    def __init__(self, store, sms=None, mail_throttle=None, repo=None, **options) -> None:
        self.store = store
        self.clock = ManualClock()
        self.mail, self.sms = RecordingMailSender(), sms or RecordingSmsSender()
        self.pager = Pager.start(
            policies=repo or policies(), mail=self.mail, sms=self.sms, timer=ManualTimer(),
            store=store, throttle=Throttling(sms=Throttle(1, MINUTE), mail=mail_throttle,
                                             clock=self.clock), **options)

    def alert_all(self, services=SERVICES) -> None:
        for future in [self.pager.alert(sid, "disk full") for sid in services]:
            future.get(timeout=5)
        self.pager.flush(timeout=5)

    def advance(self, by: timedelta) -> None:
        self.clock.advance(by.total_seconds())
        self.pager.flush(timeout=5)

    def rows(self) -> dict[str, tuple[str, str | None]]:
        """Each outbox row's (status, carried_by), by service (SMS rows only)."""
        if hasattr(self.store, "outbox"):  # the SQL stores' rows
            return {r["service_id"]: (r["status"], r["carried_by"]) for r in self.store.outbox()
                    if r["target"] == PHONE.uri and "/status/" not in r["delivery_id"]}
        pending = {n.key for n in self.store.undelivered()}
        rows = {}
        for key in self._keys():
            status = "pending" if key in pending else "withdrawn" \
                if key in self.store.withdrawn else "failed" if key in self.store.failed \
                else "delivered"
            rows[key.split("/")[0]] = (status, self.store.carried_by.get(key))
        return rows

    def _keys(self) -> list[str]:
        return [f"{sid}/1/r1/l1/p1/{PHONE.uri}" for sid in SERVICES]

    def stop(self) -> None:
        self.pager.stop()
        self.store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        return PostgresStore(request.getfixturevalue("pg_dsn"))
    return InMemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "p.db")


def first_service(text: str) -> str:
    return re.match(r"\[(svc\d\d)\] level 1 page", text)[1]


def bundled(text: str, count: int) -> list[str]:
    """The names a bundle SMS lists, checking its head."""
    head = f"{count} more pages: "
    assert text.startswith(head), text
    return text.removeprefix(head).split(", ")


def test_a_burst_of_20_incidents_to_one_phone_gives_one_sms_now_and_one_bundle_later(store):
    """1 SMS at once; the other 19 pages wait and go out as one bundle once the window
    passes; every row is settled, the bundled ones carried_by the bundle."""
    world = World(store)
    world.alert_all()
    assert len(world.sms.sent) == 1
    first = first_service(world.sms.sent[0].text)
    assert world.pager.mailbox_depths()["sms"] == 19  # held pages are still waiting
    world.advance(MINUTE - timedelta(seconds=1))
    assert len(world.sms.sent) == 1
    world.advance(timedelta(seconds=1))
    assert len(world.sms.sent) == 2
    names = bundled(world.sms.sent[1].text, 19)
    assert sorted(names) == [f"{sid} L1 #1" for sid in SERVICES if sid != first]
    rows = world.rows()
    assert rows.pop(first) == ("delivered", None)
    carriers = {carrier for status, carrier in rows.values() if status == "delivered"}
    assert len(rows) == 19 and len(carriers) == 1 and carriers.pop().startswith("bundle/")
    assert world.store.undelivered() == []
    timeline = world.pager.timeline("svc07", 1)
    assert [e.event for e in timeline][-1] == "delivered"
    assert world.pager.mailbox_depths()["sms"] == 0
    world.advance(MINUTE * 5)
    assert len(world.sms.sent) == 2  # nothing more to send
    world.stop()


def test_an_ack_before_the_bundle_goes_out_withdraws_that_incidents_page(store):
    """The acked incident's page leaves the bundle (row `withdrawn`, timeline says so); its
    status updates are never withdrawn, not even by the close that follows: they ride in
    the bundle."""
    world = World(store, page_format=PageFormat(status_updates=True))
    world.alert_all()
    first = first_service(world.sms.sent[0].text)
    acked = next(sid for sid in SERVICES if sid != first)
    world.pager.acknowledge(acked, by="alice").get(timeout=5)
    world.pager.flush(timeout=5)
    assert world.rows()[acked] == ("withdrawn", None)
    assert [e.event for e in world.pager.timeline(acked, 1)][-3:] == [
        "paged", "acknowledged", "withdrawn"]
    world.pager.healthy(acked).get(timeout=5)
    world.advance(MINUTE)
    assert len(world.sms.sent) == 2
    names = bundled(world.sms.sent[1].text, 20)
    assert f"{acked} L1 #1" not in names
    assert {f"{acked} #1 acknowledged", f"{acked} #1 resolved"} <= set(names)
    assert world.store.undelivered() == []
    world.stop()


def test_a_page_already_sent_is_not_withdrawn_by_an_ack():
    """Only pages still waiting are withdrawn: the one that went out stays delivered."""
    world = World(InMemoryStore())
    world.alert_all(SERVICES[:2])
    first = first_service(world.sms.sent[0].text)
    world.pager.acknowledge(first).get(timeout=5)
    world.pager.flush(timeout=5)
    assert world.rows()[first] == ("delivered", None)
    assert "withdrawn" not in [e.event for e in world.pager.timeline(first, 1)]
    world.stop()


def test_a_failed_bundle_tells_every_pages_service(store):
    """A bundle the gateway refuses fails each of its pages: each level escalates at once."""

    class RefusesBundles(RecordingSmsSender):
        def send_sms(self, to, text):
            if "more pages" in text:
                raise PermanentDeliveryError("400 refused")
            super().send_sms(to, text)

    world = World(store, sms=RefusesBundles(), repo=policies(Level([PHONE]), Level([MAIL])))
    world.alert_all(SERVICES[:4])
    world.advance(MINUTE)
    world.pager.flush(timeout=5)
    first = first_service(world.sms.sent[0].text)
    others = [sid for sid in SERVICES[:4] if sid != first]
    assert {world.pager.status(sid).level for sid in others} == {2}
    assert world.pager.status(first).level == 1
    assert sorted(m.subject.split("]")[0][1:] for m in world.mail.sent) == others
    assert {world.rows()[sid][0] for sid in others} == {"failed"}
    world.stop()


def test_mail_is_throttled_on_its_own_limit_and_bundled_in_one_mail():
    """Mail at 2 a minute: two mails go, the third to fifth pages make one mail with a
    one-line Subject listing them."""
    repo = policies(Level([MAIL]))
    world = World(InMemoryStore(), repo=repo, mail_throttle=Throttle(2, MINUTE))
    world.alert_all(SERVICES[:5])
    assert len(world.mail.sent) == 2
    world.advance(MINUTE)
    assert len(world.mail.sent) == 3
    bundle = world.mail.sent[2]
    assert bundle.subject.startswith("[pager] 3 more pages: ") and "\n" not in bundle.subject
    assert bundle.body.count("level 1 page, incident #1") == 3
    world.stop()


def test_a_retry_does_not_wait_for_the_window():
    """A transient failure's retry goes out at its backoff, though the phone is held."""

    class FlakyOnce(RecordingSmsSender):
        failed = False

        def send_sms(self, to, text):
            if not self.failed:
                self.failed = True
                raise TransientDeliveryError("503")
            super().send_sms(to, text)

    world = World(InMemoryStore(), sms=FlakyOnce(),
                  retry=RetryPolicy(attempts=3, backoff=0.01, jitter=lambda: 1.0))
    world.alert_all(SERVICES[:3])  # flush waits for the retry, which is not held
    assert len(world.sms.sent) == 1 and "level 1 page" in world.sms.sent[0].text
    assert world.pager.mailbox_depths()["sms"] == 2
    world.advance(MINUTE)
    assert len(world.sms.sent) == 2 and world.sms.sent[1].text.startswith("2 more pages")
    world.stop()


def test_held_pages_do_not_hold_up_stop_and_stay_pending_for_the_next_start():
    """stop() does not wait for a window: the held rows stay pending."""
    store = InMemoryStore()
    world = World(store)
    world.alert_all(SERVICES[:3])
    world.pager.stop(timeout=5)
    assert len(world.sms.sent) == 1
    assert len([n for n in store.undelivered() if n.target == PHONE]) == 2


def test_the_throttle_survives_a_restart_on_sqlite(tmp_path):
    """A second pager on the same file, within the window, holds the next page until the
    window the first pager's send opened has passed."""
    first = World(SqliteStore(tmp_path / "p.db"))
    first.alert_all(SERVICES[:1])
    assert len(first.sms.sent) == 1
    first.stop()
    second = World(SqliteStore(tmp_path / "p.db"))
    second.alert_all(SERVICES[1:2])
    assert second.sms.sent == [] and second.pager.mailbox_depths()["sms"] == 1
    second.advance(MINUTE)
    assert [first_service(s.text) for s in second.sms.sent] == ["svc01"]
    second.stop()


def test_without_a_throttle_nothing_is_held_or_withdrawn():
    """The library's default: 20 pages to one phone are 20 SMS, and an ack withdraws
    nothing."""
    sms = RecordingSmsSender()
    pager = Pager.start(policies=policies(), mail=RecordingMailSender(), sms=sms,
                        timer=ManualTimer())
    for future in [pager.alert(sid, "disk full") for sid in SERVICES]:
        future.get(timeout=5)
    pager.acknowledge(SERVICES[-1]).get(timeout=5)
    pager.flush(timeout=5)
    assert len(sms.sent) == 20
    assert pager.stats().get("pages_withdrawn", 0) == 0
    pager.stop()
