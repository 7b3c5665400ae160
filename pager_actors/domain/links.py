"""Signed links in mail pages: "Acknowledge" and "Resolve" in one click.

A link carries an opaque id: its claim (action, service, incident, which
contact was paged, expiry) in base64url, the id of the key that signed it,
and an HMAC-SHA256 over both. It never carries the contact's address, which
would leak through logs and Referer headers: the contact is named by a keyed
digest, which the server matches against the contacts the incident paged.
Several keys verify, so the secret can be rotated while links signed with the
old one still work (they expire within 24 h anyway).

Pure: the caller passes `now`; hmac and hashlib are the standard library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

LINK_LIFETIME = timedelta(hours=24)
MIN_SECRET_BYTES = 32
ACTIONS = {"ack": "acknowledge", "res": "resolve"}


@dataclass(frozen=True)
class LinkKey:
    """A signing secret and its id (derived from it, so configs need not name one)."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a link secret needs at least {MIN_SECRET_BYTES} bytes")

    @property
    def kid(self) -> str:
        return hashlib.sha256(b"pager-actors link key\0" + self.secret).hexdigest()[:8]

    def __repr__(self) -> str:  # never the secret itself
        return f"LinkKey(kid={self.kid!r})"


@dataclass(frozen=True)
class Links:
    """Where people reach the daemon, and the keys: the first signs, all verify."""

    public_url: str
    keys: tuple[LinkKey, ...]

    def url(self, path: str) -> str:
        return f"{self.public_url.rstrip('/')}{path}"

    def respond_url(self, claim: LinkClaim) -> str:
        return self.url(f"/respond/{sign(self.keys[0], claim)}")

    def digest(self, uri: str) -> str:
        """The opaque name of a contact in a link: keyed, so a number cannot be guessed back
        from it by trying them all."""
        return contact_digest(self.keys[0], uri)

    def contact(self, claim: LinkClaim, uris: Iterable[str]) -> str | None:
        """Which of `uris` the claim names (checked with every key), or None."""
        return next((uri for uri in uris for key in self.keys
                     if _same(contact_digest(key, uri), claim.target)), None)


class LinkClaim(NamedTuple):
    """What a link lets its holder do: `action` (ack, res) on `incident` of `service_id`,
    as the paged contact whose keyed digest is `target`, until `expires`."""

    action: str
    service_id: str
    incident: int
    target: str
    expires: int  # seconds since the epoch


class LinkError(Exception):
    """The link is not one of ours, or no longer valid (the message says which)."""


def contact_digest(key: LinkKey, uri: str) -> str:
    return _b64(hmac.new(key.secret, b"contact\0" + uri.encode(), hashlib.sha256).digest()[:9])


def claim_for(action: str, service_id: str, incident: int, target: str,
              now: datetime) -> LinkClaim:
    return LinkClaim(action, service_id, incident, target,
                     int((now + LINK_LIFETIME).timestamp()))


def sign(key: LinkKey, claim: LinkClaim) -> str:
    body = _b64(json.dumps([claim.action, claim.service_id, claim.incident,
                            claim.target, claim.expires],
                           separators=(",", ":")).encode())
    return f"{body}.{key.kid}.{_mac(key, body)}"


def verify(keys: tuple[LinkKey, ...], link_id: str, now: datetime) -> LinkClaim:
    """The claim of a link signed by one of `keys` and not expired, else LinkError."""
    if not link_id.isascii():  # ours are base64url and hex: anything else is forged
        raise LinkError("this link is not valid")
    body, _, rest = link_id.partition(".")
    kid, _, mac = rest.partition(".")
    key = next((k for k in keys if _same(k.kid, kid)), None)
    if key is None or not _same(_mac(key, body), mac):
        raise LinkError("this link is not valid")
    try:
        action, service_id, incident, target, expires = json.loads(_unb64(body))
        claim = LinkClaim(str(action), str(service_id), int(incident), str(target),
                          int(expires))
    except (ValueError, TypeError, IndexError) as error:  # signed by us: cannot happen
        raise LinkError("this link is not valid") from error
    if claim.action not in ACTIONS:
        raise LinkError("this link is not valid")
    if now.timestamp() > claim.expires:
        raise LinkError("this link has expired")
    return claim


def _same(given: str, expected: str) -> bool:
    """Constant-time equality. On bytes: `compare_digest` raises TypeError for a str
    outside ASCII, and a forged id must be refused, not crash the page."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def _mac(key: LinkKey, body: str) -> str:
    digest = hmac.new(key.secret, f"{key.kid}.{body}".encode(), hashlib.sha256).digest()
    return _b64(digest[:24])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
