"""SmtpMailSender: email through an SMTP relay with stdlib smtplib (STARTTLS, AUTH).

Mail goes over a small pool of connections, each opened (EHLO, STARTTLS,
AUTH) once and then reused, so a flood costs a few connections, not one per
mail. Failures are sorted for the retry logic: network errors, timeouts and
4xx replies are transient; 5xx replies and refused credentials are permanent.
"""

from __future__ import annotations

import select
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage

from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError

# What a pooled connection that the server closed while it idled raises at its first use.
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLEOFError,
            ssl.SSLZeroReturnError)


class SmtpMailSender:
    """Sends mail over at most `max_connections` SMTP connections, with a socket timeout
    (never hangs for ever). Thread-safe: callers past `max_connections` wait for one.

    Idle connections are reused, the most recently used first. A connection
    that failed is closed, never reused. One idle for more than `max_idle`
    seconds, or that the server closed meanwhile, is closed instead of reused;
    if a reused connection still turns out dead at its first command, that mail
    is sent once more on a fresh connection.
    """

    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = False,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, tls_context: ssl.SSLContext | None = None,
                 max_connections: int = 8, max_idle: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout
        self.max_connections, self.max_idle = max_connections, max_idle
        self._tls = tls_context or ssl.create_default_context()
        self._clock = clock
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: list[tuple[smtplib.SMTP, float]] = []  # (connection, idle since), oldest first
        self._closed = False

    def send_mail(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        if not self._slots.acquire(timeout=self.timeout):
            raise TransientDeliveryError(f"all {self.max_connections} SMTP connections stayed "
                                         f"busy for {self.timeout} s")
        try:
            self._send(message)
        except smtplib.SMTPAuthenticationError as error:
            raise PermanentDeliveryError(f"SMTP authentication refused: {error.smtp_code} "
                                         f"{_text(error.smtp_error)}") from error
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _by_code(code, f"SMTP refused the recipient: {code} {_text(reply)}") from error
        except smtplib.SMTPResponseException as error:
            raise _by_code(error.smtp_code,
                           f"SMTP error {error.smtp_code} {_text(error.smtp_error)}") from error
        except smtplib.SMTPNotSupportedError as error:
            raise PermanentDeliveryError(f"SMTP server lacks a required extension: {error}"
                                         ) from error
        except ssl.SSLError as error:
            raise PermanentDeliveryError(f"TLS with the SMTP server failed: {error}") from error
        except (OSError, smtplib.SMTPException) as error:
            raise TransientDeliveryError(f"SMTP {self.host}:{self.port} unreachable: "
                                         f"{error!r}") from error
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection (QUIT); connections in use close when their mail is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for smtp, _ in idle:
            _quit(smtp)

    def _send(self, message: EmailMessage) -> None:
        smtp = self._reusable()
        reused = smtp is not None
        if smtp is None:
            smtp = self._connect()
        try:
            smtp.send_message(message)
        except _DROPPED:
            smtp.close()
            if not reused:
                raise
            smtp = self._connect()  # dropped while it idled: once more, on a fresh one
            try:
                smtp.send_message(message)
            except BaseException:
                smtp.close()
                raise
        except BaseException:
            smtp.close()  # whatever state it is in, it is never reused
            raise
        self._put_back(smtp)

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                smtp.starttls(context=self._tls)
            if self.username is not None and self.password is not None:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _reusable(self) -> smtplib.SMTP | None:
        """The most recently used idle connection that is still alive, if any."""
        while True:
            with self._lock:
                stale = self._expire()
                smtp = self._idle.pop()[0] if self._idle else None
            for old in stale:
                old.close()
            if smtp is None or not _dropped(smtp):
                return smtp
            smtp.close()

    def _expire(self) -> list[smtplib.SMTP]:
        """Take the idle connections older than `max_idle` out of the pool (lock held)."""
        limit = self._clock() - self.max_idle
        count = 0
        while count < len(self._idle) and self._idle[count][1] < limit:
            count += 1
        stale = [smtp for smtp, _ in self._idle[:count]]
        del self._idle[:count]
        return stale

    def _put_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append((smtp, self._clock()))
                return
        _quit(smtp)


def _dropped(smtp: smtplib.SMTP) -> bool:
    """An idle SMTP connection has nothing to read: if it has, the server closed it (EOF)
    or said goodbye (421)."""
    sock = smtp.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()  # not select(): it fails on descriptors past 1023
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        if smtp.sock is not None:
            smtp.sock.settimeout(2.0)  # a polite goodbye, not a long wait at shutdown
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def _by_code(code: int, text: str) -> Exception:
    return TransientDeliveryError(text) if 400 <= code < 500 else PermanentDeliveryError(text)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
