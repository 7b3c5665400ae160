"""Page texts: whatever the alert says, every Subject, body and SMS is sendable and bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pager_actors.domain import (
    EmailTarget,
    EscalationPolicy,
    Level,
    MonitoredService,
    Notify,
    PageFormat,
    RaiseAlert,
    SmsTarget,
    decide,
)
from pager_actors.domain.texts import (
    MAIL_BODY_MAX_BYTES,
    SMS_MAX_CHARS,
    SUBJECT_MAX_CHARS,
    cut,
    cut_utf8,
    mail_body,
    one_line,
    sms_text,
    subject,
)

POLICY = EscalationPolicy("checkout", [Level([EmailTarget("a@example.com"),
                                              SmsTarget("+33600000001")])])


def pages(message: str, fmt: PageFormat | None = None) -> tuple[Notify, Notify]:
    decision = decide(MonitoredService("checkout"), RaiseAlert(message), POLICY,
                      now=datetime(2026, 11, 30, tzinfo=UTC), ack_timeout=timedelta(minutes=1),
                      fmt=fmt or PageFormat())
    mail, sms = (e for e in decision.effects if isinstance(e, Notify))
    return mail, sms


def test_a_multi_line_alert_gives_a_one_line_subject_and_keeps_its_lines_in_the_body():
    """CR, LF and tabs become single spaces in the Subject; the body keeps the lines."""
    mail, _ = pages("line1\r\nline2\n\tline3")
    assert mail.subject == "[checkout] line1 line2 line3"
    assert "line1\nline2\n\tline3" in mail.text


def test_control_characters_become_one_space_and_nul_is_removed():
    """Runs of C0/C1 controls, DEL and Unicode line separators are one space; NUL vanishes."""
    assert one_line("a\x00b\x1b[31mc\x7f\x85d\u2028e") == "ab [31mc d e"
    assert "\x00" not in pages("x\x00y")[0].text


def test_a_long_subject_is_cut_to_200_characters_with_an_ellipsis():
    """The Subject never passes 200 characters and ends in … when cut."""
    text = subject("checkout", "x" * 1000)
    assert len(text) == SUBJECT_MAX_CHARS and text.endswith("…")
    assert subject("checkout", "short") == "[checkout] short"


def test_a_one_megabyte_alert_makes_a_bounded_mail_and_sms():
    """A 1 MB alert gives a Subject of 200 characters, a body of at most 64 KiB, a short SMS."""
    mail, sms = pages("é" * 1_000_000)
    assert len(mail.subject) <= SUBJECT_MAX_CHARS
    assert len(mail.text.encode()) <= MAIL_BODY_MAX_BYTES
    assert mail.text.startswith("[checkout] level 1 page, incident #1")
    assert "…" in mail.text
    assert len(sms.text) <= 300 + 60 and "…" in sms.text


def test_the_sms_carries_at_most_max_message_chars_of_the_alert():
    """[sms] max_message_chars caps the alert's part; the pager's own words are never cut."""
    _, sms = pages("y" * 5000, PageFormat(sms_message_chars=50))
    assert sms.text.startswith("[checkout] level 1 page, incident #1: ")
    assert sms.text.count("y") == 49 and sms.text.endswith("….")


def test_the_whole_sms_stays_within_1600_characters_and_keeps_its_tail():
    """Text the pager appends (a round, a reply code) is kept whole; the total stays <= 1,600."""
    head = "[" + "s" * 128 + "] level 99 page, incident #999999"
    tail = "Reply ACK 4821 to acknowledge. " * 20
    text = sms_text(head, "z" * 10_000, PageFormat(sms_message_chars=1000), tail.strip())
    assert len(text) <= SMS_MAX_CHARS
    assert text.endswith(tail.strip()) and text.startswith(head)


def test_the_mail_body_tail_is_never_cut():
    """Under the 64 KiB cap, the head and the tail survive; only the message is cut."""
    body = mail_body("HEAD", "m" * 200_000, "TAIL")
    assert body.startswith("HEAD\n\n") and body.endswith("\nTAIL")
    assert len(body.encode()) <= MAIL_BODY_MAX_BYTES


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5])
def test_cutting_utf8_never_splits_a_character(limit):
    """A cut in the middle of a multi-byte character drops the partial character."""
    text = cut_utf8("ééééé", limit + 3)
    assert len(text.encode()) <= limit + 3
    text.encode("utf-8")  # no lone byte, no replacement


def test_cut_leaves_short_text_alone():
    """Text within the limit is returned unchanged, without an ellipsis."""
    assert cut("abc", 3) == "abc" and cut("abcd", 3) == "ab…"


def test_page_format_refuses_absurd_limits():
    """An SMS budget under 20 or over 1,000 characters is refused."""
    with pytest.raises(ValueError, match="sms_message_chars"):
        PageFormat(sms_message_chars=5)
    with pytest.raises(ValueError, match="sms_message_chars"):
        PageFormat(sms_message_chars=1601)
