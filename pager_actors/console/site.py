"""What every console page shares: the session gate, CSRF, rendering, facade calls.

The console reads only its session cookie: a bearer token does not log in
here. Every request looks its user up again in the users in force. Sessions and
failed logins live in stores (`ports.Sessions`, `ports.LoginAttempts`) that may
be a database shared by a cluster: they are called on a worker thread, never on
the event loop, and one that cannot answer makes a 503 page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pykka
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from pager_actors._future import CommandFuture
from pager_actors._future import settled as within
from pager_actors._pager import Pager
from pager_actors.console import views
from pager_actors.console.clients import IPNetwork, client_address
from pager_actors.console.forms import FormError, read_form
from pager_actors.console.limits import LoginLimiter, LoginLimits
from pager_actors.console.passwords import PasswordChecker
from pager_actors.console.ports import Flash, LoginAttempts, Session, Sessions, credential
from pager_actors.console.sessions import SessionStore
from pager_actors.domain import EscalationPolicy, UnknownServiceError
from pager_actors.domain.errors import PagerError
from pager_actors.domain.people import User
from pager_actors.logs import get_logger
from pager_actors.ports import StoreError

log = get_logger("pager_actors.console")

T = TypeVar("T")

HERE = Path(__file__).parent
COMMIT_TIMEOUT = 10.0
# The pages load nothing from anywhere else and run no script; forms post here only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleError(Exception):
    """A request the console refuses or cannot serve; shown as an HTML page."""

    def __init__(self, status: int, title: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message
        self.headers = headers or {}


class StoreUnavailable(ConsoleError):
    """The sessions or the login limits cannot answer: a 503 page, shown without asking
    them again who is asking."""


class Console:
    """What every page needs: the engine, the people, sessions, limits and templates.

    `sessions`, `limiter` and `login_key` default to this process's own (memory,
    `clock`, a random key); a cluster passes ones every node shares, so any node
    serves any request.
    """

    def __init__(self, pager: Pager, *, service_ids: Callable[[], list[str]],
                 policy: Callable[[str], EscalationPolicy | None],
                 users: Callable[[], Iterable[User]], ack_timeout: timedelta | None,
                 secure_cookies: bool, trusted_proxies: Sequence[IPNetwork],
                 limits: LoginLimits, checker: PasswordChecker,
                 clock: Callable[[], float], now: Callable[[], datetime],
                 sessions: Sessions | None = None, limiter: LoginAttempts | None = None,
                 login_key: bytes | None = None) -> None:
        self.pager, self.service_ids, self.policy = pager, service_ids, policy
        self.users, self.ack_timeout, self.now = users, ack_timeout, now
        self.secure, self.trusted_proxies = secure_cookies, tuple(trusted_proxies)
        self.sessions: Sessions = sessions if sessions is not None else SessionStore(
            clock=clock)
        self.limiter: LoginAttempts = limiter if limiter is not None else LoginLimiter(
            limits, clock=clock)
        self.checker = checker
        # __Host- cookies are only accepted over https, from this host, for every path.
        self.cookie = "__Host-pager_session" if secure_cookies else "pager_session"
        # Signs the login form's CSRF token: a node accepts the forms of nodes sharing it.
        self.login_key = login_key if login_key is not None else secrets.token_bytes(32)
        if len(self.login_key) < 32:
            raise ValueError("the login form's key must be at least 32 bytes")
        css = (HERE / "static" / "console.css").read_bytes()
        self.css, self.css_version = css, hashlib.sha256(css).hexdigest()[:12]
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=True, undefined=StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.globals["when"] = views.when

    # -- who is asking -------------------------------------------------------

    def people(self) -> dict[str, User]:
        return {user.id: user for user in self.users()}

    async def authenticated(self, request: Request) -> tuple[Session, User] | None:
        """The request's live session and its user, checked against the users in force;
        a 503 page if the sessions cannot be read."""
        session_id = request.cookies.get(self.cookie)
        if not session_id:
            return None
        session = await self.stored("read its sessions", self.sessions.get, session_id)
        if session is None:
            return None
        user = self.people().get(session.user_id)
        if user is None or user.password_hash is None or credential(user) != session.credential:
            await self.stored("end a session", self.sessions.end, session.id)
            log.info("console_session_ended", user=session.user_id,
                     reason="user removed or password changed")
            return None
        return session, user

    async def viewer(self, request: Request) -> tuple[Session, User] | None:
        """For error pages: who is asking if that can be told, else nobody (an error page
        must not fail for want of its header)."""
        try:
            return await self.authenticated(request)
        except ConsoleError:
            return None

    async def stored(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """A call to the sessions or the login limits, on a worker thread (they may wait on
        a database); one that fails makes a 503 page."""
        try:
            return await asyncio.to_thread(call, *args)
        except StoreError as error:
            log.error("console_store_failed", during=what, reason=str(error))
            raise StoreUnavailable(503, "The console cannot answer right now",
                                   f"It could not {what}: {error}. Try again in a moment.",
                                   {"Retry-After": "5"}) from error

    async def flash(self, session: Session, flash: Flash) -> None:
        """What the session's next page says. A message that cannot be kept is logged, not
        shown as an error: what it reports has already happened."""
        try:
            await asyncio.to_thread(self.sessions.set_flash, session, flash)
        except StoreError as error:
            log.warning("console_flash_lost", reason=str(error))

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"),
                              self.trusted_proxies)

    async def posted(self, request: Request) -> tuple[Session, User, dict[str, str]]:
        """A form posted by a logged-in user with the session's CSRF token, or 403."""
        form = await posted_form(request)
        found = await self.authenticated(request)
        if found is None:
            raise ConsoleError(403, "Your session has ended",
                               "Log in again, then repeat what you were doing.")
        session, user = found
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            log.warning("console_csrf_refused", user=user.id, path=request.url.path)
            raise ConsoleError(403, "This form was refused",
                               "It did not come from this console's current page. Go back, "
                               "reload the page and try again.")
        return session, user, form

    # -- answers -------------------------------------------------------------

    async def render(self, request: Request, template: str, status: int = 200,
                     found: tuple[Session, User] | None = None,
                     headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        """The page, with the session's waiting message (taken: shown once)."""
        session, user = found if found else (None, None)
        context.setdefault("refresh", None)
        flash = None
        if session is not None:
            try:
                flash = await asyncio.to_thread(self.sessions.take_flash, session)
            except StoreError as error:  # the page matters more than its message
                log.warning("console_flash_unread", reason=str(error))
        page = self.templates.get_template(template).render(
            user=user, csrf=session.csrf if session else "", flash=flash,
            css=f"/static/console.css?v={self.css_version}", **context)
        return HTMLResponse(page, status_code=status, headers={**SECURITY_HEADERS,
                                                               **(headers or {})})

    def to_login(self, request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    async def read(self, call: Callable[..., Any], *args: Any) -> Any:
        """A read through the facade, on a worker thread; engine errors become pages."""
        try:
            return await asyncio.to_thread(call, *args)
        except UnknownServiceError as error:
            raise ConsoleError(404, "No such service", str(error)) from error
        except (PagerError, StoreError, pykka.Timeout) as error:
            raise ConsoleError(503, "The pager cannot answer right now", str(error)
                               ) from error


async def posted_form(request: Request) -> dict[str, str]:
    """The posted form's fields; {} for a body that is not a form at all (so it carries no
    CSRF token, and is refused as such); a form that cannot be read is an error page."""
    try:
        return await read_form(request)
    except FormError as error:
        if error.status != 415:
            raise ConsoleError(error.status, "This form could not be read", str(error)
                               ) from error
        return {}


async def settled(future: CommandFuture[Any]) -> Any:
    """Wait, without blocking the event loop, until the command is committed."""
    if not await within(future, COMMIT_TIMEOUT):
        raise ConsoleError(504, "Not confirmed yet", "The pager queued the command but did "
                           f"not confirm it within {COMMIT_TIMEOUT:.0f} s. Reload the page to "
                           "see whether it took effect.")
    try:
        return future.get(timeout=0)
    except UnknownServiceError as error:
        raise ConsoleError(404, "No such service", str(error)) from error
    except (PagerError, StoreError) as error:
        raise ConsoleError(503, "The pager could not do that now", str(error)) from error
