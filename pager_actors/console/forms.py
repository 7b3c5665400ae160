"""The console's small urlencoded forms, read from a bounded body.

Each form has a handful of short fields, so its body is read up to
`MAX_FORM_BYTES` and parsed with `urllib.parse.parse_qs`; anything else is
refused before it reaches a handler.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

MAX_FORM_BYTES = 8192
MAX_FIELDS = 16


class FormError(Exception):
    """A form that cannot be read: `status` is 400, 413 or 415."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields (each given once); FormError if it is not a small urlencoded form."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(415, "expected a form (application/x-www-form-urlencoded)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormError(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError) as error:
        raise FormError(400, "the form could not be read") from error
    if any(len(values) > 1 for values in fields.values()):
        raise FormError(400, "a field was given twice")
    return {name: values[0] for name, values in fields.items()}
