"""The console's Starlette app: its routes and error pages.

`create_console` is mounted under `/` by the daemon's app, after the JSON API,
so `/api/...`, `/healthz`, `/readyz` and `/metrics` never reach it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pager_actors._pager import Pager
from pager_actors.console.clients import IPNetwork
from pager_actors.console.limits import LoginLimits
from pager_actors.console.login import LoginPages
from pager_actors.console.pages import ServicePages
from pager_actors.console.passwords import PasswordChecker
from pager_actors.console.ports import LoginAttempts, Sessions
from pager_actors.console.site import Console, ConsoleError, StoreUnavailable
from pager_actors.domain import EscalationPolicy
from pager_actors.domain.people import User
from pager_actors.logs import get_logger

log = get_logger("pager_actors.console")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_console(pager: Pager, *, service_ids: Callable[[], list[str]],
                   policy: Callable[[str], EscalationPolicy | None],
                   users: Callable[[], Iterable[User]], ack_timeout: timedelta | None = None,
                   secure_cookies: bool = False, trusted_proxies: Sequence[IPNetwork] = (),
                   limits: LoginLimits | None = None, checker: PasswordChecker | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   now: Callable[[], datetime] = _utc_now, sessions: Sessions | None = None,
                   limiter: LoginAttempts | None = None,
                   login_key: bytes | None = None) -> Starlette:
    """The console app. `service_ids`, `policy` and `users` answer with what is in force
    now (a reload changes them); `secure_cookies` when people reach it over https.

    `sessions`, `limiter` and `login_key` (at least 32 bytes) are where sessions and
    failed logins are kept and what signs the login form: by default this process's
    memory (timed by `clock`, limited by `limits`) and a random key. A cluster's nodes
    pass ones they share (`adapters.pg_console.PgConsoleState`), so any node can serve
    any request of a logged-in user; `limits` and `clock` then go unused.
    """
    console = Console(pager, service_ids=service_ids, policy=policy, users=users,
                      ack_timeout=ack_timeout, secure_cookies=secure_cookies,
                      trusted_proxies=trusted_proxies, limits=limits or LoginLimits(),
                      checker=checker or PasswordChecker(), clock=clock, now=now,
                      sessions=sessions, limiter=limiter, login_key=login_key)
    login, pages = LoginPages(console), ServicePages(console)

    async def stylesheet(request: Request) -> Response:
        return Response(console.css, media_type="text/css", headers={
            "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    service = "/services/{service_id}"
    routes = [
        Route("/login", login.form, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/", pages.overview, methods=["GET"]),
        Route(service, pages.service, methods=["GET"]),
        Route(f"{service}/acknowledge", pages.acknowledge, methods=["POST"]),
        Route(f"{service}/resolve", pages.resolve, methods=["POST"]),
        Route(f"{service}/maintenance", pages.start_maintenance, methods=["POST"]),
        Route(f"{service}/maintenance/{{window:int}}/end", pages.end_maintenance,
              methods=["POST"]),
        Route(f"{service}/incidents", pages.history, methods=["GET"]),
        Route(f"{service}/incidents/{{number:int}}", pages.incident, methods=["GET"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        found = None if isinstance(exc, StoreUnavailable) else await console.viewer(request)
        return await console.render(request, "error.html", exc.status, found,
                                    headers=exc.headers, title=exc.title, message=exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = {404: "Page not found", 405: "Not allowed here"}.get(exc.status_code, "Refused")
        message = (f"There is nothing at {request.url.path}." if exc.status_code == 404
                   else f"{request.method} is not allowed on {request.url.path}.")
        return await console.render(request, "error.html", exc.status_code,
                                    await console.viewer(request), title=title,
                                    message=message)

    async def failed(request: Request, exc: Exception) -> Response:
        log.error("console_error", path=request.url.path, exc_info=exc)
        return await console.render(request, "error.html", 500, None, title="Something went wrong",
                              message="The console failed to show this page; the details "
                                      "are in the daemon's log.")

    return Starlette(routes=routes, exception_handlers={
        ConsoleError: refused, HTTPException: http_error, Exception: failed})

