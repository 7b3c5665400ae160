"""The escalation rules, as unit tests of the pure `decide` function (no threads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pager_actors.domain import (
    Acknowledge,
    ArmTimer,
    Command,
    Decision,
    EmailTarget,
    EscalationPolicy,
    Health,
    Level,
    MonitoredService,
    Notify,
    RaiseAlert,
    Record,
    ReportHealthy,
    ServiceStatus,
    SmsTarget,
    TimerFired,
    UnknownServiceError,
    decide,
    parse_target,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=15)
POLICY = EscalationPolicy(
    "checkout",
    [
        Level([EmailTarget("oncall@example.com"), SmsTarget("+33600000001")]),
        Level([SmsTarget("+33600000002")]),
    ],
)


def run(*commands: Command, policy: EscalationPolicy = POLICY) -> list[Decision]:
    service = MonitoredService("checkout")
    decisions = []
    for command in commands:
        decision = decide(service, command, policy, now=NOW, ack_timeout=TIMEOUT)
        service = decision.service
        decisions.append(decision)
    return decisions


def notified(decision: Decision) -> list[object]:
    return [e.target for e in decision.effects if isinstance(e, Notify)]


def armed(decision: Decision) -> list[ArmTimer]:
    return [e for e in decision.effects if isinstance(e, ArmTimer)]


def recorded(decision: Decision) -> list[str]:
    return [e.entry.event for e in decision.effects if isinstance(e, Record)]


def test_alert_on_healthy_service_notifies_level_one_and_arms_timeout():
    """Rule 1: a healthy service turns unhealthy, level 1 is paged and a 15-minute timeout armed."""
    [d] = run(RaiseAlert("p99 latency > 2s"))
    assert d.event == "incident_opened"
    assert d.service.health is Health.UNHEALTHY
    assert notified(d) == [EmailTarget("oncall@example.com"), SmsTarget("+33600000001")]
    [arm] = armed(d)
    assert arm.delay == TIMEOUT
    assert arm.deadline == NOW + TIMEOUT
    assert arm.token == d.service.incident.armed_token  # type: ignore[union-attr]


def test_timeout_without_ack_notifies_next_level_and_rearms():
    """Rule 2: an unacknowledged timeout pages the next level, and the last level is armed too."""
    opened, escalated = run(RaiseAlert("down"), TimerFired(None))
    assert escalated.event == "escalated"
    assert notified(escalated) == [SmsTarget("+33600000002")]
    [arm] = armed(escalated)
    assert arm.token != armed(opened)[0].token
    assert escalated.service.status().level == 2


def test_timeout_after_ack_notifies_nobody():
    """Rule 3: once acknowledged, a later timeout notifies nobody and arms nothing."""
    _first, ack, timeout = run(
        RaiseAlert("down"), Acknowledge(), TimerFired(None)
    )
    assert ack.event == "acknowledged"
    assert ack.service.status().acknowledged is True
    assert timeout.effects == () and timeout.reason == "acknowledged"
    assert timeout.service.status().level == 1


def test_timeout_with_original_token_after_ack_notifies_nobody():
    """Rule 3: the token armed before the ack no longer escalates."""
    token = armed(run(RaiseAlert("down"))[0])[0].token
    *_, late = run(RaiseAlert("down"), Acknowledge(), TimerFired(token))
    assert late.effects == () and late.event == "ignored"


def test_alert_on_unhealthy_service_does_nothing_and_keeps_first_message():
    """Rule 4: a second alert of the same key notifies nobody, arms nothing, keeps the first
    message."""
    _, second = run(RaiseAlert("first"), RaiseAlert("second"))
    assert second.effects == ()
    assert second.reason == "duplicate"
    assert second.service.status().message == "first"


def test_healthy_event_closes_incident_and_later_timeout_does_nothing():
    """Rule 5: healthy at once; a timeout afterwards notifies nobody."""
    first, healthy, timeout = run(
        RaiseAlert("down"), ReportHealthy(), TimerFired(None)
    )
    assert healthy.service.status() == ServiceStatus(Health.HEALTHY, None, False, None)
    assert timeout.effects == ()
    [*_, late] = run(RaiseAlert("down"), ReportHealthy(), TimerFired(armed(first)[0].token))
    assert late.effects == ()


def test_timeout_after_last_level_does_nothing():
    """After the last level was paged, its timeout changes nothing visible and pages nobody."""
    *_, last, after = run(
        RaiseAlert("down"), TimerFired(None), TimerFired(None), TimerFired(None)
    )
    assert last.event == "escalation_exhausted"
    assert recorded(last) == ["exhausted"] and after.effects == ()
    assert [e for e in last.effects if not isinstance(e, Record)] == []
    assert after.service.status().level == 2


def test_new_alert_after_healthy_opens_new_incident_at_level_one():
    """A new incident starts at level 1 with the acknowledgement cleared."""
    *_, reopened = run(
        RaiseAlert("a"), TimerFired(None), Acknowledge(), ReportHealthy(), RaiseAlert("b")
    )
    assert reopened.event == "incident_opened"
    assert reopened.service.status() == ServiceStatus(Health.UNHEALTHY, 1, False, "b")
    assert reopened.service.incident.number == 2  # type: ignore[union-attr]


def test_stale_token_from_previous_incident_does_nothing():
    """A token armed for an earlier incident never escalates the new one."""
    old_token = armed(run(RaiseAlert("a"))[0])[0].token
    *_, late = run(RaiseAlert("a"), ReportHealthy(), RaiseAlert("b"), TimerFired(old_token))
    assert late.reason == "stale_token" and late.effects == ()


def test_duplicate_token_escalates_once():
    """Delivering the same timeout token twice escalates only once."""
    first = run(RaiseAlert("a"))[0]
    token = armed(first)[0].token
    _, once, twice = run(RaiseAlert("a"), TimerFired(token), TimerFired(token))
    assert once.event == "escalated"
    assert twice.reason == "stale_token" and twice.effects == ()


def test_ack_and_healthy_on_healthy_service_do_nothing():
    """An ack or a healthy event for a healthy service changes nothing."""
    ack, healthy = run(Acknowledge(), ReportHealthy())
    assert ack.effects == () and ack.service == MonitoredService("checkout")
    assert healthy.effects == () and healthy.service == MonitoredService("checkout")


def test_second_ack_is_harmless():
    """Acknowledging twice leaves the incident acknowledged and does nothing else."""
    _, first, second = run(RaiseAlert("a"), Acknowledge(), Acknowledge())
    assert second.reason == "already_acknowledged"
    assert second.service == first.service


def test_target_listed_twice_is_notified_once():
    """A level that names one target twice pages it once."""
    twice = EscalationPolicy("checkout", [Level([SmsTarget("+331"), SmsTarget("+331")])])
    [d] = run(RaiseAlert("a"), policy=twice)
    assert notified(d) == [SmsTarget("+331")]


def test_notification_text_names_service_and_message():
    """Every mail subject and every text carries the service id and the alert message."""
    [d] = run(RaiseAlert("disk full on db-3"))
    for effect in d.effects:
        if isinstance(effect, Notify):
            if isinstance(effect.target, EmailTarget):
                assert "checkout" in effect.subject and "disk full on db-3" in effect.subject
            assert "checkout" in effect.text and "disk full on db-3" in effect.text


def test_notify_keys_are_unique_per_incident_level_and_target():
    """Delivery keys differ across targets, levels and incidents."""
    decisions = run(RaiseAlert("a"), TimerFired(None), ReportHealthy(), RaiseAlert("b"))
    keys = [e.key for d in decisions for e in d.effects if isinstance(e, Notify)]
    assert len(keys) == len(set(keys)) == 5


def test_unknown_service_raises_and_returns_no_state():
    """Without a policy every command fails with UnknownServiceError."""
    for command in (RaiseAlert("a"), Acknowledge(), ReportHealthy(), TimerFired(None)):
        with pytest.raises(UnknownServiceError, match="checkout"):
            decide(MonitoredService("checkout"), command, None, now=NOW, ack_timeout=TIMEOUT)


def test_escalation_follows_policy_snapshot_taken_when_incident_opened():
    """A policy changed mid-incident does not change the open incident's levels."""
    service = decide(MonitoredService("checkout"), RaiseAlert("a"), POLICY,
                     now=NOW, ack_timeout=TIMEOUT).service
    shorter = EscalationPolicy("checkout", [Level([EmailTarget("x@example.com")])])
    d = decide(service, TimerFired(None), shorter, now=NOW, ack_timeout=TIMEOUT)
    assert notified(d) == [SmsTarget("+33600000002")]


def test_ignored_commands_do_not_bump_version():
    """Only real state changes bump the version."""
    opened, ignored = run(RaiseAlert("a"), RaiseAlert("b"))
    assert opened.service.version == 1
    assert ignored.service.version == 1


@pytest.mark.parametrize(
    "bad",
    [lambda: EmailTarget("nobody"), lambda: SmsTarget("call me"), lambda: Level([]),
     lambda: EscalationPolicy("x", []), lambda: EscalationPolicy("", [Level([SmsTarget("+1")])])],
)
def test_malformed_policy_values_are_rejected(bad):
    """Malformed targets, empty levels and empty policies raise ValueError."""
    with pytest.raises(ValueError):
        bad()


def test_incident_remembers_when_its_timeout_falls_due():
    """The armed timeout's deadline is kept on the incident and cleared by the ack."""
    opened, acked = run(RaiseAlert("a"), Acknowledge())
    assert opened.service.incident.ack_deadline == NOW + TIMEOUT  # type: ignore[union-attr]
    assert acked.service.incident.ack_deadline is None  # type: ignore[union-attr]


def test_targets_parse_from_and_print_as_uris():
    """mailto:/sms: URIs round-trip; anything else is a ValueError."""
    assert parse_target("mailto:oncall@example.com") == EmailTarget("oncall@example.com")
    assert parse_target("sms:+33600000001").uri == "sms:+33600000001"
    for bad in ("oncall@example.com", "tel:+331", "sms:", "mailto:nobody"):
        with pytest.raises(ValueError):
            parse_target(bad)
