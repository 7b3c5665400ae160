"""Throttling in the domain: acks and closes withdraw an incident's waiting pages, and what a
bundle of held pages says, within each channel's limits (no threads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pager_actors.domain import (
    Acknowledge,
    EmailTarget,
    EscalationPolicy,
    Level,
    MonitoredService,
    Notify,
    PageFormat,
    RaiseAlert,
    ReportHealthy,
    ResolveAlert,
    SmsTarget,
    TimerFired,
    Withdraw,
    decide,
)
from pager_actors.domain.bundle import bundle_mail, bundle_sms, label
from pager_actors.domain.texts import MAIL_BODY_MAX_BYTES, SMS_MAX_CHARS, SUBJECT_MAX_CHARS

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
MAIL, PHONE = EmailTarget("a@example.com"), SmsTarget("+33600000001")


def run(*commands, service="checkout", fmt=PageFormat(status_updates=True),  # noqa: B008
        code=None):
    policy = EscalationPolicy(service, [Level([MAIL, PHONE]), Level([PHONE])])
    state, decisions = MonitoredService(service), []
    for command in commands:
        decision = decide(state, command, policy, now=T0, ack_timeout=timedelta(minutes=15),
                          fmt=fmt, next_code=code)
        state = decision.service
        decisions.append(decision)
    return decisions


def actions(decision) -> list[str]:
    """The decision's effects that reach the dispatcher, by kind."""
    return [type(e).__name__ if not isinstance(e, Notify) else "status" if "/status/" in e.key
            else "page" for e in decision.effects if type(e).__name__ != "Record"]


def test_an_ack_withdraws_the_incidents_pages_before_its_status_updates():
    """Withdraw(service, incident, contacts paged) comes before the status updates the ack
    sends."""
    _, acked = run(RaiseAlert("disk"), Acknowledge("alice"))
    assert acked.effects[1] == Withdraw("checkout", 1, (MAIL.uri, PHONE.uri))
    assert actions(acked) == ["Withdraw", "status", "status"]


def test_closing_an_incident_withdraws_its_pages_too():
    """A last resolved key and an operator's healthy both withdraw, before status updates."""
    for close in (ResolveAlert("default"), ReportHealthy()):
        _, closed = run(RaiseAlert("disk"), close)
        assert actions(closed) == ["Withdraw", "status", "status"]
        assert Withdraw("checkout", 1, (MAIL.uri, PHONE.uri)) in closed.effects


def test_the_withdrawal_also_looks_where_the_fallback_waits():
    """An exhausted incident paged the fallback, which `paged` does not hold: its lane is
    named too."""
    backup = SmsTarget("+33600000009")
    fmt = PageFormat(fallback=(backup,))
    *_, acked = run(RaiseAlert("disk"), TimerFired(), TimerFired(), Acknowledge(), fmt=fmt)
    [withdraw] = [e for e in acked.effects if isinstance(e, Withdraw)]
    assert withdraw.contacts == (MAIL.uri, PHONE.uri, backup.uri)


def test_an_ignored_ack_withdraws_nothing():
    """No open incident, or an ack of an acked incident: no effect at all."""
    [nothing] = run(Acknowledge())
    assert nothing.effects == ()
    *_, again = run(RaiseAlert("disk"), Acknowledge(), Acknowledge())
    assert again.effects == ()


def pages(count: int, service: str = "checkout") -> list[Notify]:
    """The level-1 SMS page of `count` incidents, one per service."""
    found = []
    for n in range(count):
        [opened] = run(RaiseAlert(f"disk {n}"), service=f"{service}{n}")
        found += [e for e in opened.effects if isinstance(e, Notify) and e.target == PHONE]
    return found


def test_an_sms_bundle_names_each_page():
    """`3 more pages: checkout0 L1 #1, …`; a status update is named by what it says."""
    *_, acked = run(RaiseAlert("disk"), Acknowledge("alice"))
    update = next(e for e in acked.effects if isinstance(e, Notify) and e.target == PHONE)
    assert label(update) == "checkout #1 acknowledged"
    text = bundle_sms([*pages(2), update])
    assert text == "3 more pages: checkout0 L1 #1, checkout1 L1 #1, checkout #1 acknowledged"


def test_an_sms_bundle_lists_each_incidents_own_reply_code():
    """When replies can arrive, each page in the bundle names its incident's code, and the
    message says how to use them."""
    fmt = PageFormat(reply_codes=True)
    held = [e for n, code in enumerate(("4821", "7730"))
            for e in run(RaiseAlert("disk"), service=f"svc{n}", fmt=fmt, code=code)[0].effects
            if isinstance(e, Notify) and e.target == PHONE]
    assert [p.reply_code for p in held] == ["4821", "7730"]
    assert bundle_sms(held) == ("2 more pages: svc0 L1 #1 code 4821, svc1 L1 #1 code 7730. "
                                "Reply ACK or RES and a code.")
    assert all(p.reply_code is None for p in pages(2))


def test_a_long_sms_bundle_keeps_whole_names_within_1600_characters():
    """Past 1,600 characters the list ends with `…` after the last name that fits."""
    many = pages(200, service="a-rather-long-service-name-")
    text = bundle_sms(many)
    assert len(text) <= SMS_MAX_CHARS and text.startswith("200 more pages: ")
    names = text.removeprefix("200 more pages: ").split(", ")
    assert names[-1] == "…" and names[:-1] == [label(p) for p in many[:len(names) - 1]]
    coded = [p._replace(reply_code="4821") for p in many]
    text = bundle_sms(coded)
    assert len(text) <= SMS_MAX_CHARS and text.endswith(", …. Reply ACK or RES and a code.")


def test_a_mail_bundle_has_a_one_line_subject_and_every_page_in_its_body():
    """Subject: one line, at most 200 characters; body: the list, then each page's
    headline and text."""
    mails = []
    for n in range(30):
        [opened] = run(RaiseAlert(f"disk full\non host {n}"), service=f"svc{n}")
        mails += [e for e in opened.effects if isinstance(e, Notify) and e.target == MAIL]
    subject, body = bundle_mail(mails)
    assert subject.startswith("[pager] 30 more pages: svc0 L1 #1, svc1 L1 #1")
    assert len(subject) <= SUBJECT_MAX_CHARS and "\n" not in subject
    assert "- svc29 L1 #1" in body and "disk full\non host 29" in body
    assert mails[0].subject in body


def test_a_mail_bundle_body_stays_within_64_kib():
    """However much the pages say, the body is cut at 64 KiB."""
    mails = []
    for n in range(5):
        [opened] = run(RaiseAlert("é" * 40_000), service=f"svc{n}")
        mails += [e for e in opened.effects if isinstance(e, Notify) and e.target == MAIL]
    _, body = bundle_mail(mails)
    assert len(body.encode()) <= MAIL_BODY_MAX_BYTES and body.endswith("…")
