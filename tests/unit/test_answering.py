"""Answering a page, in the domain and the code table: reply codes, links in mails, acks
that name their incident, status updates (no threads)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from pager_actors._codes import ReplyCodes
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
    SmsTarget,
    decide,
)
from pager_actors.domain.links import LinkKey, Links, verify

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
POLICY = EscalationPolicy("checkout", [Level([EmailTarget("a@example.com"),
                                              SmsTarget("+33600000001")])])
LINKS = Links("https://pager.example.com", (LinkKey(b"s" * 32),))


def run(*commands, fmt=PageFormat(), code="4821"):  # noqa: B008 - an immutable value
    state, decisions = MonitoredService("checkout"), []
    for command in commands:
        decision = decide(state, command, POLICY, now=T0, ack_timeout=timedelta(minutes=15),
                          fmt=fmt, next_code=code)
        state = decision.service
        decisions.append(decision)
    return decisions


def sent(decision) -> list[Notify]:
    return [e for e in decision.effects if isinstance(e, Notify)]


def test_an_sms_page_ends_with_its_reply_code_when_replies_are_on():
    """"Reply ACK 4821 ..." closes the SMS; the mail has no code; without replies, no code."""
    [opened] = run(RaiseAlert("disk"), fmt=PageFormat(reply_codes=True))
    mail, sms = sent(opened)
    assert sms.text.endswith("Reply ACK 4821 to acknowledge, RES 4821 to resolve.")
    assert "4821" not in mail.text
    assert opened.service.incident.reply_code == "4821"
    [plain] = run(RaiseAlert("disk"))
    assert "Reply" not in sent(plain)[1].text and plain.service.incident.reply_code is None


def test_the_reply_code_is_never_cut_from_a_long_alert():
    """The alert's text is cut; the pager's own words are kept whole."""
    [opened] = run(RaiseAlert("x" * 5000), fmt=PageFormat(reply_codes=True,
                                                          sms_message_chars=20))
    assert sent(opened)[1].text.endswith("RES 4821 to resolve.")


def test_each_mail_carries_its_own_signed_links():
    """Acknowledge and Resolve links, bound to the mail's target, plus the incident's page."""
    [opened] = run(RaiseAlert("disk"), fmt=PageFormat(links=LINKS))
    mail = sent(opened)[0]
    lines = dict(line.split(": ", 1) for line in mail.text.splitlines() if ": http" in line)
    assert lines["Incident"] == "https://pager.example.com/services/checkout/incidents/1"
    for name, action in (("Acknowledge", "ack"), ("Resolve", "res")):
        link_id = lines[name].rsplit("/", 1)[1]
        claim = verify(LINKS.keys, link_id, T0)
        assert (claim.action, claim.service_id, claim.incident) == (action, "checkout", 1)
        assert LINKS.contact(claim, ["sms:+33600000001", "mailto:a@example.com"]) == \
            "mailto:a@example.com"
    assert "a@example.com" not in lines["Acknowledge"]


def test_an_ack_that_names_another_incident_changes_nothing():
    """A late link or reply for incident #1 does not acknowledge #2."""
    *_, late = run(RaiseAlert("a"), ReportHealthy(), RaiseAlert("b"), Acknowledge("sms:x", 1))
    assert (late.event, late.reason) == ("ignored", "not_open")
    *_, right = run(RaiseAlert("a"), Acknowledge("sms:x", 1))
    assert right.event == "acknowledged" and right.service.incident.acknowledged_by == "sms:x"


def test_everyone_paged_hears_the_ack_and_the_resolve_when_status_updates_are_on():
    """Each paged target gets one short message per ack and per resolve, naming who."""
    _, acked, resolved = run(RaiseAlert("disk"), Acknowledge("console:Alice"),
                             ReportHealthy("api"), fmt=PageFormat(status_updates=True))
    updates = sent(acked)
    assert {n.target for n in updates} == {EmailTarget("a@example.com"),
                                           SmsTarget("+33600000001")}
    assert all("incident #1 acknowledged by console:Alice" in n.text for n in updates)
    assert all("resolved by api" in n.text for n in sent(resolved))
    keys = [n.key for d in (acked, resolved) for n in sent(d)]
    assert len(set(keys)) == 4
    _, quiet = run(RaiseAlert("disk"), Acknowledge("x"))
    assert sent(quiet) == []


def test_closing_an_incident_keeps_its_code_aside_for_a_day():
    """The released code and when are in the state, so a restart keeps it resting."""
    *_, closed = run(RaiseAlert("a"), ReportHealthy(), fmt=PageFormat(reply_codes=True))
    assert closed.service.released_codes == (("4821", T0),)


def test_codes_are_unique_among_open_incidents_and_rest_a_day():
    """Reserving is idempotent; a released code is not given again within 24 h."""
    now = [T0]
    codes = ReplyCodes(lambda: now[0], random.Random(7))
    first = codes.reserve("checkout", 1)
    assert codes.reserve("checkout", 1) == first and len(first) == 4
    others = {codes.reserve(f"svc-{i}", 1) for i in range(500)}
    assert first not in others and len(others) == 500
    codes.release(first, T0)
    assert codes.holder(first).released == T0
    now[0] = T0 + timedelta(hours=23)
    assert first not in {codes.reserve(f"later-{i}", 1) for i in range(2000)}


def test_codes_grow_longer_when_the_short_ones_fill_up():
    """Past a quarter of the 4-digit codes, new codes have 5 digits."""
    codes = ReplyCodes(lambda: T0, random.Random(1))
    lengths = {len(codes.reserve(f"svc-{i}", 1)) for i in range(2600)}
    assert lengths == {4, 5}


def test_a_clusters_codes_are_drawn_from_their_services_shard():
    """With a shard map, every code is its service's shard modulo the shard count, unique,
    and grows longer once a quarter of that shard's short codes are taken."""
    codes = ReplyCodes(lambda: T0, random.Random(3), shard_of=(lambda sid: 5, 64))
    drawn = [codes.reserve(f"svc-{i}", 1) for i in range(60)]
    assert all(int(code) % 64 == 5 for code in drawn) and len(set(drawn)) == 60
    assert {len(code) for code in drawn} == {4, 5}  # 157 four-digit codes in shard 5


def test_the_code_table_comes_back_from_stored_states():
    """After a restart, open incidents keep their codes and released ones keep resting."""
    codes = ReplyCodes(lambda: T0)
    codes.load([("4821", "checkout", 3, None), ("1234", "search", 0, T0)])
    assert codes.holder("4821") == ("checkout", 3, None)
    assert codes.reserve("checkout", 3) == "4821"
    assert codes.holder("1234").released == T0 and codes.holder("9999") is None
