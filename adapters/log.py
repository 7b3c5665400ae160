"""Senders that write each notification to the log instead of sending it (demos, dry runs).

The log line carries the full text but a masked recipient: logs never hold a
full address or number.
"""

from __future__ import annotations

from pager_actors.domain import mask_email, mask_phone
from pager_actors.logs import get_logger

log = get_logger("pager_actors.adapters.log")


class LogMailSender:
    def send_mail(self, to: str, subject: str, body: str) -> None:
        log.info("mail_out", to=mask_email(to), subject=subject, body=body)


class LogSmsSender:
    def send_sms(self, to: str, text: str) -> None:
        log.info("sms_out", to=mask_phone(to), text=text)
