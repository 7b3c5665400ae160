"""Signed links and Twilio signatures: forged, expired or foreign ids never pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pager_actors.daemon.replies import twilio_signature
from pager_actors.domain.links import LinkError, LinkKey, claim_for, sign, verify

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
KEY, OLD = LinkKey(b"k" * 32), LinkKey(b"o" * 32)


def test_a_signed_link_verifies_to_its_claim():
    """Action, service, incident, target and a 24 h expiry come back as signed."""
    claim = claim_for("ack", "checkout", 12, "t1", NOW)
    assert verify((KEY,), sign(KEY, claim), NOW + timedelta(hours=23)) == claim


def test_a_link_carries_no_contact():
    """The id names the target by its place in the policy, never by its address."""
    link = sign(KEY, claim_for("res", "checkout", 12, "t2", NOW))
    assert "@" not in link and "+33" not in link and "sms" not in link


@pytest.mark.parametrize("tamper", [
    lambda link: link[:-2] + ("AA" if not link.endswith("AA") else "BB"),  # the signature
    lambda link: "x" + link[1:],                                             # the claim
    lambda link: link.replace(KEY.kid, "00000000"),                          # the key id
    lambda link: link.split(".")[0],                                         # no signature
    lambda link: "",
    lambda link: link[:-1] + "\u00e9",                                       # non-ASCII MAC
    lambda link: link.replace(KEY.kid, "\u00e9" * 8),                        # and key id
])
def test_a_forged_or_truncated_link_is_refused(tamper):
    """Any change to the id fails its check."""
    link = sign(KEY, claim_for("ack", "checkout", 12, "t0", NOW))
    with pytest.raises(LinkError, match="not valid"):
        verify((KEY,), tamper(link), NOW)


def test_a_link_expires_after_24_hours():
    """At most 24 h."""
    link = sign(KEY, claim_for("ack", "checkout", 12, "t0", NOW))
    with pytest.raises(LinkError, match="expired"):
        verify((KEY,), link, NOW + timedelta(hours=24, seconds=1))


def test_a_link_signed_with_the_previous_key_still_verifies_after_a_rotation():
    """Keys carry an id: the old key verifies its links; the new one signs."""
    link = sign(OLD, claim_for("ack", "checkout", 12, "t0", NOW))
    assert verify((KEY, OLD), link, NOW).incident == 12
    with pytest.raises(LinkError):
        verify((KEY,), link, NOW)


def test_a_short_secret_is_refused_and_never_shown():
    """At least 32 bytes; repr shows only the key id."""
    with pytest.raises(ValueError, match="32 bytes"):
        LinkKey(b"short")
    assert "kkkk" not in repr(KEY)


def test_twilio_signature_matches_twilios_documented_example():
    """The example of Twilio's security documentation."""
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
              ("From", "+12349013030"), ("To", "+18005551212")]
    assert twilio_signature(b"12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                            params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
