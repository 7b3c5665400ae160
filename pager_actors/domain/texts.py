"""The words of a page: what a mail's Subject and body and an SMS say, within their limits.

Alert text comes from monitoring and can hold anything: line breaks (which
make a mail header invalid), control characters, a megabyte of log. These
rules make every page sendable whatever the alert said:

- a Subject is one line (runs of control characters and line breaks become
  one space, NUL is removed) of at most 200 characters;
- a mail body keeps the message's line breaks and is at most 64 KiB of UTF-8;
- an SMS carries at most `sms_message_chars` characters of the alert (one
  line), and is at most 1,600 characters in all.

Only the alert's own text is ever cut, with a trailing `…`; what the pager
writes around it (service, level, incident) never is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pager_actors.domain.links import Links
from pager_actors.domain.model import EmailTarget, SmsTarget

ELLIPSIS = "…"
SUBJECT_MAX_CHARS = 200
SMS_MAX_CHARS = 1600
MAIL_BODY_MAX_BYTES = 64 * 1024

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# In a body, line breaks and tabs stay; other controls go.
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class PageFormat:
    """What pages carry besides the alert.

    - `sms_message_chars`: how much alert text an SMS carries (`[sms] max_message_chars`);
    - `links`: where and how to sign Acknowledge/Resolve links in mails (None: no links);
    - `reply_codes`: whether SMS pages end with a reply code (SMS replies can arrive);
    - `status_updates`: whether everyone paged hears when the incident is acknowledged
      or resolved;
    - `fallback`: who is paged when a level reaches nobody (nobody on call), and once
      when escalation is exhausted (`[pager] fallback`).
    """

    sms_message_chars: int = 300
    links: Links | None = None
    reply_codes: bool = False
    status_updates: bool = False
    fallback: tuple[EmailTarget | SmsTarget, ...] = ()

    def __post_init__(self) -> None:
        if not 20 <= self.sms_message_chars <= 1000:
            raise ValueError("sms_message_chars must be between 20 and 1000, got "
                             f"{self.sms_message_chars}")


def check_text(text: object, what: str) -> str:
    """`text` if it is a string UTF-8 can encode (no lone surrogate), else ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not valid Unicode text (lone surrogate)") from None
    return text


def one_line(text: str) -> str:
    """`"a\\r\\n\\tb"` -> `"a b"`: NUL removed, every run of control characters one space."""
    return _CONTROL_RUN.sub(" ", text.replace("\x00", "")).strip()


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and `…`, `limit` in all."""
    if len(text) <= limit:
        return text
    return text[:max(limit - 1, 0)] + ELLIPSIS


def cut_utf8(text: str, limit: int) -> str:
    """`text` if its UTF-8 takes at most `limit` bytes, else its start and `…` within them."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    room = max(limit - len(ELLIPSIS.encode()), 0)
    return data[:room].decode("utf-8", "ignore") + ELLIPSIS


def subject(service_id: str, line: str, tail: str = "") -> str:
    """A mail's Subject from the message's `one_line()`: at most SUBJECT_MAX_CHARS;
    `tail` is never cut."""
    tail = f" {tail}" if tail else ""
    return cut(f"[{service_id}] {line}", SUBJECT_MAX_CHARS - len(tail)) + tail


def headline(service_id: str, incident: int, level: int) -> str:
    """What every page starts with, and what tools parse: `[svc] level 2 page, incident #7`."""
    return f"[{service_id}] level {level} page, incident #{incident}"


def mail_body(head: str, message: str, *tails: str) -> str:
    """`head`, a blank line, the message with its line breaks, then each non-empty tail
    after a blank line; within 64 KiB, only the message being cut."""
    tail = "\n\n".join(filter(None, tails))
    clean = message if message.isprintable() else _BODY_CONTROL.sub(
        "", message.replace("\r\n", "\n").replace("\r", "\n"))
    frame = f"{head}\n\n\n\n{tail}"
    room = MAIL_BODY_MAX_BYTES - len(frame.encode("utf-8", "surrogatepass"))
    if 4 * len(clean) > room:  # could be over: measure the UTF-8 (4 bytes a character at most)
        clean = cut_utf8(clean, room)
    body = f"{head}\n\n{clean}\n"
    return f"{body}\n{tail}" if tail else body


def sms_text(head: str, line: str, fmt: PageFormat, tail: str = "") -> str:
    """`head: line. tail`, `line` being the message's `one_line()`; the message is cut first,
    and the whole stays within 1,600 characters."""
    frame = f"{head}: . {tail}".rstrip()
    room = max(min(fmt.sms_message_chars, SMS_MAX_CHARS - len(frame)), 1)
    text = f"{head}: {cut(line, room)}."
    return f"{text} {tail}" if tail else text
