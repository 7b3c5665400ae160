"""Masking of contact details, so logs never hold a full address or number."""

from __future__ import annotations

from pager_actors.domain.model import EmailTarget, SmsTarget, Target


def mask_email(address: str) -> str:
    """`oncall@example.com` -> `o***@example.com`."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """`+33600000001` -> `+336****0001`: the country prefix and the last four digits."""
    if len(number) <= 8:
        return number[:2] + "****"
    return f"{number[:4]}****{number[-4:]}"


def mask_target(target: Target) -> str:
    match target:
        case EmailTarget(address):
            return mask_email(address)
        case SmsTarget(number):
            return mask_phone(number)
