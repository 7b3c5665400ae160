"""Logging in and out: the login form, its CSRF token, rate limits and password checks.

The login form is protected like every other form: its token is an HMAC of a
random value held in a short-lived cookie, under the console's login key (this
process's own, or one shared by a cluster's nodes, so a form served by one node
is accepted by another). A login that succeeds gets a new session (a new id and
CSRF token), whatever cookie it came with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pager_actors.console.passwords import CheckerBusy
from pager_actors.console.site import Console, ConsoleError, log, posted_form

LOGIN_COOKIE = "pager_login"
LOGIN_COOKIE_SECONDS = 3600
MAX_NEXT_CHARS = 512


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site, never another site."""
    if (not target or not target.startswith("/") or target.startswith(("//", "/\\"))
            or len(target) > MAX_NEXT_CHARS or not target.isprintable()):
        return "/"
    return target


class LoginPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def _token(self, nonce: str) -> str:
        return hmac.new(self.console.login_key, nonce.encode(), hashlib.sha256).hexdigest()

    async def _page(self, request: Request, status: int = 200, error: str | None = None,
                    account: str = "", headers: dict[str, str] | None = None) -> Response:
        """The login form, with a fresh CSRF nonce in its cookie."""
        nonce = secrets.token_urlsafe(24)
        response = await self.console.render(
            request, "login.html", status, headers=headers, title="Log in",
            login_csrf=self._token(nonce), error=error, account=account,
            next=safe_next(request.query_params.get("next")),
            logged_out=request.query_params.get("out") == "1")
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_SECONDS, path="/login",
                            secure=self.console.secure, httponly=True, samesite="lax")
        return response

    async def form(self, request: Request) -> Response:
        if await self.console.authenticated(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return await self._page(request)

    async def submit(self, request: Request) -> Response:
        console = self.console
        form = await posted_form(request)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not hmac.compare_digest(form.get("csrf", "").encode(),
                                                self._token(nonce).encode()):
            raise ConsoleError(403, "This form was refused",
                               "The login form expired or did not come from this console. "
                               "Open the login page again.")
        account, password = form.get("user", "").strip(), form.get("password", "")
        client = console.client(request)
        refusal = await console.stored("check the login limits", console.limiter.refused,
                                       account, client)
        if refusal is not None:
            log.warning("console_login_limited", scope=refusal.scope, client=client,
                        retry_after=refusal.retry_after)
            minutes = -(-refusal.retry_after // 60)
            return await self._page(request, 429, account=account,
                              headers={"Retry-After": str(refusal.retry_after)},
                              error=f"Too many failed logins. Try again in {minutes} min.")
        people = console.people()
        user = people.get(account)
        try:
            ok = await console.checker.check(user, password, people.values())
        except CheckerBusy:
            raise ConsoleError(503, "Too many logins at once",
                               "Try again in a few seconds.", {"Retry-After": "5"}) from None
        if not ok or user is None:
            await console.stored("count a failed login", console.limiter.failed, account,
                                 client)
            log.warning("console_login_failed", known=user is not None, client=client)
            return await self._page(request, 401, account=account,
                              error="Wrong user or password.")
        await console.stored("clear the account's failed logins", console.limiter.succeeded,
                             account)
        session = await console.stored("start a session", console.sessions.create, user)
        log.info("console_login", user=user.id, client=client)
        response = RedirectResponse(safe_next(form.get("next")), 303)
        response.set_cookie(console.cookie, session.id, max_age=int(console.sessions.lifetime),
                            path="/", secure=console.secure, httponly=True, samesite="lax")
        response.delete_cookie(LOGIN_COOKIE, path="/login", secure=console.secure,
                               httponly=True, samesite="lax")
        return response

    async def logout(self, request: Request) -> Response:
        session, user, _ = await self.console.posted(request)
        await self.console.stored("end the session", self.console.sessions.end, session.id)
        log.info("console_logout", user=user.id)
        response = RedirectResponse("/login?out=1", 303)
        response.delete_cookie(self.console.cookie, path="/", secure=self.console.secure,
                               httponly=True, samesite="lax")
        return response
