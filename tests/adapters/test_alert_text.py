"""Alert text from monitoring through the engine to a real SMTP server and SQLite outbox."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy as email_policy

from adapters.memory import InMemoryPolicyRepository, ManualTimer, RecordingSmsSender
from adapters.smtp import SmtpMailSender
from adapters.sqlite import SqliteStore
from pager_actors import EmailTarget, EscalationPolicy, Level, Pager
from tests.servers import SmtpServer


def test_a_multi_line_alert_is_mailed_and_its_outbox_row_delivered(tmp_path):
    """A CR LF alert reaches SMTP with a one-line Subject and both lines in the body."""
    store = SqliteStore(tmp_path / "pager.db")
    policy = EscalationPolicy("checkout", [Level([EmailTarget("oncall@example.com")])])
    with SmtpServer() as server:
        pager = Pager.start(policies=InMemoryPolicyRepository([policy]),
                            mail=SmtpMailSender("127.0.0.1", server.port, "pager@example.com"),
                            sms=RecordingSmsSender(), timer=ManualTimer(),
                            ack_timeout=timedelta(minutes=1), store=store)
        try:
            pager.alert("checkout", "line1\r\nline2\x00 " + "x" * 300).get(timeout=5)
            pager.flush(timeout=10)
        finally:
            pager.stop()
    [row] = store.outbox()
    store.close()
    assert row["status"] == "delivered", row["last_error"]
    [received] = server.received
    message = email.message_from_string(received.data, policy=email_policy.default)
    assert message["Subject"].startswith("[checkout] line1 line2 xxx")
    assert len(message["Subject"]) == 200 and message["Subject"].endswith("…")
    body = message.get_content().replace("\r\n", "\n")
    assert "line1\nline2" in body and "\x00" not in body
