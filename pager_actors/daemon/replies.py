"""Answering a page from where it lands: signed links in mails, and replies to SMS.

- `GET /respond/{id}` shows the incident and one button; it changes nothing,
  since mail scanners and chat previews fetch links. `POST /respond/{id}` (the
  button) acts and says what happened; a second use says "already
  acknowledged", which is not an error. The id is signed (`domain/links.py`),
  bound to the service, the incident and the paged target, and expires.
- `POST /api/v1/sms/inbound` is Twilio's inbound-message webhook: checked by
  its `X-Twilio-Signature` (not by the API token), "ACK 4821" or "RES 4821"
  from a number the incident paged acts on that incident, and the answer is
  TwiML with one message. A repeated `MessageSid` gets the same answer and
  acts once. The body is read before the signature is checked, so anybody can
  send one: over 16 KiB it is 413, not UTF-8 400 (JSON, like the 403).

Who acted goes into the timeline: `mail:`/`sms:` and the user's id when the
contact belongs to a `[[users]]` entry, else the contact masked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pager_actors._pager import Pager
from pager_actors._service import Outcome
from pager_actors.daemon.http import committed
from pager_actors.daemon.payloads import HttpError
from pager_actors.domain import Contact, MonitoredService, parse_contact
from pager_actors.domain.links import ACTIONS, LinkClaim, LinkError, Links, verify
from pager_actors.logs import get_logger
from pager_actors.ports import StoreError

log = get_logger("pager_actors.daemon.replies")

# Link pages may not be framed, and never tell where they were opened from.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
REPLY = re.compile(r"\s*(ack|res)\s+([0-9a-z]{4,6})\s*[.!]?\s*", re.IGNORECASE)
MAX_FORM_BYTES = 16 * 1024
SEEN_MESSAGES = 10_000

Who = Callable[[str, Contact], str]  # (channel, target) -> "mail:alice" or "mail:a***@x.com"


def masked_who(channel: str, target: Contact) -> str:
    """`by` for a contact that belongs to nobody known: the channel and the masked contact."""
    return f"{channel}:{target.masked}"


def routes(pager: Pager, *, links: Links | None, twilio_token: str | None,
           public_url: str | None, who: Who = masked_who) -> list[Route]:
    """The link pages (when `links`) and the SMS webhook (404 unless replies are on)."""
    found: list[Route] = []
    if links is not None:
        pages = _LinkPages(pager, links, who)
        found.append(Route("/respond/{link_id}", pages.show, methods=["GET"]))
        found.append(Route("/respond/{link_id}", pages.act, methods=["POST"]))
    inbound = _SmsReplies(pager, twilio_token, public_url, who) \
        if twilio_token is not None and public_url is not None else None
    found.append(Route("/api/v1/sms/inbound", inbound.receive if inbound else _no_replies,
                       methods=["POST"]))
    return found


async def _no_replies(request: Request) -> Response:
    return JSONResponse({"error": "SMS replies are off: they need [server] public_url and "
                                  "[sms] kind = \"twilio\""}, status_code=404)


class _LinkPages:
    def __init__(self, pager: Pager, links: Links, who: Who) -> None:
        self._pager, self._links, self._who = pager, links, who

    async def show(self, request: Request) -> Response:
        """GET: the incident and one button. Changes nothing."""
        found = await self._claim(request)
        if isinstance(found, Response):
            return found
        claim, state = found
        verb = ACTIONS[claim.action]
        incident = state.incident
        assert incident is not None
        body = (f"{_summary(state)}<form method=\"post\">"
                f"<button type=\"submit\">{verb.capitalize()} incident #{incident.number}"
                "</button></form>")
        return _page(f"{state.service_id}: {verb} incident #{incident.number}", body)

    async def act(self, request: Request) -> Response:
        """POST: acknowledge or resolve, then say what happened."""
        found = await self._claim(request)
        if isinstance(found, Response):
            return found
        claim, state = found
        incident = state.incident
        assert incident is not None
        uri = self._links.contact(claim, incident.paged)
        assert uri is not None  # checked by _claim
        by = self._who("mail", parse_contact(uri))
        command = self._pager.acknowledge if claim.action == "ack" else self._pager.healthy
        title = f"{claim.service_id} #{claim.incident}"
        try:
            outcome: Outcome = await committed(command(claim.service_id, by=by,
                                                       incident=claim.incident))
        except HttpError as error:
            return _page(title, f"<p>Not recorded: {html.escape(str(error))}. Try again in a "
                                "moment.</p>", error.status)
        return _page(title, f"<p class=\"done\">{html.escape(_said(outcome, claim.incident))}"
                            "</p>")

    async def _claim(self, request: Request) -> tuple[LinkClaim, MonitoredService] | Response:
        """The link's claim and the service's state, or the page that says why not."""
        try:
            claim = verify(self._links.keys, request.path_params["link_id"], datetime.now(UTC))
        except LinkError as error:
            return _page("Link not valid", f"<p>{html.escape(str(error))}.</p>", 403)
        try:
            state = await asyncio.to_thread(self._pager.state, claim.service_id)
        except Exception:  # the service left the config
            return _page("Unknown service", "<p>This service is no longer paged.</p>", 404)
        incident = state.incident
        if incident is None or incident.number != claim.incident:
            return _page(f"{claim.service_id} #{claim.incident}",
                         f"<p class=\"done\">{html.escape(claim.service_id)} incident "
                         f"#{claim.incident} is no longer open: nothing to do.</p>")
        if self._links.contact(claim, incident.paged) is None:
            return _page("Link not valid", "<p>This link is not valid.</p>", 403)
        return claim, state


class _SmsReplies:
    def __init__(self, pager: Pager, auth_token: str, public_url: str, who: Who) -> None:
        self._pager, self._token, self._who = pager, auth_token.encode(), who
        self._public_url = public_url.rstrip("/")
        self._seen: OrderedDict[str, str] = OrderedDict()  # MessageSid -> the answer given
        self._lock = asyncio.Lock()

    async def receive(self, request: Request) -> Response:
        try:
            data = await _form(request)
        except HttpError as error:  # the client's fault: said in JSON, like the 403 below
            return JSONResponse({"error": str(error)}, status_code=error.status)
        if not self._signed(request, data):
            return JSONResponse({"error": "missing or wrong X-Twilio-Signature"},
                                status_code=403)
        params = dict(data)
        sid = params.get("MessageSid", "")
        async with self._lock:  # one answer per message, even when Twilio sends it twice
            answer = self._seen.get(sid) if sid else None
            if answer is None:
                answer = await self._answer(params.get("From", ""), params.get("Body", ""))
                if sid:
                    self._seen[sid] = answer
                    while len(self._seen) > SEEN_MESSAGES:
                        self._seen.popitem(last=False)
        return Response(_twiml(answer), media_type="text/xml")

    def _signed(self, request: Request, data: list[tuple[str, str]]) -> bool:
        """Twilio's scheme: HMAC-SHA1 with the auth token over the URL it called (our
        public URL, the path and the query) and each POST parameter, sorted, name then
        value."""
        given = request.headers.get("x-twilio-signature", "")
        url = self._public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        expected = twilio_signature(self._token, url, data)
        return hmac.compare_digest(given.encode(), expected.encode())

    async def _answer(self, number: str, text: str) -> str:
        match = REPLY.fullmatch(text)
        if match is None:
            return "Reply ACK <code> to acknowledge or RES <code> to resolve."
        action, code = match[1].lower(), match[2]
        try:  # in a cluster, a code of another node's shard is read from the store
            holder = await asyncio.to_thread(self._pager.reply_code, code)
        except StoreError:
            return "Not recorded: the pager is busy. Reply again in a moment."
        if holder is None:
            return f"Unknown code {code}."
        if holder.released is not None:
            return f"{holder.service_id} incident {code} is no longer open: nothing to do."
        try:
            state = await asyncio.to_thread(self._pager.state, holder.service_id)
        except Exception:
            return f"Unknown code {code}."
        incident = state.incident
        if incident is None or incident.number != holder.incident:
            return f"{holder.service_id} #{holder.incident} is no longer open."
        if f"sms:{number}" not in incident.paged:
            log.warning("sms_reply_refused", service=holder.service_id,
                        incident=holder.incident, reason="number not paged")
            return "Not paged for this incident."
        command = self._pager.acknowledge if action == "ack" else self._pager.healthy
        try:
            outcome: Outcome = await committed(command(holder.service_id,
                                                       by=self._who("sms",
                                                                    parse_contact(
                                                                        f"sms:{number}")),
                                                       incident=holder.incident))
        except HttpError:
            return "Not recorded: the pager is busy. Reply again in a moment."
        return _said(outcome, holder.incident)


def twilio_signature(auth_token: bytes, url: str, params: list[tuple[str, str]]) -> str:
    """What Twilio puts in X-Twilio-Signature for a form POST to `url`."""
    signed = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token, signed.encode(), hashlib.sha1).digest()
                            ).decode()


def _said(outcome: Outcome, number: int) -> str:
    """What a link page or an SMS answer says happened."""
    name = f"{outcome.service_id} #{number}"
    if outcome.event == "acknowledged":
        return f"{name} acknowledged. Nobody else is paged for it now."
    if outcome.event == "resolved":
        return f"{name} resolved."
    if outcome.reason == "already_acknowledged":
        return f"{name} was already acknowledged."
    return f"{name} is no longer open: nothing to do."


async def _form(request: Request) -> list[tuple[str, str]]:
    """The form-encoded body, at most MAX_FORM_BYTES, every byte and escape UTF-8; else
    HttpError 413 or 400. Runs before the signature check: anybody can send it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HttpError(413, f"body of {declared} bytes is over the {MAX_FORM_BYTES}-byte "
                             "limit")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HttpError(413, f"body is over the {MAX_FORM_BYTES}-byte limit")
    try:  # strict: a percent-escape that is not UTF-8 would otherwise turn into U+FFFD
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                         encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise HttpError(400, "the form is not UTF-8") from error


def _twiml(message: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
            f"{html.escape(message, quote=False)}</Message></Response>")


def _summary(state: MonitoredService) -> str:
    incident = state.incident
    assert incident is not None
    ack = f"acknowledged by {incident.acknowledged_by}" if incident.acknowledged \
        else "not acknowledged"
    alerts = "".join(f"<li>{html.escape(a.message)}</li>" for a in state.alerts)
    return (f"<p class=\"state\">Level {incident.level}, {html.escape(ack)}</p>"
            f"<p class=\"message\">{html.escape(incident.message)}</p>"
            + (f"<ul>{alerts}</ul>" if len(state.alerts) > 1 else ""))


_STYLE = """
body{font:18px/1.5 system-ui,sans-serif;margin:0;background:#f5f5f2;color:#1b1b1b}
main{max-width:34rem;margin:3rem auto;padding:1.5rem;background:#fff;border-radius:8px;
border:1px solid #d6d6d0}
h1{font-size:1.3rem;margin:0 0 1rem}.message{font-size:1.2rem;font-weight:600}
.state{color:#4a4a44}.done{font-size:1.2rem}
button{font:inherit;font-weight:600;padding:.8rem 1.4rem;border-radius:6px;border:0;
background:#1d4f91;color:#fff;cursor:pointer;width:100%}
button:focus{outline:3px solid #f2a900;outline-offset:2px}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status, headers=PAGE_HEADERS)
