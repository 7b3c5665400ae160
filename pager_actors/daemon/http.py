"""The HTTP API (Starlette): JSON in and out, 202 once a command is committed.

    POST /api/v1/alerts                        {"service_id", "message"}
    POST /api/v1/services/{id}/acknowledge
    POST /api/v1/services/{id}/healthy
    GET  /api/v1/services/{id}                 the service's status
    GET  /api/v1/services                      every configured service's status
    POST /api/v1/alertmanager                  Alertmanager webhook (payload version 4)
    GET  /healthz                              liveness
    GET  /readyz                               readiness: 503 while the store refuses commits
    GET  /metrics                              Prometheus metrics

Errors are JSON `{"error": "..."}`: 400 malformed, 401 missing or wrong token,
404 unknown service, 413 body too large, 503 quarantined/stopping/store error,
504 commit not confirmed in time. A refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pykka
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pager_actors._future import CommandFuture
from pager_actors._pager import Pager
from pager_actors.daemon.config import Config
from pager_actors.daemon.metrics import Metrics
from pager_actors.daemon.payloads import (
    AlertmanagerAlert,
    HttpError,
    alertmanager_alerts,
    json_object,
    require_text,
    text_field,
)
from pager_actors.domain import PagerError, ServiceStatus, UnknownServiceError
from pager_actors.errors import DeadLetterError, PagerOverloadedError, PagerStoppedError
from pager_actors.ports import StoreError

COMMIT_TIMEOUT = 10.0

_STATUS_OF: list[tuple[type[BaseException], int]] = [
    (UnknownServiceError, 404),
    (DeadLetterError, 500),
    (PagerStoppedError, 503),
    (PagerOverloadedError, 503),
    (StoreError, 503),
    (PagerError, 503),  # ServiceQuarantinedError and the rest
]


_log = logging.getLogger("pager_actors.http")


def create_app(pager: Pager, config: Config, metrics: Metrics, *,
               services: Callable[[], list[str]] | None = None) -> Starlette:
    """The app. `services` lists the service ids in force (they change on a reload)."""
    listed = [policy.service_id for policy in config.services]
    service_ids = services or (lambda: listed)
    label = config.alertmanager.service_label
    token = config.server.token
    limit = config.server.max_body_bytes

    async def post_alert(request: Request) -> Response:
        body = await json_object(request, limit)
        require_text(body)
        service_id, message = text_field(body, "service_id"), text_field(body, "message")
        outcome = await _committed(pager.alert(service_id, message))
        metrics.alerts_received.labels(source="api").inc()
        return _accepted(service_id, outcome)

    async def post_command(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        command = request.path_params["command"]
        future = pager.acknowledge(service_id) if command == "acknowledge" \
            else pager.healthy(service_id)
        return _accepted(service_id, await _committed(future))

    async def get_service(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        status = await asyncio.to_thread(pager.status, service_id)
        return JSONResponse(_status_json(service_id, status))

    async def list_services(request: Request) -> Response:
        statuses = await asyncio.to_thread(lambda: [(s, pager.status(s))
                                                    for s in service_ids()])
        return JSONResponse({"services": [_status_json(s, st) for s, st in statuses]})

    async def alertmanager(request: Request) -> Response:
        body = await json_object(request, limit)
        pending: list[tuple[dict[str, Any], CommandFuture[Any] | None]] = [
            _submit_alertmanager(pager, alert) for alert in alertmanager_alerts(body, label)]
        results = []
        for result, future in pending:
            if future is not None:
                try:
                    outcome = await _committed(future)
                    result.update(accepted=True, event=outcome.event)
                    if result["status"] == "firing":
                        metrics.alerts_received.labels(source="alertmanager").inc()
                except HttpError as error:
                    result.update(accepted=False, error=str(error), code=error.status)
            results.append(result)
        accepted = [r for r in results if r.get("accepted")]
        code = 202 if accepted or not results else max(r.get("code", 400) for r in results)
        return JSONResponse({"results": results}, status_code=code)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problem = "the pager is stopping" if pager.stopping else pager.store_problem()
        if problem is not None:
            return JSONResponse({"status": "unready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        text, content_type = metrics.exposition()
        return Response(text, media_type=content_type)

    routes = [
        Route("/api/v1/alerts", _guard(post_alert, token), methods=["POST"]),
        Route("/api/v1/alertmanager", _guard(alertmanager, token), methods=["POST"]),
        Route("/api/v1/services", _guard(list_services, token), methods=["GET"]),
        Route("/api/v1/services/{service_id}", _guard(get_service, token), methods=["GET"]),
        Route("/api/v1/services/{service_id}/{command:str}",
              _guard(post_command, token, commands=("acknowledge", "healthy")),
              methods=["POST"]),
        # Any other /api/ path: the token is still checked first, then 404.
        Route("/api/{rest:path}", _guard(_api_not_found, token),
              methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


def _guard(handler: Callable[[Request], Awaitable[Response]], token: str | None,
           commands: tuple[str, ...] | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Check the bearer token, and turn every known failure into a JSON error."""
    expected = token.encode() if token else None

    async def guarded(request: Request) -> Response:
        try:
            if expected is not None:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                        given.strip().encode(errors="replace"), expected):
                    raise HttpError(401, "missing or wrong bearer token")
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


async def _committed(future: CommandFuture[Any]) -> Any:
    """Wait, without blocking the event loop, until the command is committed."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def wake(_: CommandFuture[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle)

    future.add_done_callback(wake)
    try:
        await asyncio.wait_for(waiter, COMMIT_TIMEOUT)
    except TimeoutError as error:
        raise HttpError(504, f"the command was queued but its commit was not confirmed within "
                             f"{COMMIT_TIMEOUT:.0f} s") from error
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


def _submit_alertmanager(pager: Pager, alert: AlertmanagerAlert | HttpError
                         ) -> tuple[dict[str, Any], CommandFuture[Any] | None]:
    if isinstance(alert, HttpError):
        return {"accepted": False, "error": str(alert), "code": alert.status}, None
    result: dict[str, Any] = {"service_id": alert.service_id, "status": alert.status,
                              "alertname": alert.alertname}
    if alert.status == "firing":
        return result, pager.alert(alert.service_id, alert.message)
    return result, pager.healthy(alert.service_id)


def _accepted(service_id: str, outcome: Any) -> JSONResponse:
    return JSONResponse({"service_id": service_id, "event": outcome.event,
                         "reason": outcome.reason,
                         "status": _status_json(service_id, outcome.status)}, status_code=202)


def _status_json(service_id: str, status: ServiceStatus) -> dict[str, Any]:
    return {"service_id": service_id, "health": status.health.value, "level": status.level,
            "acknowledged": status.acknowledged, "message": status.message}


async def _api_not_found(request: Request) -> Response:
    raise HttpError(404, f"no route for {request.method} {request.url.path}")


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"no route for {request.url.path}"}, status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{request.method} not allowed on {request.url.path}"},
                        status_code=405)
