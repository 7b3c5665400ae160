"""The daemon's HTTP server: uvicorn, with a protocol that slow clients cannot lock out.

uvicorn has no deadline for receiving a request (its issue #157): a client that
sends half a request and waits keeps its connection for as long as it likes,
and uvicorn's `limit_concurrency` counts every open connection, so enough such
clients made every other request a 503. `SlowClientGuard` subclasses uvicorn's
httptools protocol (uvicorn and httptools are pinned exactly in pyproject.toml,
since it relies on their internals) and changes four things:

- Each request must be received completely, head and body, within
  `request_timeout` of its first byte. Past that deadline the client gets a JSON
  408 (if nothing was answered on the connection yet) and the connection is
  closed. The timer is cancelled once the message is complete, so a slow
  response is never cut short.
- A connection that has sent nothing yet gets uvicorn's keep-alive timeout, as
  an idle connection between two requests does (uvicorn arms no timer at all
  before the first byte).
- The concurrency limit counts requests received completely and not yet
  answered, not connections: idle connections and half-sent requests refuse
  nobody. Past the limit the answer is a JSON 503 with `Retry-After`.
- A response's head is held until its first body bytes and leaves with them in one
  write (`_HeadWithBody`): uvicorn wrote them apart, two `send()` system calls per
  answer, each of which gives up the GIL that the engine's threads then hold.
- uvicorn's own answers are JSON too: 400 for a malformed request, 500 when the
  app failed (or was cancelled at the graceful deadline) before answering; and
  on shutdown a request still arriving gets a 503 at once instead of being held
  until the graceful deadline.

`build_server` also raises the process's soft open-files limit to the hard
limit, since thousands of connections need more than the usual 1,024.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from pager_actors.daemon.config import ServerConfig
from pager_actors.logs import get_logger

log = get_logger("pager_actors.daemon.server")

MAX_REQUESTS = 4096
"""Requests received and not yet answered, at most; past it a request gets a 503."""

RETRY_AFTER_SECONDS = 1


@dataclass
class _Load:
    """What the connections of one server share: how many are still receiving a body."""

    receiving_body: int = 0


class SlowClientGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with a per-request deadline and JSON refusals.

    Use `guard_for(request_timeout)`, which makes a subclass with its own shared
    `_Load`, one per server.
    """

    request_timeout: ClassVar[float] = 10.0
    load: ClassVar[_Load] = _Load()

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's check counts open connections, so idle ones lock everybody out;
        # switch it off and apply the limit in on_headers_complete instead.
        self.max_requests = self.limit_concurrency
        self.limit_concurrency = None
        self.request_timer: asyncio.TimerHandle | None = None
        self.receiving_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_received()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Armed here as well as at on_message_begin: the parser skips blank lines before a
        # request line without calling on_message_begin, and they must not keep the
        # connection open either.
        if self.request_timer is None:
            self._arm()
        super().data_received(data)

    def on_message_begin(self) -> None:
        if self.request_timer is None:
            self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        busy = len(self.tasks) - self.load.receiving_body
        if self.max_requests is not None and busy >= self.max_requests:
            log.warning("request_refused", reason="busy", requests=busy)
            self.app = refuse_busy
        else:
            self.app = self.config.loaded_app
        super().on_headers_complete()
        # uvicorn answers an app that raised (or was cancelled at the graceful deadline)
        # before starting its response with a plain-text 500: make it JSON.
        self.cycle.send_500_response = functools.partial(  # type: ignore[method-assign]
            _send_json_500, self.cycle)
        self.cycle.transport = _HeadWithBody(self.transport, self.cycle)
        self.receiving_body = True
        self.load.receiving_body += 1

    def on_message_complete(self) -> None:
        self._disarm()
        self._body_received()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(400, msg)

    def shutdown(self) -> None:
        # uvicorn would wait for a request still arriving until the graceful deadline, then
        # cancel its task and answer a plain-text 500. It was never accepted: say so now.
        if self.receiving_body and self._nothing_answered():
            self._answer_and_close(503, "the daemon is shutting down; retry shortly")
            return
        super().shutdown()

    def _arm(self) -> None:
        self.request_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def _body_received(self) -> None:
        if self.receiving_body:
            self.receiving_body = False
            self.load.receiving_body -= 1

    def _timed_out(self) -> None:
        self.request_timer = None
        if self.transport.is_closing():
            return
        if self.pipeline:
            # A pipelined request waits, unread, until the answer before it is out: that
            # wait is the server's, not the client's. Give it another full deadline.
            self._arm()
            return
        cycle: RequestResponseCycle | None = self.cycle
        log.debug("request_timed_out", client=_client(self.client))
        if self._nothing_answered():
            self._answer_and_close(408, f"the request was not received completely within "
                                        f"{self.request_timeout:g} s")
        elif cycle is not None and not cycle.response_complete and not self.receiving_body:
            # Stray bytes, or the start of a next request, arrived while the answer to the
            # previous request is being prepared: let that answer go out, then close.
            cycle.keep_alive = False
        else:
            # The app answered this request before its body was in, and the answer is
            # still going out: a 408 now would be mixed into it.
            self.transport.close()

    def _nothing_answered(self) -> bool:
        """True when no response has started on this connection that has not finished."""
        cycle: RequestResponseCycle | None = self.cycle  # None before the first request
        if cycle is None:
            return True
        if self.receiving_body:  # the cycle is this request's; a queued one waits behind another
            return not cycle.response_started and not self.pipeline
        return cycle.response_complete  # the cycle is the previous request's

    def _answer_and_close(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [*self.server_state.default_headers,
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if status == 503:
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[status] + head + b"\r\n" + body)
        self.transport.close()


class _HeadWithBody(asyncio.Transport):
    """The transport as one response cycle sees it: the head of its response is held and
    written with the first body bytes, so a small answer leaves in one system call.

    A write is the head when the response has started and nothing of it was written yet
    (uvicorn sets `response_started` before it writes the head). Anything else, such as
    `100 Continue`, goes out at once; closing writes a held head first. The bytes on the
    wire are the same, in the same order.
    """

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        super().__init__()
        self._transport, self._cycle = transport, cycle
        self._head: bytes | None = None
        self._head_written = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head + bytes(data))
        elif self._cycle.response_started and not self._head_written:
            self._head, self._head_written = bytes(data), True
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


_BUSY_BODY = json.dumps({"error": f"too many requests in progress; retry in "
                                  f"{RETRY_AFTER_SECONDS} s"}).encode()


async def refuse_busy(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
                      ) -> None:
    """The answer past the concurrency limit, in place of uvicorn's plain-text 503."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BUSY_BODY)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


_INTERNAL_ERROR_BODY = json.dumps({"error": "internal error"}).encode()


async def _send_json_500(cycle: RequestResponseCycle) -> None:
    await cycle.send({"type": "http.response.start", "status": 500, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_INTERNAL_ERROR_BODY)).encode()),
        (b"connection", b"close")]})
    await cycle.send({"type": "http.response.body", "body": _INTERNAL_ERROR_BODY,
                      "more_body": False})


def guard_for(request_timeout: float) -> type[SlowClientGuard]:
    """A protocol class for one server: its deadline, and its own count of requests."""
    timeout = request_timeout

    class ServerGuard(SlowClientGuard):
        request_timeout = timeout
        load = _Load()

    return ServerGuard


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection holds a file); log it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # e.g. an unlimited hard limit on macOS
            log.warning("open_files_limit_unchanged", soft=soft, hard=hard, error=str(error))
    log.info("open_files_limit", limit=soft)
    if soft != resource.RLIM_INFINITY and soft < MAX_REQUESTS:
        log.warning("open_files_limit_low", limit=soft, max_requests=MAX_REQUESTS)
    return soft


def build_server(app: ASGIApp, *, config: ServerConfig, graceful_shutdown: int,
                 max_requests: int = MAX_REQUESTS) -> uvicorn.Server:
    """uvicorn serving `app` with `SlowClientGuard`; raises the open-files limit first.

    Run it with `server.run()`, or `server.run(sockets=[sock])` on a socket bound
    beforehand (then `config.host` and `config.port` are not used).
    """
    raise_open_file_limit()
    return uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port,
        http=guard_for(config.request_timeout.total_seconds()), ws="none",
        limit_concurrency=max_requests, timeout_graceful_shutdown=graceful_shutdown,
        log_config=None, access_log=False, lifespan="off",
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; only
        # [server] trusted_proxies may name the client (pager_actors/console/clients.py).
        proxy_headers=False))


def _client(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None
