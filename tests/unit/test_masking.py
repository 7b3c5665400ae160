"""Contact details are masked before they reach a log line."""

from __future__ import annotations

from pager_actors.domain import (
    EmailTarget,
    SmsTarget,
    mask_email,
    mask_phone,
    mask_target,
    mask_text,
)


def test_phone_keeps_prefix_and_last_four_digits():
    """+33600000001 is logged as +336****0001."""
    assert mask_phone("+33600000001") == "+336****0001"


def test_short_phone_shows_almost_nothing():
    """A short number never shows more than two characters."""
    assert mask_phone("+3312") == "+3****"


def test_email_keeps_first_letter_and_domain():
    """oncall@example.com is logged as o***@example.com."""
    assert mask_email("oncall@example.com") == "o***@example.com"


def test_mask_target_dispatches_on_kind():
    """Targets are masked according to their channel."""
    assert mask_target(EmailTarget("bob@x.io")) == "b***@x.io"
    assert mask_target(SmsTarget("+33600000001")) == "+336****0001"


def test_free_text_is_masked_but_keeps_codes_and_dates():
    """Gateway errors lose their numbers and addresses, not their codes or dates."""
    text = ("The 'To' number +33600000001 is not valid (21211) on 2026-11-28; "
            "550 <oncall@example.com> unknown")
    assert mask_text(text) == ("The 'To' number +336****0001 is not valid (21211) on "
                               "2026-11-28; 550 <o***@example.com> unknown")
