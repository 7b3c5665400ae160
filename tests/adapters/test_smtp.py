"""SmtpMailSender against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import ssl
import threading

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


# -- the connection pool --------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_connection_carries_many_mails():
    """Mails sent one after another reuse one connection."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        for i in range(5):
            sender.send_mail(f"u{i}@example.com", "s", "b")
        sender.close()
    assert len(server.received) == 5 and server.connections == 1


def test_starttls_and_auth_happen_once_per_connection(cert):
    """With STARTTLS and AUTH, a reused connection still delivers, with no new handshake."""
    with SmtpServer(tls=cert, login="pager", password="s3cret") as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com", starttls=True,
                                username="pager", password="s3cret", tls_context=trusting(cert))
        for _ in range(3):
            sender.send_mail("a@example.com", "s", "b")
        sender.close()
    assert len(server.received) == 3 and server.connections == 1


def test_connection_dropped_by_the_server_is_replaced():
    """The server closes the idle connection: the next mail opens a new one and is delivered."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        sender.send_mail("a@example.com", "s", "first")
        server.drop_connections()
        sender.send_mail("a@example.com", "s", "second")
        sender.close()
    assert len(server.received) == 2 and server.connections == 2


def test_connection_the_server_said_goodbye_to_is_not_reused():
    """An idle connection ended with "421 timeout" is seen dead before use; the mail is sent."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        sender.send_mail("a@example.com", "s", "first")
        server.drop_connections(goodbye="421 4.4.2 idle timeout")
        sender.send_mail("a@example.com", "s", "second")
        sender.close()
    assert len(server.received) == 2 and server.connections == 2


def test_reused_connection_dead_at_first_command_sends_once_more_on_a_fresh_one():
    """The server hangs up at MAIL FROM on a reused connection: the mail goes on a new one."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        sender.send_mail("a@example.com", "s", "first")
        server.drop_at_next_mail()
        sender.send_mail("a@example.com", "s", "second")
        sender.close()
    assert [m.data.splitlines()[-1] for m in server.received] == ["first", "second"]
    assert server.connections == 2


def test_fresh_connection_that_drops_is_a_transient_failure_not_resent():
    """A new connection hung up on is not tried again in the adapter: the engine retries."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        server.drop_at_next_mail()
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            sender.send_mail("a@example.com", "s", "b")
        assert server.connections == 1
        sender.send_mail("a@example.com", "s", "b")
        sender.close()
    assert len(server.received) == 1 and server.connections == 2


def test_failed_connection_is_never_reused():
    """After a refused recipient the connection is closed; the next mail opens another."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        server.refuse_rcpt = "550 5.1.1 no such user"
        with pytest.raises(PermanentDeliveryError):
            sender.send_mail("a@example.com", "s", "b")
        server.refuse_rcpt = None
        sender.send_mail("a@example.com", "s", "b")
        sender.close()
    assert len(server.received) == 1 and server.connections == 2


def test_connection_idle_too_long_is_closed_not_reused():
    """Past `max_idle` seconds idle, a connection is closed and a new one opened."""
    clock = FakeClock()
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com", max_idle=30,
                                clock=clock)
        sender.send_mail("a@example.com", "s", "b")
        clock.now += 29
        sender.send_mail("a@example.com", "s", "b")
        assert server.connections == 1
        clock.now += 31
        sender.send_mail("a@example.com", "s", "b")
        assert server.connections == 2
        sender.close()
    assert len(server.received) == 3


def test_pool_never_opens_more_than_max_connections():
    """16 threads sending at once share at most 3 connections, and every mail arrives."""
    with SmtpServer(delay=0.005) as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com", max_connections=3)
        errors: list[BaseException] = []

        def send(n: int) -> None:
            try:
                for i in range(10):
                    sender.send_mail(f"u{n}-{i}@example.com", "s", "b")
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        sender.close()
    assert not errors and len(server.received) == 160
    assert server.max_open <= 3 and server.connections <= 3


def test_close_says_goodbye_to_idle_connections():
    """close() ends every idle connection."""
    with SmtpServer() as server:
        sender = SmtpMailSender("127.0.0.1", server.port, "p@example.com")
        sender.send_mail("a@example.com", "s", "b")
        assert server.open_now == 1
        sender.close()
        assert server.wait_all_closed(timeout=10)
