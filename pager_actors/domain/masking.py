"""Masking of contact details, so logs never hold a full address or number."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pager_actors.domain.model import Target


def mask_email(address: str) -> str:
    """`oncall@example.com` -> `o***@example.com`."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """`+33600000001` -> `+336****0001`: the country prefix and the last four digits."""
    if len(number) <= 8:
        return number[:2] + "****"
    return f"{number[:4]}****{number[-4:]}"


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+\d{6,15}\b|\b\d{9,15}\b")


def mask_text(text: str) -> str:
    """Mask every email address and phone number found in free text (gateway errors)."""
    text = _EMAIL.sub(lambda m: mask_email(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


def mask_target(target: Target) -> str:
    """The target's address or number, masked (computed once, when the target was made)."""
    return target.masked
