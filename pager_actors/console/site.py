"""What every console page shares: the session gate, CSRF, rendering, facade calls.

The console reads only its session cookie: a bearer token does not log in
here. Every request looks its user up again in the users in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
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
from pager_actors.console.sessions import Session, SessionStore, credential
from pager_actors.domain import EscalationPolicy, UnknownServiceError
from pager_actors.domain.errors import PagerError
from pager_actors.domain.people import User
from pager_actors.logs import get_logger
from pager_actors.ports import StoreError

log = get_logger("pager_actors.console")

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


class Console:
    """What every page needs: the engine, the people, sessions, limits and templates."""

    def __init__(self, pager: Pager, *, service_ids: Callable[[], list[str]],
                 policy: Callable[[str], EscalationPolicy | None],
                 users: Callable[[], Iterable[User]], ack_timeout: timedelta | None,
                 secure_cookies: bool, trusted_proxies: Sequence[IPNetwork],
                 limits: LoginLimits, checker: PasswordChecker,
                 clock: Callable[[], float], now: Callable[[], datetime]) -> None:
        self.pager, self.service_ids, self.policy = pager, service_ids, policy
        self.users, self.ack_timeout, self.now = users, ack_timeout, now
        self.secure, self.trusted_proxies = secure_cookies, tuple(trusted_proxies)
        self.sessions = SessionStore(clock=clock)
        self.limiter = LoginLimiter(limits, clock=clock)
        self.checker = checker
        # __Host- cookies are only accepted over https, from this host, for every path.
        self.cookie = "__Host-pager_session" if secure_cookies else "pager_session"
        self.login_key = secrets.token_bytes(32)  # signs the login form's CSRF token
        css = (HERE / "static" / "console.css").read_bytes()
        self.css, self.css_version = css, hashlib.sha256(css).hexdigest()[:12]
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=True, undefined=StrictUndefined,
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.globals["when"] = views.when

    # -- who is asking -------------------------------------------------------

    def people(self) -> dict[str, User]:
        return {user.id: user for user in self.users()}

    def authenticated(self, request: Request) -> tuple[Session, User] | None:
        """The request's live session and its user, checked against the users in force."""
        session = self.sessions.get(request.cookies.get(self.cookie))
        if session is None:
            return None
        user = self.people().get(session.user_id)
        if user is None or user.password_hash is None or credential(user) != session.credential:
            self.sessions.end(session.id)
            log.info("console_session_ended", user=session.user_id,
                     reason="user removed or password changed")
            return None
        return session, user

    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"),
                              self.trusted_proxies)

    async def posted(self, request: Request) -> tuple[Session, User, dict[str, str]]:
        """A form posted by a logged-in user with the session's CSRF token, or 403."""
        form = await posted_form(request)
        found = self.authenticated(request)
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

    def render(self, request: Request, template: str, status: int = 200,
               found: tuple[Session, User] | None = None,
               headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        session, user = found if found else (None, None)
        context.setdefault("refresh", None)
        page = self.templates.get_template(template).render(
            user=user, csrf=session.csrf if session else "",
            flash=session.take_flash() if session else None,
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
