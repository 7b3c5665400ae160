"""The engine's adapter actors with the real senders, against real servers on 127.0.0.1:
a gateway that hangs on one number delays no other page, and mail reuses few connections."""

from __future__ import annotations

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.smtp import SmtpMailSender
from adapters.twilio import TwilioSmsSender
from pager_actors import EmailTarget, EscalationPolicy, Level, Pager, SmsTarget
from tests.servers import SmsGateway, SmtpServer

STUCK = SmsTarget("+33600000999")


def test_pages_to_other_numbers_go_out_while_the_gateway_hangs_on_one():
    """While the gateway holds one number, 20 others are paged; the held one has 1 in flight."""
    others = [SmsTarget(f"+336000001{i:02d}") for i in range(20)]
    repo = InMemoryPolicyRepository(
        [EscalationPolicy("stuck-a", [Level([STUCK])]),
         EscalationPolicy("stuck-b", [Level([STUCK])])]
        + [EscalationPolicy(f"svc-{i}", [Level([target])]) for i, target in enumerate(others)])
    with SmsGateway(account_sid="AC42", auth_token="tok") as gateway:
        gateway.hang_on(STUCK.number)
        sms = TwilioSmsSender(gateway.base_url, "AC42", "tok", "+15550000000", timeout=60)
        pager = Pager.start(policies=repo, mail=RecordingMailSender(), sms=sms,
                            timer=ManualTimer())
        try:
            pager.alert("stuck-a", "down").get(timeout=5)
            assert gateway.hanging.wait(timeout=10), "the first page never reached the gateway"
            pager.alert("stuck-b", "down").get(timeout=5)  # the same number: it must wait
            for i in range(len(others)):
                pager.alert(f"svc-{i}", "down").get(timeout=5)
            wanted = {target.number for target in others}
            assert gateway.wait_for(lambda sent: wanted <= {m.to for m in sent}, timeout=30), (
                "pages to other numbers were held up behind the hung one")
            assert STUCK.number not in {m.to for m in gateway.messages}
        finally:
            gateway.release()
        pager.flush(timeout=30)
        pager.stop()
        sms.close()
    assert [m.to for m in gateway.messages].count(STUCK.number) == 2
    assert gateway.max_in_flight_per_number == 1


def test_a_thousand_mails_use_at_most_20_smtp_connections():
    """1,000 mails through the mail actors and the real SMTP adapter use <= 20 connections."""
    repo = InMemoryPolicyRepository(
        EscalationPolicy(f"svc-{s}", [Level([EmailTarget(f"oncall-{s}-{t}@example.com")
                                             for t in range(10)])])
        for s in range(100))
    with SmtpServer() as server:
        mail = SmtpMailSender("127.0.0.1", server.port, "pager@example.com")
        pager = Pager.start(policies=repo, mail=mail, sms=RecordingSmsSender(),
                            timer=ManualTimer())
        futures = [pager.alert(f"svc-{s}", "down") for s in range(100)]
        assert all(f.get(timeout=10).event == "incident_opened" for f in futures)
        pager.flush(timeout=60)
        pager.stop()
        mail.close()
    assert len(server.received) == 1000
    assert len({m.recipients[0] for m in server.received}) == 1000
    assert server.connections <= 20, f"{server.connections} SMTP connections"
