"""Incident semantics as pure `decide` tests: keyed alerts, rounds, ack expiry, maintenance,
heartbeats, failed pages and the timeline (no threads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pager_actors.domain import (
    Acknowledge,
    Alert,
    ArmTimer,
    Command,
    Decision,
    EmailTarget,
    EndMaintenance,
    EscalationPolicy,
    Heartbeat,
    Incident,
    Level,
    MonitoredService,
    Notify,
    PageFailed,
    PageFormat,
    RaiseAlert,
    Record,
    ReportHealthy,
    ResolveAlert,
    SmsTarget,
    StartMaintenance,
    TimerFired,
    decide,
    window_token,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ACK = timedelta(minutes=15)
MAIL, SMS1, SMS2 = EmailTarget("oncall@example.com"), SmsTarget("+33600000001"), \
    SmsTarget("+33600000002")


def policy(**options) -> EscalationPolicy:
    return EscalationPolicy("checkout", [Level([MAIL, SMS1]), Level([SMS2])], **options)


class Service:
    """Drives one service through `decide`, moving the clock by hand."""

    def __init__(self, fmt: PageFormat = PageFormat(), **options) -> None:  # noqa: B008
        self.policy = policy(**options)
        self.state = MonitoredService("checkout")
        self.now = T0
        self.fmt = fmt

    def __call__(self, command: Command, after: timedelta = timedelta(0)) -> Decision:
        self.now += after
        decision = decide(self.state, command, self.policy, now=self.now, ack_timeout=ACK,
                          fmt=self.fmt)
        self.state = decision.service
        return decision

    def fire_armed(self, after: timedelta = ACK) -> Decision:
        """The incident's armed timer falls due."""
        assert self.state.incident is not None
        return self(TimerFired(self.state.incident.armed_token), after)


def failure(page: Notify) -> PageFailed:
    """What an adapter reports when `page` failed for good."""
    return PageFailed(page.incident, page.page, page.level, page.round, page.target.uri)


def pages(decision: Decision) -> list[Notify]:
    return [e for e in decision.effects if isinstance(e, Notify)]


def timers(decision: Decision) -> list[ArmTimer]:
    return [e for e in decision.effects if isinstance(e, ArmTimer)]


def entries(decision: Decision) -> list[str]:
    return [e.entry.event for e in decision.effects if isinstance(e, Record)]


# -- the table of alert events ------------------------------------------------------


def test_the_first_firing_key_opens_an_incident_and_pages_level_one():
    """No incident open + a firing key: incident_opened, level 1 paged."""
    service = Service()
    opened = service(RaiseAlert("p99 > 2s", key="HighLatency"))
    assert opened.event == "incident_opened"
    assert [p.target for p in pages(opened)] == [MAIL, SMS1]
    assert entries(opened) == ["opened", "paged", "paged"]
    assert service.state.alerts == (Alert("HighLatency", "p99 > 2s", T0),)


def test_a_new_key_joins_the_open_incident_without_paging():
    """A second key while an incident is open: alert_added, nobody paged."""
    service = Service()
    service(RaiseAlert("p99", key="HighLatency"))
    added = service(RaiseAlert("disk", key="DiskFull"))
    assert added.event == "alert_added" and pages(added) == [] and timers(added) == []
    assert entries(added) == ["alert_added"]
    assert [a.key for a in service.state.alerts] == ["HighLatency", "DiskFull"]


def test_a_key_already_firing_is_a_duplicate():
    """The same key again: ignored, reason duplicate, nothing changes."""
    service = Service()
    service(RaiseAlert("p99", key="k"))
    again = service(RaiseAlert("p99 again", key="k"))
    assert (again.event, again.reason, again.effects) == ("ignored", "duplicate", ())


def test_resolving_one_of_several_keys_keeps_the_incident():
    """A resolved key while others fire: alert_resolved, still unhealthy and escalating."""
    service = Service()
    service(RaiseAlert("p99", key="HighLatency"))
    service(RaiseAlert("disk", key="DiskFull"))
    resolved = service(ResolveAlert("HighLatency"))
    assert resolved.event == "alert_resolved"
    assert service.state.incident is not None
    assert service.fire_armed().event == "escalated"


def test_resolving_the_last_key_closes_the_incident():
    """The last firing key resolved: resolved, the incident closes."""
    service = Service()
    service(RaiseAlert("p99", key="a"))
    service(RaiseAlert("disk", key="b"))
    service(ResolveAlert("a"))
    closed = service(ResolveAlert("b"))
    assert closed.event == "resolved" and entries(closed) == ["resolved"]
    assert service.state.incident is None and service.state.alerts == ()


def test_resolving_a_key_that_never_fired_is_ignored():
    """The bug of the issue: a resolved DiskFull that never fired must not stop escalation."""
    service = Service()
    service(RaiseAlert("p99", key="HighLatency"))
    stray = service(ResolveAlert("DiskFull"))
    assert (stray.event, stray.reason) == ("ignored", "unknown_alert")
    assert service.fire_armed().event == "escalated"


def test_healthy_is_an_override_that_clears_every_key():
    """POST healthy closes the incident and clears all firing keys; the next alert reopens."""
    service = Service()
    service(RaiseAlert("p99", key="a"))
    service(RaiseAlert("disk", key="b"))
    healed = service(ReportHealthy(by="api"))
    assert healed.event == "resolved" and service.state.alerts == ()
    assert service(RaiseAlert("p99", key="a")).event == "incident_opened"


def test_an_acknowledge_never_clears_keys():
    """After an ack the keys still fire: resolving one of two keeps the incident."""
    service = Service()
    service(RaiseAlert("p99", key="a"))
    service(RaiseAlert("disk", key="b"))
    service(Acknowledge())
    assert [a.key for a in service.state.alerts] == ["a", "b"]
    assert service(ResolveAlert("a")).event == "alert_resolved"


def test_pages_name_the_first_alert_and_how_many_others_fire():
    """An escalation with three keys firing says +2 more firing, in mail and SMS alike."""
    service = Service()
    service(RaiseAlert("p99 latency", key="a"))
    service(RaiseAlert("disk", key="b"))
    service(RaiseAlert("errors", key="c"))
    [sms] = pages(service.fire_armed())
    assert "p99 latency" in sms.text and sms.text.endswith("+2 more firing")


def test_a_legacy_incident_closes_on_a_resolve_of_any_key():
    """An incident migrated from before keys closes on the first resolve, whatever its key."""
    legacy = Incident(4, "old", policy(), 1, armed_token="checkout#4@1", ack_deadline=T0,
                      legacy=True)
    state = MonitoredService("checkout", legacy, 4, 7, (Alert("default", "old", T0),))
    decision = decide(state, ResolveAlert("0a1b2c3d4e5f"), policy(), now=T0, ack_timeout=ACK)
    assert decision.event == "resolved" and decision.service.incident is None


def test_an_alert_key_must_be_printable_and_at_most_200_characters():
    """Keys are 1-200 printable characters."""
    for bad in ("", "x" * 201, "tab\there", "line\nbreak"):
        with pytest.raises(ValueError, match="key"):
            RaiseAlert("m", key=bad)


# -- every page is its own delivery -----------------------------------------------------


def test_every_page_has_its_own_delivery_id_across_rounds_and_expiries():
    """Repeat rounds and expired acks page the same level again, under new ids."""
    service = Service(repeat=1, ack_expiry=timedelta(hours=1))
    ids = [p.key for p in pages(service(RaiseAlert("down")))]
    service(Acknowledge())
    ids += [p.key for p in pages(service.fire_armed(timedelta(hours=1)))]  # expired: level 1
    ids += [p.key for p in pages(service.fire_armed())]  # level 2
    ids += [p.key for p in pages(service.fire_armed())]  # round 2, level 1
    assert len(ids) == 7 and len(set(ids)) == 7


def test_an_incident_exhausted_twice_pages_the_fallback_under_two_ids():
    """Exhausted, acked, the ack expires, exhausted again: the second fallback page is a
    delivery of its own (a reused id would be refused by the outbox, forever)."""
    backup = SmsTarget("+33600000009")
    service = Service(PageFormat(fallback=(backup,)), ack_expiry=timedelta(hours=1))
    service(RaiseAlert("down"))
    service.fire_armed()  # level 2
    first = service.fire_armed()
    assert first.event == "escalation_exhausted"
    service(Acknowledge())
    service.fire_armed(timedelta(hours=1))  # the ack expired: level 2 again
    second = service.fire_armed()
    assert second.event == "escalation_exhausted"
    [one], [two] = pages(first), pages(second)
    assert one.target == two.target == backup and one.key != two.key


# -- repeat rounds -------------------------------------------------------------------------


def test_repeat_walks_the_levels_again_before_exhaustion():
    """repeat = 1: level 1, level 2, level 1 (round 2), level 2, then escalation_exhausted."""
    service = Service(repeat=1)
    service(RaiseAlert("down"))
    events = [service.fire_armed() for _ in range(4)]
    assert [d.event for d in events] == ["escalated"] * 3 + ["escalation_exhausted"]
    assert [(d.service.incident.level, d.service.incident.round) for d in events] == \
        [(2, 1), (1, 2), (2, 2), (2, 2)]
    assert entries(events[-1]) == ["exhausted"]


def test_page_texts_name_the_round_only_when_policy_repeats():
    """'round 2 of 2' with repeat = 1, in the SMS and in the mail body; no round without."""
    service = Service(repeat=1)
    assert "round 1 of 2" in pages(service(RaiseAlert("down")))[1].text
    service.fire_armed()  # level 2
    mail, sms = pages(service.fire_armed())  # round 2, level 1
    assert "round 2 of 2" in sms.text and "round 2 of 2" in mail.text
    assert "round" not in pages(Service()(RaiseAlert("down")))[1].text


def test_a_token_of_an_earlier_round_escalates_nothing():
    """The level 1 token of round 1 is stale in round 2."""
    service = Service(repeat=1)
    first_token = timers(service(RaiseAlert("down")))[0].token
    service.fire_armed()
    service.fire_armed()  # round 2, level 1
    late = service(TimerFired(first_token))
    assert (late.event, late.reason) == ("ignored", "stale_token")


# -- ack expiry -----------------------------------------------------------------------------


def test_an_ack_expires_and_pages_the_current_level_again():
    """ack_expiry = 1h: an hour after the ack, ack_expired pages level 2 again and re-arms."""
    service = Service(ack_expiry=timedelta(hours=1))
    service(RaiseAlert("down"))
    service.fire_armed()  # level 2
    acked = service(Acknowledge(by="api"))
    [expiry] = timers(acked)
    assert expiry.deadline == service.now + timedelta(hours=1)
    expired = service.fire_armed(timedelta(hours=1))
    assert expired.event == "ack_expired" and entries(expired)[0] == "ack_expired"
    assert [p.target for p in pages(expired)] == [SMS2]
    assert service.state.incident.acknowledged is False
    [armed] = timers(expired)
    assert armed.delay == ACK


def test_a_new_ack_arms_a_new_expiry_and_the_old_one_is_stale():
    """Each ack arms its own expiry; the first ack's expiry does nothing after a second ack."""
    service = Service(ack_expiry=timedelta(hours=1))
    service(RaiseAlert("down"))
    first_expiry = timers(service(Acknowledge()))[0].token
    service.fire_armed(timedelta(hours=1))  # expired, paged again
    second = timers(service(Acknowledge()))[0].token
    assert second != first_expiry
    assert service(TimerFired(first_expiry)).event == "ignored"


def test_without_ack_expiry_an_ack_arms_nothing():
    """ack_expiry is off by default."""
    service = Service()
    service(RaiseAlert("down"))
    assert timers(service(Acknowledge())) == []


# -- maintenance windows ---------------------------------------------------------------------


def test_an_alert_during_a_window_is_suppressed_and_pages_when_the_window_ends():
    """suppressed, nobody paged; at the window's end the key opens an incident and pages."""
    service = Service()
    started = service(StartMaintenance(end=T0 + timedelta(hours=1), reason="deploy"))
    assert started.event == "maintenance_started"
    [end_timer] = timers(started)
    assert end_timer.token == window_token("checkout", 1) and end_timer.deadline == \
        T0 + timedelta(hours=1)
    suppressed = service(RaiseAlert("p99", key="HighLatency"), timedelta(minutes=5))
    assert suppressed.event == "suppressed" and pages(suppressed) == []
    assert service.state.incident is None
    ended = service(TimerFired(end_timer.token), timedelta(minutes=55))
    assert ended.event == "maintenance_ended"
    assert service.state.incident is not None
    assert [p.target for p in pages(ended)] == [MAIL, SMS1]
    # The incident's timeline starts with what maintenance held back.
    [held] = [e.entry for e in suppressed.effects if isinstance(e, Record)]
    assert (held.event, held.incident, held.key) == ("suppressed", 1, "HighLatency")
    assert service.state.incident.number == 1


def test_ending_a_window_early_pages_what_still_fires_and_not_what_resolved():
    """DELETE before the end: firing keys page at once; a key resolved meanwhile does not."""
    service = Service()
    service(StartMaintenance(end=T0 + timedelta(hours=2)))
    service(RaiseAlert("gone", key="a"))
    service(ResolveAlert("a"))
    assert pages(service(EndMaintenance(1))) == []
    service(StartMaintenance(end=T0 + timedelta(hours=2)))
    service(RaiseAlert("still", key="b"))
    assert pages(service(EndMaintenance(2))) != []


def test_a_key_held_by_maintenance_resolves_where_it_was_filed():
    """A suppressed key that resolves, or is cleared by a healthy, inside the window says so
    under the incident that opens next, so that incident's timeline does not show it firing."""
    service = Service()
    service(StartMaintenance(end=T0 + timedelta(hours=2)))
    service(RaiseAlert("gone", key="a"))
    resolved = service(ResolveAlert("a"))
    service(RaiseAlert("also gone", key="b"))
    healed = service(ReportHealthy(by="api"))
    logged = [(r.entry.event, r.entry.incident, r.entry.key) for d in (resolved, healed)
              for r in d.effects if isinstance(r, Record)]
    assert logged == [("alert_resolved", 1, "a"), ("alert_resolved", 1, "b")]
    assert service.state.alerts == () and service.state.incident is None


def test_an_incident_open_before_the_window_keeps_escalating():
    """Maintenance stops new incidents, not the one already open."""
    service = Service()
    service(RaiseAlert("down"))
    service(StartMaintenance(end=T0 + timedelta(hours=1)))
    assert service.fire_armed().event == "escalated"
    assert service(RaiseAlert("more", key="other")).event == "alert_added"


def test_keys_that_fire_in_a_window_join_an_incident_opened_meanwhile_silently():
    """If an incident is open when the window ends, the suppressed keys are already in it."""
    service = Service()
    service(StartMaintenance(start=T0, end=T0 + timedelta(minutes=30)))
    service(RaiseAlert("quiet", key="a"))
    ended = service(EndMaintenance(1))
    assert ended.service.incident is not None  # opened for "a" at the end
    service(StartMaintenance(end=service.now + timedelta(minutes=30)))
    service(RaiseAlert("joins", key="b"))
    assert pages(service(EndMaintenance(2))) == []


def test_a_window_that_starts_later_suppresses_nothing_before_its_start():
    """A window from 10:00 does not suppress an alert at 09:00."""
    service = Service()
    service(StartMaintenance(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2)))
    assert service(RaiseAlert("now")).event == "incident_opened"


@pytest.mark.parametrize("start,end", [
    (T0, T0),                                       # empty
    (T0 + timedelta(hours=1), T0),                  # backwards
    (T0, T0 + timedelta(days=7, seconds=1)),        # longer than 7 days
    (T0 - timedelta(hours=2), T0 - timedelta(hours=1)),  # already over
])
def test_invalid_windows_are_refused(start, end):
    """end after start, at most 7 days, not in the past."""
    decision = Service()(StartMaintenance(end=end, start=start))
    assert (decision.event, decision.reason) == ("ignored", "invalid_window")


def test_ending_an_unknown_window_is_ignored():
    """DELETE of a window that is not there changes nothing."""
    assert Service()(EndMaintenance(9)).reason == "unknown_window"


# -- heartbeats --------------------------------------------------------------------------------


def test_the_first_heartbeat_arms_the_countdown_and_silence_fires_the_heartbeat_key():
    """heartbeat = 5m: no heartbeat within 5 minutes fires 'heartbeat' like any alert."""
    service = Service(heartbeat=timedelta(minutes=5))
    beat = service(Heartbeat())
    [countdown] = timers(beat)
    assert beat.event == "heartbeat" and countdown.deadline == T0 + timedelta(minutes=5)
    missed = service(TimerFired(countdown.token), timedelta(minutes=5))
    assert missed.event == "incident_opened"
    assert service.state.alerts[0].key == "heartbeat"
    assert service.state.alerts[0].message == "no heartbeat for 5m"
    back = service(Heartbeat(), timedelta(minutes=1))
    assert back.event == "resolved" and service.state.incident is None
    assert len(timers(back)) == 1  # and counting again


def test_each_heartbeat_moves_the_deadline_and_one_timer_follows_it():
    """Heartbeats move the deadline without arming more timers; the timer, firing early,
    arms itself again for what remains, and only a real silence fires the alert."""
    service = Service(heartbeat=timedelta(minutes=5))
    [countdown] = timers(service(Heartbeat()))
    assert timers(service(Heartbeat(), timedelta(minutes=4))) == []  # no second timer
    early = service(TimerFired(countdown.token), timedelta(minutes=1))
    assert early.event == "timer_rearmed" and service.state.incident is None
    [again] = timers(early)
    assert again.token == countdown.token and again.deadline == T0 + timedelta(minutes=9)
    missed = service(TimerFired(countdown.token), timedelta(minutes=4))
    assert missed.event == "incident_opened"


def test_heartbeats_removed_by_a_reload_disarm_instead_of_paging():
    """A stored countdown whose service no longer has `heartbeat` pages nobody."""
    service = Service(heartbeat=timedelta(minutes=5))
    [countdown] = timers(service(Heartbeat()))
    service.policy = policy()  # reloaded without heartbeat
    gone = service(TimerFired(countdown.token), timedelta(minutes=5))
    assert gone.event == "heartbeat_disarmed" and pages(gone) == []
    assert service.state.heartbeat_token is None and service.state.timers() == []


def test_a_service_without_heartbeat_ignores_one():
    """No `heartbeat` in the policy: a heartbeat is ignored (the API says so)."""
    assert Service()(Heartbeat()).reason == "no_heartbeat"


def test_a_missed_heartbeat_in_a_window_is_suppressed():
    """The heartbeat key is an alert like any other: maintenance suppresses it."""
    service = Service(heartbeat=timedelta(minutes=5))
    countdown = timers(service(Heartbeat()))[0].token
    service(StartMaintenance(end=T0 + timedelta(hours=1)))
    assert service(TimerFired(countdown), timedelta(minutes=5)).event == "suppressed"


# -- pages that cannot be delivered -------------------------------------------------------------


def test_when_every_page_of_a_level_failed_the_next_level_is_paged_at_once():
    """Both level-1 pages failed for good: escalated with reason delivery_failed."""
    service = Service()
    mail, sms = pages(service(RaiseAlert("down")))
    one = service(failure(mail))
    assert one.event == "page_failed" and pages(one) == []
    both = service(failure(sms))
    assert (both.event, both.reason) == ("escalated", "delivery_failed")
    assert [p.target for p in pages(both)] == [SMS2]


def test_a_failure_of_an_older_page_or_after_the_ack_changes_nothing():
    """Only failures of the current page of an unacknowledged incident count."""
    service = Service()
    old = pages(service(RaiseAlert("down")))[0]
    [current] = pages(service.fire_armed())
    assert service(failure(old)).reason == "stale_delivery"
    service(Acknowledge())
    assert service(failure(current)).reason == "stale_delivery"


def test_failures_of_the_last_level_exhaust_the_escalation():
    """Nothing left to page: escalation_exhausted, reason delivery_failed."""
    service = Service()
    service(RaiseAlert("down"))
    [last] = pages(service.fire_armed())
    done = service(failure(last))
    assert (done.event, done.reason) == ("escalation_exhausted", "delivery_failed")


# -- timeline --------------------------------------------------------------------------------------


def test_the_timeline_records_who_acted_and_masks_targets():
    """Entries carry level, round, masked target and channel, and `by` for acks."""
    service = Service()
    opened = service(RaiseAlert("down", key="k"))
    paged = [e.entry for e in opened.effects if isinstance(e, Record)][1:]
    assert {(e.target, e.channel, e.level, e.round) for e in paged} == {
        ("o***@example.com", "mail", 1, 1), ("+336****0001", "sms", 1, 1)}
    acked = service(Acknowledge(by="sms:+336****0001"))
    [entry] = [e.entry for e in acked.effects if isinstance(e, Record)]
    assert (entry.event, entry.by, entry.at) == ("acknowledged", "sms:+336****0001", T0)


def test_notify_knows_its_outcome_entry():
    """A page's delivery outcome becomes a timeline entry with the error kept."""
    [mail, _] = pages(Service()(RaiseAlert("down")))
    failed = mail.outcome(T0, "SMTP error 550")
    assert (failed.event, failed.error, failed.target, failed.channel) == (
        "delivery_failed", "SMTP error 550", "o***@example.com", "mail")
    assert mail.outcome(T0, None).event == "delivered"


def test_resolves_say_by_what():
    """alert_resolved and resolved carry `by`, as acks do."""
    service = Service()
    service(RaiseAlert("a", key="a"))
    service(RaiseAlert("b", key="b"))
    first = service(ResolveAlert("a", by="alertmanager"))
    last = service(ResolveAlert("b", by="alertmanager"))
    assert [e.entry.by for e in first.effects + last.effects if isinstance(e, Record)] == [
        "alertmanager", "alertmanager"]


def test_ack_expiry_follows_the_policy_snapshot():
    """An incident opened without ack expiry keeps none, though a reload added one."""
    service = Service()
    service(RaiseAlert("down"))
    service.policy = policy(ack_expiry=timedelta(minutes=1))
    assert timers(service(Acknowledge())) == []


def test_a_failed_page_of_another_level_with_the_same_page_number_is_stale():
    """Failures match the incident's page number, level and round together."""
    service = Service()
    mail = pages(service(RaiseAlert("down")))[0]
    moved = PageFailed(1, mail.page, 2, mail.round, mail.target.uri)
    assert service(moved).reason == "stale_delivery"
