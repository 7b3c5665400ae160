"""What one message says for several pages a throttle held back (a bundle).

A contact over its limit (`[sms] max_per_contact` messages per `throttle_window`)
gets the pages that waited as one message once the window allows:

- an SMS lists them, "3 more pages: checkout L1 #12, search L2 #4, shop #3
  acknowledged", within 1,600 characters (the list is cut with `…`); when SMS
  replies can arrive, each page names its incident's own code ("checkout L1 #12
  code 4821") and the message ends saying how to reply;
- a mail has a one-line Subject naming how many, and a body that lists them,
  then gives each page's own headline and text (links included), within 64 KiB.
"""

from __future__ import annotations

from collections.abc import Sequence

from pager_actors.domain.decide import Notify
from pager_actors.domain.texts import (
    ELLIPSIS,
    MAIL_BODY_MAX_BYTES,
    SMS_MAX_CHARS,
    SUBJECT_MAX_CHARS,
    cut,
    cut_utf8,
)

_SEPARATOR = ", "
_HOW_TO_REPLY = ". Reply ACK or RES and a code."


def label(page: Notify) -> str:
    """How a bundle names one page: `checkout L2 #12` (`checkout L2 #12 code 4821` when it
    carries a reply code), or `checkout #12 acknowledged` for a status update."""
    _, _, rest = page.key.partition(f"{page.service_id}/{page.incident}/")
    if rest.startswith("status/"):
        kind = rest.split("/", 2)[1].rstrip("0123456789")
        return f"{page.service_id} #{page.incident} {kind}"
    code = f" code {page.reply_code}" if page.reply_code else ""
    return f"{page.service_id} L{page.level} #{page.incident}{code}"


def _heading(pages: Sequence[Notify]) -> str:
    return f"{len(pages)} more page{'s' if len(pages) != 1 else ''}"


def bundle_sms(pages: Sequence[Notify]) -> str:
    """`3 more pages: checkout L1 #12, search L2 #4, …`: whole names only, 1,600 characters
    at most, with how to reply when a page names a code."""
    head = f"{_heading(pages)}: "
    tail = _HOW_TO_REPLY if any(page.reply_code for page in pages) else ""
    labels = [label(page) for page in pages]
    text = head + _SEPARATOR.join(labels) + tail
    if len(text) <= SMS_MAX_CHARS:
        return text
    room = SMS_MAX_CHARS - len(head) - len(_SEPARATOR + ELLIPSIS) - len(tail)
    kept: list[str] = []
    used = 0
    for name in labels:
        used += len(name) + (len(_SEPARATOR) if kept else 0)
        if used > room:
            break
        kept.append(name)
    return head + _SEPARATOR.join([*kept, ELLIPSIS]) + tail


def bundle_mail(pages: Sequence[Notify]) -> tuple[str, str]:
    """(Subject, body): the Subject names how many pages and the first few, on one line; the
    body lists every page, then each page's Subject and text, within 64 KiB."""
    labels = [label(page) for page in pages]
    subject = cut(f"[pager] {_heading(pages)}: {_SEPARATOR.join(labels)}", SUBJECT_MAX_CHARS)
    listing = "\n".join(f"- {name}" for name in labels)
    details = "\n\n".join(f"--- {page.subject or name}\n\n{page.text.rstrip()}"
                          for page, name in zip(pages, labels, strict=True))
    body = (f"{_heading(pages)}, held back while this address was over its message limit:"
            f"\n\n{listing}\n\n{details}\n")
    return subject, cut_utf8(body, MAIL_BODY_MAX_BYTES)
