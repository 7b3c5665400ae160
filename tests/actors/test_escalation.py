"""Every escalation scenario, through the Pager and its actors, with in-memory adapters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pager_actors import EscalationPolicy, Health, Level, ServiceStatus, UnknownServiceError
from tests.conftest import BACKUP_SMS, ONCALL_MAIL, ONCALL_SMS, settle

T = timedelta(minutes=15)


def test_alert_pages_level_one_and_arms_fifteen_minutes(pager, mail, sms, timer):
    """Rule 1: mail and SMS of level 1 go out and one 15-minute timeout is armed."""
    outcome = pager.alert("checkout", "p99 latency > 2s").get(timeout=5)
    pager.flush()
    assert outcome.event == "incident_opened"
    assert [m.to for m in mail.sent] == [ONCALL_MAIL.address]
    assert [s.to for s in sms.sent] == [ONCALL_SMS.number]
    [armed] = timer.armed
    assert (armed.service_id, armed.delay) == ("checkout", T)
    assert pager.status("checkout") == ServiceStatus(Health.UNHEALTHY, 1, False, "p99 latency > 2s")


def test_timeout_escalates_to_next_level_and_rearms(pager, sms, timer):
    """Rule 2: the timer's callback pages level 2 and arms again, also for the last level."""
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    settle(timer.advance(T))
    pager.flush()
    assert [s.to for s in sms.sent] == [ONCALL_SMS.number, BACKUP_SMS.number]
    assert len(timer.armed) == 2 and timer.armed[0].token != timer.armed[1].token
    assert pager.status("checkout").level == 2


def test_ack_stops_escalation(pager, sms, timer):
    """Rule 3: after an ack the timeout notifies nobody and arms nothing."""
    pager.alert("checkout", "down").get(timeout=5)
    pager.acknowledge("checkout").get(timeout=5)
    pager.flush()
    [outcome] = settle(timer.advance(T))
    pager.flush()
    assert outcome.effects == ()
    assert len(sms.sent) == 1 and len(timer.armed) == 1
    assert pager.status("checkout") == ServiceStatus(Health.UNHEALTHY, 1, True, "down")


def test_second_alert_while_unhealthy_does_nothing(pager, mail, sms, timer):
    """Rule 4: a second alert pages nobody, arms nothing and keeps the first message."""
    pager.alert("checkout", "first").get(timeout=5)
    outcome = pager.alert("checkout", "second").get(timeout=5)
    pager.flush()
    assert outcome.effects == () and outcome.reason == "duplicate"
    assert len(mail.sent) == 1 and len(sms.sent) == 1 and len(timer.armed) == 1
    assert pager.status("checkout").message == "first"


def test_healthy_event_closes_incident_and_later_timeout_does_nothing(pager, sms, timer):
    """Rule 5: healthy at once; the timeout armed before pages nobody."""
    pager.alert("checkout", "down").get(timeout=5)
    pager.healthy("checkout").get(timeout=5)
    assert pager.status("checkout") == ServiceStatus(Health.HEALTHY, None, False, None)
    pager.flush()
    settle(timer.advance(T))
    pager.flush()
    assert len(sms.sent) == 1 and len(timer.armed) == 1


def test_timeout_after_last_level_does_nothing(pager, mail, sms, timer):
    """Once the last level is paged its timeout pages nobody and arms nothing."""
    pager.alert("checkout", "down").get(timeout=5)
    for _ in range(4):
        pager.flush()
        settle(timer.advance(T))
    pager.flush()
    assert len(mail.sent) == 1 and len(sms.sent) == 2 and len(timer.armed) == 2
    assert pager.status("checkout").level == 2


def test_new_alert_after_healthy_starts_a_new_incident_at_level_one(pager, sms, timer):
    """A new incident starts at level 1 with the ack cleared."""
    pager.alert("checkout", "a").get(timeout=5)
    pager.acknowledge("checkout").get(timeout=5)
    pager.healthy("checkout").get(timeout=5)
    pager.alert("checkout", "b").get(timeout=5)
    assert pager.status("checkout") == ServiceStatus(Health.UNHEALTHY, 1, False, "b")
    pager.flush()
    assert [s.to for s in sms.sent] == [ONCALL_SMS.number, ONCALL_SMS.number]


def test_stale_and_duplicate_tokens_escalate_nothing(pager, sms, timer):
    """A token from an earlier incident, or delivered twice, is ignored."""
    pager.alert("checkout", "a").get(timeout=5)
    pager.flush()
    old = timer.armed[0].token
    pager.healthy("checkout").get(timeout=5)
    pager.alert("checkout", "b").get(timeout=5)
    pager.flush()
    assert pager.ack_timeout("checkout", old).get(timeout=5).reason == "stale_token"
    current = timer.armed[-1].token
    assert pager.ack_timeout("checkout", current).get(timeout=5).event == "escalated"
    assert pager.ack_timeout("checkout", current).get(timeout=5).reason == "stale_token"
    pager.flush()
    assert [s.to for s in sms.sent].count(BACKUP_SMS.number) == 1


def test_ack_or_healthy_on_healthy_service_does_nothing(pager, mail, sms, timer):
    """Ack and healthy events for a healthy service change nothing and page nobody."""
    assert pager.acknowledge("checkout").get(timeout=5).reason == "no_open_incident"
    assert pager.healthy("checkout").get(timeout=5).reason == "already_healthy"
    pager.flush()
    assert mail.sent == [] and sms.sent == [] and timer.armed == []
    assert pager.status("checkout").health is Health.HEALTHY


def test_second_ack_is_harmless(pager):
    """A second ack leaves the incident acknowledged."""
    pager.alert("checkout", "a").get(timeout=5)
    pager.acknowledge("checkout").get(timeout=5)
    assert pager.acknowledge("checkout").get(timeout=5).reason == "already_acknowledged"
    assert pager.status("checkout").acknowledged is True


def test_duplicate_target_in_a_level_is_paged_once(policies, pager, sms):
    """A level naming a number twice sends one SMS."""
    policies.put(EscalationPolicy("dup", [Level([ONCALL_SMS, ONCALL_SMS])]))
    pager.alert("dup", "a").get(timeout=5)
    pager.flush()
    assert [s.to for s in sms.sent] == [ONCALL_SMS.number]


def test_notifications_carry_service_and_message_on_their_channel(pager, mail, sms):
    """Mail goes to the mail port, SMS to the SMS port, both naming service and message."""
    pager.alert("checkout", "disk full").get(timeout=5)
    pager.flush()
    [m] = mail.sent
    [s] = sms.sent
    assert m.to == ONCALL_MAIL.address and s.to == ONCALL_SMS.number
    for text in (m.subject, m.body, s.text):
        assert "checkout" in text and "disk full" in text


def test_token_none_means_the_armed_timeout(pager, sms):
    """ack_timeout(service, None) acts on whichever timeout is armed now."""
    pager.alert("checkout", "a").get(timeout=5)
    assert pager.ack_timeout("checkout").get(timeout=5).event == "escalated"
    pager.flush()
    assert sms.sent[-1].to == BACKUP_SMS.number


@pytest.mark.parametrize("command", ["alert", "acknowledge", "healthy", "ack_timeout"])
def test_unknown_service_fails_and_creates_no_state(pager, command):
    """Every command for a service without a policy fails with UnknownServiceError."""
    args = ("ghost", "msg") if command == "alert" else ("ghost",)
    with pytest.raises(UnknownServiceError, match="ghost"):
        getattr(pager, command)(*args).get(timeout=5)
    with pytest.raises(UnknownServiceError):
        pager.status("ghost")
    assert pager.stats()["service_actors"] == 0


def test_policy_removed_later_makes_commands_fail(policies, pager):
    """Once its policy is gone, a service's commands fail with UnknownServiceError."""
    pager.alert("checkout", "a").get(timeout=5)
    policies.remove("checkout")
    with pytest.raises(UnknownServiceError):
        pager.acknowledge("checkout").get(timeout=5)


def test_untouched_known_service_is_healthy_without_an_actor(pager):
    """status() of a known service never alerted is healthy and starts no actor."""
    assert pager.status("search") == ServiceStatus(Health.HEALTHY, None, False, None)
    assert pager.stats()["service_actors"] == 0


def test_services_are_independent(pager, sms):
    """An incident on one service leaves another untouched."""
    pager.alert("checkout", "a").get(timeout=5)
    assert pager.status("search").health is Health.HEALTHY
    pager.alert("search", "b").get(timeout=5)
    pager.acknowledge("checkout").get(timeout=5)
    assert pager.status("search").acknowledged is False


def test_an_alert_whose_text_cannot_be_stored_is_refused_at_once(pager, mail):
    """A lone surrogate is a ValueError at the call: nothing is queued, nothing is paged."""
    with pytest.raises(ValueError, match="not valid Unicode"):
        pager.alert("checkout", "bad \ud800")
    with pytest.raises(ValueError, match="must be a string"):
        pager.alert("checkout", b"bytes")  # type: ignore[arg-type]
    pager.flush()
    assert mail.sent == [] and pager.status("checkout").health.value == "healthy"
