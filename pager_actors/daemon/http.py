"""The HTTP API (Starlette): JSON in and out, 202 once a command is committed.

    POST   /api/v1/alerts                      {"service_id", "message", "key"?, "status"?}
    POST   /api/v1/services/{id}/acknowledge
    POST   /api/v1/services/{id}/healthy       resolve the incident, clear every key
    POST   /api/v1/services/{id}/heartbeat
    POST   /api/v1/services/{id}/maintenance   {"start"?, "end", "reason"?} -> 201
    DELETE /api/v1/services/{id}/maintenance/{window}
    GET    /api/v1/services/{id}               status, firing alerts, maintenance windows
    GET    /api/v1/services/{id}/incidents     the last 50 incidents
    GET    /api/v1/services/{id}/incidents/{n} one incident with its timeline
    GET    /api/v1/services                    every configured service
    POST /api/v1/alertmanager                  Alertmanager webhook (payload version 4)
    GET    /api/v1/cluster                     the nodes and their shards (PostgreSQL state)
    GET  /healthz                              liveness
    GET  /readyz                               readiness: 503 while the store refuses commits
                                               (or, in a cluster, the leases cannot be renewed)
    GET  /metrics                              Prometheus metrics

Errors are JSON `{"error": "..."}`: 400 malformed, 401 missing or wrong token,
404 unknown service, 413 body too large, 503 quarantined/stopping/store error,
504 commit not confirmed in time (in a cluster: or the owner did not answer a
forwarded command in time); 500 anything unexpected. A refused request
changes nothing. The server itself (daemon/server.py) answers 400 for a
malformed request, 408 for one not received in time and 503 past its
concurrency limit, also in JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pykka
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from pager_actors._future import CommandFuture, settled
from pager_actors._pager import Pager
from pager_actors._service import Outcome
from pager_actors.daemon import payloads, views
from pager_actors.daemon.cluster import Node
from pager_actors.daemon.config import SCOPES, Config
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.payloads import (
    AlertIn,
    HttpError,
    alertmanager_alerts,
    json_object,
    require_text,
)
from pager_actors.daemon.rotations import RotationsApi
from pager_actors.domain import PagerError, UnknownServiceError
from pager_actors.domain.model import MAX_WINDOW
from pager_actors.domain.timeline import summarize
from pager_actors.errors import (
    DeadLetterError,
    ForwardTimeoutError,
    PagerOverloadedError,
    PagerStoppedError,
)
from pager_actors.oncall.directory import OnCall
from pager_actors.ports import StoreError

COMMIT_TIMEOUT = 10.0

_STATUS_OF: list[tuple[type[BaseException], int]] = [
    (UnknownServiceError, 404),
    (DeadLetterError, 500),
    (PagerStoppedError, 503),
    (PagerOverloadedError, 503),
    (StoreError, 503),
    (ForwardTimeoutError, 504),  # the owner did not answer: whether applied, it says
    (PagerError, 503),  # ServiceQuarantinedError and the rest
]


_log = logging.getLogger("pager_actors.http")


def create_app(pager: Pager, config: Config, metrics: Metrics, *,
               services: Callable[[], list[str]] | None = None,
               extra_routes: Sequence[BaseRoute] = (),
               console: ASGIApp | None = None, oncall: OnCall | None = None,
               node: Node | None = None) -> Starlette:
    """The app. `services` lists the service ids in force (they change on a reload);
    `extra_routes` (links, SMS replies) come before the API's catch-all; `console`, the
    web console, gets every path outside the API, the probes and those routes; `node`,
    this daemon's place in a cluster."""
    listed = [policy.service_id for policy in config.services]
    api = _Api(pager, config, metrics, services or (lambda: listed), node)
    tokens = Tokens.of(config)

    def guard(handler: Callable[[Request], Awaitable[Response]], scope: Scope,
              commands: tuple[str, ...] | None = None) -> Callable[[Request], Awaitable[Response]]:
        return _guard(handler, tokens, scope, commands)

    service = "/api/v1/services/{service_id}"
    routes = [
        Route("/api/v1/alerts", guard(api.post_alert, "ingest"), methods=["POST"]),
        Route("/api/v1/alertmanager", guard(api.alertmanager, "ingest"), methods=["POST"]),
        Route("/api/v1/services", guard(api.list_services, "read"), methods=["GET"]),
        Route(service, guard(api.get_service, "read"), methods=["GET"]),
        Route(f"{service}/maintenance", guard(api.start_maintenance, "operate"),
              methods=["POST"]),
        Route(f"{service}/maintenance/{{window:int}}", guard(api.end_maintenance, "operate"),
              methods=["DELETE"]),
        Route(f"{service}/incidents", guard(api.list_incidents, "read"), methods=["GET"]),
        Route(f"{service}/incidents/{{number:int}}", guard(api.get_incident, "read"),
              methods=["GET"]),
        Route(f"{service}/{{command:str}}",
              guard(api.post_command, _command_scope,
                    commands=("acknowledge", "healthy", "heartbeat")),
              methods=["POST"]),
        *(_rotation_routes(RotationsApi(oncall, config.server.max_body_bytes), guard)
          if oncall is not None else []),
        Route("/api/v1/cluster", guard(node.endpoint if node is not None else _no_cluster,
                                       "read"), methods=["GET"]),
        *extra_routes,
        # Any other /api/ path: the token is still checked first, then 404.
        Route("/api/{rest:path}", guard(_api_not_found, None),
              methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics_endpoint, methods=["GET"]),
        *([Mount("/", app=console)] if console is not None else []),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed,
                                                        Exception: _internal_error})


def _rotation_routes(api: RotationsApi, guard: Callable[..., Any]) -> list[BaseRoute]:
    rotation = "/api/v1/rotations/{rotation}"
    return [
        Route("/api/v1/rotations", guard(api.list, "read"), methods=["GET"]),
        Route(f"{rotation}/oncall", guard(api.on_call, "read"), methods=["GET"]),
        Route(f"{rotation}/shifts", guard(api.shifts, "read"), methods=["GET"]),
        Route(f"{rotation}/overrides", guard(api.add_override, "operate"), methods=["POST"]),
        Route(f"{rotation}/overrides/{{override:int}}", guard(api.remove_override, "operate"),
              methods=["DELETE"]),
    ]


class _Api:
    """The handlers: each parses its request (`payloads`), calls the Pager facade and shapes
    the answer (`views`)."""

    def __init__(self, pager: Pager, config: Config, metrics: Metrics,
                 service_ids: Callable[[], list[str]], node: Node | None) -> None:
        self.pager, self.metrics, self.service_ids = pager, metrics, service_ids
        self.node = node
        self.label = config.alertmanager.service_label
        self.limit = config.server.max_body_bytes
        # Resolved once: `labels()` takes the metric's lock and a dict look-up per call.
        self.received_api = metrics.alerts_received.labels(source="api")
        self.received_alertmanager = metrics.alerts_received.labels(source="alertmanager")

    async def post_alert(self, request: Request) -> Response:
        given = payloads.alert(await json_object(request, self.limit))
        outcome = await committed(_submit(self.pager, given))
        if given.status == "firing":
            self.received_api.inc()
        return _accepted(outcome)

    async def post_command(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        command = request.path_params["command"]
        future = {"acknowledge": self.pager.acknowledge, "healthy": self.pager.healthy,
                  "heartbeat": self.pager.heartbeat}[command](service_id)
        outcome = await committed(future)
        if outcome.reason == "no_heartbeat":
            raise HttpError(400, f"service {service_id!r} has no heartbeat configured")
        return _accepted(outcome)

    async def get_service(self, request: Request) -> Response:
        state = await asyncio.to_thread(self.pager.state, request.path_params["service_id"])
        return JSONResponse(views.service(state))

    async def list_services(self, request: Request) -> Response:
        states = await asyncio.to_thread(lambda: [self.pager.state(s) for s in self.service_ids()])
        return JSONResponse({"services": [views.service(state) for state in states]})

    async def start_maintenance(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        body = await json_object(request, self.limit)
        require_text(body)
        start, end = payloads.moment(body, "start"), payloads.moment(body, "end")
        if end is None:
            raise HttpError(400, "missing field 'end'")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise HttpError(400, "field 'reason' must be a string")
        _check_window(start or datetime.now(UTC), end)
        outcome = await committed(self.pager.start_maintenance(service_id, end, start, reason))
        if outcome.event != "maintenance_started":
            raise HttpError(400, "the window is not valid now: end after start, within "
                                 "7 days of it, and not over")
        window = outcome.state.windows[-1]
        return JSONResponse(views.window(window), status_code=201)

    async def end_maintenance(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        window = request.path_params["window"]
        outcome = await committed(self.pager.end_maintenance(service_id, window))
        if outcome.reason == "unknown_window":
            raise HttpError(404, f"service {service_id!r} has no maintenance window {window}")
        return _accepted(outcome, status_code=200)

    async def list_incidents(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        found = await asyncio.to_thread(self.pager.incidents, service_id)
        return JSONResponse({"service_id": service_id,
                             "incidents": [views.incident(i) for i in found]})

    async def get_incident(self, request: Request) -> Response:
        service_id, number = request.path_params["service_id"], request.path_params["number"]
        entries = await asyncio.to_thread(self.pager.timeline, service_id, number)
        summary = summarize(number, entries)
        if summary is None:
            raise HttpError(404, f"service {service_id!r} has no incident {number} "
                                 "(or it is older than the timeline keeps)")
        return JSONResponse({"service_id": service_id, **views.incident(summary),
                             "timeline": [views.entry(e) for e in entries]})

    async def alertmanager(self, request: Request) -> Response:
        body = await json_object(request, self.limit)
        pending: list[tuple[dict[str, Any], CommandFuture[Any] | None]] = [
            _submit_alertmanager(self.pager, alert)
            for alert in alertmanager_alerts(body, self.label)]
        results = []
        for result, future in pending:
            if future is not None:
                try:
                    outcome = await committed(future)
                    result.update(accepted=True, event=outcome.event)
                    if result["status"] == "firing":
                        self.received_alertmanager.inc()
                except HttpError as error:
                    result.update(accepted=False, error=str(error), code=error.status)
            results.append(result)
        accepted = [r for r in results if r.get("accepted")]
        code = 202 if accepted or not results else max(r.get("code", 400) for r in results)
        return JSONResponse({"results": results}, status_code=code)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        pager = self.pager
        problem = "the pager is stopping" if pager.stopping else pager.store_problem()
        if problem is None and self.node is not None:
            problem = self.node.problem()
        if problem is not None:
            return JSONResponse({"status": "unready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        text, content_type = self.metrics.exposition()
        return Response(text, media_type=content_type)


def _check_window(start: datetime, end: datetime) -> None:
    """The API's rules for a maintenance window, said precisely before anything is queued."""
    if end <= datetime.now(UTC):
        raise HttpError(400, "'end' is already past")
    if end <= start:
        raise HttpError(400, "'end' must be after 'start'")
    if end - start > MAX_WINDOW:
        raise HttpError(400, f"a window lasts at most {MAX_WINDOW.days} days")


def _submit(pager: Pager, given: AlertIn, source: str = "api") -> CommandFuture[Any]:
    if given.status == "firing":
        return pager.alert(given.service_id, given.message, given.key)
    return pager.resolve_alert(given.service_id, given.key, by=source)


Scope = str | Callable[[Request], str] | None  # None: any valid token


def _command_scope(request: Request) -> str:
    return "ingest" if request.path_params.get("command") == "heartbeat" else "operate"


class Tokens:
    """The API's bearer tokens and their scopes. `[server] token` may do everything; each
    `[[server.tokens]]` what its scopes allow. None configured: the API is open."""

    def __init__(self, tokens: list[tuple[bytes, frozenset[str]]]) -> None:
        self._tokens = tokens

    @classmethod
    def of(cls, config: Config) -> Tokens:
        server = config.server
        found = [(t.token.encode(), t.scopes) for t in server.tokens]
        if server.token:
            found.append((server.token.encode(), frozenset(SCOPES)))
        return cls(found)

    def check(self, request: Request, scope: str | None) -> None:
        """Raise HttpError 401 (no such token) or 403 (not in its scopes)."""
        if not self._tokens:
            return
        kind, _, given = request.headers.get("authorization", "").partition(" ")
        presented = given.strip().encode(errors="replace")
        scopes: frozenset[str] | None = None
        for token, allowed in self._tokens:  # compare with every one: no early exit
            if hmac.compare_digest(presented, token) and kind.lower() == "bearer":
                scopes = allowed
        if scopes is None:
            raise HttpError(401, "missing or wrong bearer token")
        if scope is not None and scope not in scopes:
            raise HttpError(403, f"this token may not {scope} (its scopes: "
                                 f"{', '.join(sorted(scopes))})")


def _guard(handler: Callable[[Request], Awaitable[Response]], tokens: Tokens, scope: Scope,
           commands: tuple[str, ...] | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Check the bearer token and its scope, and turn every known failure into a JSON error."""

    async def guarded(request: Request) -> Response:
        try:
            tokens.check(request, scope(request) if callable(scope) else scope)
            if commands is not None and request.path_params.get("command") not in commands:
                raise HttpError(404, f"no such command; use one of {', '.join(commands)}")
            return await handler(request)
        except HttpError as error:
            headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
            return JSONResponse({"error": str(error)}, status_code=error.status,
                                headers=headers)
        except Exception as error:  # a domain error raised synchronously (status())
            status, message = _error_status(error)
            return JSONResponse({"error": message}, status_code=status)

    return guarded


async def committed(future: CommandFuture[Any]) -> Any:
    """Wait, without blocking the event loop, until the command is committed."""
    if not await settled(future, COMMIT_TIMEOUT):
        raise HttpError(504, f"the command was queued but its commit was not confirmed within "
                             f"{COMMIT_TIMEOUT:.0f} s")
    try:
        return future.get(timeout=0)
    except pykka.Timeout as error:  # pragma: no cover - resolved above
        raise HttpError(504, "commit not confirmed") from error
    except Exception as error:
        status, message = _error_status(error)
        raise HttpError(status, message) from error


def _error_status(error: BaseException) -> tuple[int, str]:
    for kind, status in _STATUS_OF:
        if isinstance(error, kind):
            return status, str(error)
    # Not the client's fault, and its text may hold anything: the details go to the log only.
    _log.error("internal error", exc_info=error)
    return 500, "internal error (logged by the daemon)"


def _submit_alertmanager(pager: Pager, alert: AlertIn | HttpError
                         ) -> tuple[dict[str, Any], CommandFuture[Any] | None]:
    if isinstance(alert, HttpError):
        return {"accepted": False, "error": str(alert), "code": alert.status}, None
    result: dict[str, Any] = {"service_id": alert.service_id, "status": alert.status,
                              "alertname": alert.alertname, "key": alert.key}
    return result, _submit(pager, alert, "alertmanager")


def _accepted(outcome: Outcome, status_code: int = 202) -> JSONResponse:
    return JSONResponse({"service_id": outcome.service_id, "event": outcome.event,
                         "reason": outcome.reason, "status": views.service(outcome.state)},
                        status_code=status_code)


async def _no_cluster(request: Request) -> Response:
    raise HttpError(404, "this daemon is not in a cluster: its [pager] state is a file; a "
                         "cluster shares a postgresql:// state")


async def _api_not_found(request: Request) -> Response:
    raise HttpError(404, f"no route for {request.method} {request.url.path}")


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"no route for {request.url.path}"}, status_code=404)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception outside the guarded routes: JSON, not Starlette's plain text,
    and generic: its text may hold anything, so it goes to the log with its traceback. The
    log names the route's template, never the path (a link's id is its authorization)."""
    route = getattr(request.scope.get("route"), "path", None) or "?"
    _log.error("internal error in %s %s", request.method, route, exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{request.method} not allowed on {request.url.path}"},
                        status_code=405)
