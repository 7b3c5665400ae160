"""SmtpMailSender against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import ssl

import pytest

from adapters.smtp import SmtpMailSender
from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError
from tests.servers import SmtpServer, free_port, self_signed_cert


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def trusting(cert) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


def test_plain_smtp_delivers_the_mail():
    """From, To, Subject and body reach the server."""
    with SmtpServer() as server:
        SmtpMailSender("127.0.0.1", server.port, "pager@example.com").send_mail(
            "oncall@example.com", "[checkout] down", "level 1 page: checkout is down")
    [mail] = server.received
    assert mail.sender == "pager@example.com" and mail.recipients == ["oncall@example.com"]
    assert "Subject: [checkout] down" in mail.data and "checkout is down" in mail.data


def test_starttls_with_auth_delivers(cert):
    """STARTTLS then AUTH LOGIN/PLAIN with the right password delivers."""
    with SmtpServer(tls=cert, login="pager", password="s3cret") as server:
        SmtpMailSender("127.0.0.1", server.port, "pager@example.com", starttls=True,
                       username="pager", password="s3cret",
                       tls_context=trusting(cert)).send_mail("a@example.com", "s", "b")
    assert len(server.received) == 1


def test_wrong_password_is_permanent(cert):
    """Refused credentials are not worth retrying."""
    with SmtpServer(tls=cert, login="pager", password="s3cret") as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "pager@example.com", starttls=True,
                                username="pager", password="wrong", tls_context=trusting(cert))
        with pytest.raises(PermanentDeliveryError, match="authentication refused: 535"):
            sender.send_mail("a@example.com", "s", "b")
    assert server.received == []


def test_untrusted_certificate_is_permanent(cert):
    """A server certificate the client does not trust is refused, not retried."""
    with SmtpServer(tls=cert) as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com", starttls=True)
        with pytest.raises(PermanentDeliveryError, match="TLS"):
            sender.send_mail("a@example.com", "s", "b")


def test_server_requiring_starttls_refuses_plain_clients(cert):
    """Without STARTTLS a server that requires it refuses the mail (5xx: permanent)."""
    with SmtpServer(tls=cert) as server, pytest.raises(PermanentDeliveryError):
        SmtpMailSender("127.0.0.1", server.port, "p@example.com").send_mail(
            "a@example.com", "s", "b")


def test_temporary_refusal_is_transient_and_permanent_refusal_is_not():
    """451 on RCPT is retried later; 550 is final."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        server.refuse_rcpt = "451 4.7.1 try again later"
        with pytest.raises(TransientDeliveryError, match="451"):
            sender.send_mail("a@example.com", "s", "b")
        server.refuse_rcpt = "550 5.1.1 no such user"
        with pytest.raises(PermanentDeliveryError, match="550"):
            sender.send_mail("a@example.com", "s", "b")


def test_unreachable_server_is_transient():
    """Nothing listening: a network error, worth retrying."""
    sender = SmtpMailSender("127.0.0.1", free_port(), "p@example.com", timeout=2)
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        sender.send_mail("a@example.com", "s", "b")
