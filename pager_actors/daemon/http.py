"""The HTTP API (Starlette): JSON in and out, 202 once a command is committed.

    POST /api/v1/alerts                        {"service_id", "message"}
    POST /api/v1/services/{id}/acknowledge
    POST /api/v1/services/{id}/healthy
    GET  /api/v1/services/{id}                 the service's status
    GET  /api/v1/services                      every configured service's status
    POST /api/v1/alertmanager                  Alertmanager webhook (payload version 4)
    GET  /healthz                              liveness
    GET  /metrics                              Prometheus metrics

Errors are JSON `{"error": "..."}`: 400 malformed, 401 missing or wrong token,
404 unknown service, 413 body too large, 503 quarantined/stopping/store error,
504 commit not confirmed in time; 500 anything unexpected. A refused request
changes nothing. The server itself (daemon/server.py) answers 400 for a
malformed request, 408 for one not received in time and 503 past its
concurrency limit, also in JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
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


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(pager: Pager, config: Config, metrics: Metrics) -> Starlette:
    service_ids = [policy.service_id for policy in config.services]
    label = config.alertmanager.service_label
    token = config.server.token
    limit = config.server.max_body_bytes

    async def post_alert(request: Request) -> Response:
        body = await _json_body(request, limit)
        service_id, message = _field(body, "service_id"), _field(body, "message")
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
        statuses = await asyncio.to_thread(lambda: [(s, pager.status(s)) for s in service_ids])
        return JSONResponse({"services": [_status_json(s, st) for s, st in statuses]})

    async def alertmanager(request: Request) -> Response:
        body = await _json_body(request, limit)
        version = body.get("version")
        if version is not None and str(version) != "4":
            raise HttpError(400, f"unsupported Alertmanager payload version {version!r} "
                                 "(expected \"4\")")
        alerts = body.get("alerts")
        if not isinstance(alerts, list):
            raise HttpError(400, "missing field 'alerts' (a list)")
        pending: list[tuple[dict[str, Any], CommandFuture[Any] | None]] = []
        for alert in alerts:
            pending.append(_submit_alertmanager(pager, alert, label))
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
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed,
                                                        Exception: _internal_error})


def _guard(handler: Callable[[Request], Awaitable[Response]], token: str | None,
           commands: tuple[str, ...] | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Check the bearer token, and turn every known failure into a JSON error."""
    expected = f"Bearer {token}".encode() if token else None

    async def guarded(request: Request) -> Response:
        try:
            if expected is not None:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
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


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HttpError(400, f"malformed JSON: {error}") from error
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise HttpError(400, f"missing field {name!r}")
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, f"field {name!r} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # JSON allows lone surrogates; UTF-8 does not
        raise HttpError(400, f"field {name!r} is not valid Unicode text") from error
    return value


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
    return 500, f"internal error: {error!r}"


def _submit_alertmanager(pager: Pager, alert: Any, label: str
                         ) -> tuple[dict[str, Any], CommandFuture[Any] | None]:
    if not isinstance(alert, dict):
        return {"accepted": False, "error": "an alert must be a JSON object", "code": 400}, None
    labels: Any = alert.get("labels") or {}
    annotations: Any = alert.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return {"accepted": False, "error": "labels and annotations must be objects",
                "code": 400}, None
    status = alert.get("status")
    service_id = labels.get(label)
    result: dict[str, Any] = {"service_id": service_id, "status": status,
                              "alertname": labels.get("alertname")}
    if not isinstance(service_id, str) or not service_id:
        result.update(accepted=False, error=f"alert has no {label!r} label", code=400)
        return result, None
    if status == "firing":
        message = (annotations.get("summary") or annotations.get("description")
                   or labels.get("alertname") or "alert from Alertmanager")
        return result, pager.alert(service_id, str(message))
    if status == "resolved":
        return result, pager.healthy(service_id)
    result.update(accepted=False, error=f"unknown alert status {status!r}", code=400)
    return result, None


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


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception outside the guarded routes: JSON, not Starlette's plain text."""
    return JSONResponse({"error": f"internal error: {exc!r}"}, status_code=500)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{request.method} not allowed on {request.url.path}"},
                        status_code=405)
