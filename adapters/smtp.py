"""SmtpMailSender: email through an SMTP relay with stdlib smtplib (STARTTLS, AUTH).

Failures are sorted for the retry logic: network errors, timeouts and 4xx
replies are transient; 5xx replies and refused credentials are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError


class SmtpMailSender:
    """Sends each mail on its own connection, with a socket timeout (never hangs for ever)."""

    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = False,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, tls_context: ssl.SSLContext | None = None) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.timeout = timeout
        self._tls = tls_context or ssl.create_default_context()

    def send_mail(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._tls)
                if self.username is not None and self.password is not None:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
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


def _by_code(code: int, text: str) -> Exception:
    return TransientDeliveryError(text) if 400 <= code < 500 else PermanentDeliveryError(text)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
