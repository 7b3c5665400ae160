"""The daemon's HTTP server against slow and half-sent requests, on a real socket on 127.0.0.1.

The server is `build_server` run in a thread of this process; a tiny ASGI app
stands in for the API so a test can hold requests "in progress" at will.
Waits are bounded; lower bounds only say a deadline did not fire early, which a
slow machine cannot break.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import uvicorn

from pager_actors.daemon.config import ServerConfig
from pager_actors.daemon.server import build_server
from tests.http.rawhttp import (
    GENEROUS,
    connect,
    half_sent_body,
    half_sent_head,
    read_response,
    request,
    response,
    still_open,
    until_closed,
)


class HeldApp:
    """`/hold` waits until `release()`, `/boom` raises; anything else reads its whole body
    and answers 200."""

    def __init__(self) -> None:
        self.holding = 0
        self.held = threading.Condition()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/hold":
            if self.gate is None:
                self.loop, self.gate = asyncio.get_running_loop(), asyncio.Event()
            with self.held:
                self.holding += 1
                self.held.notify_all()
            await self.gate.wait()
        body = json.dumps({"received": size}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def wait_holding(self, count: int) -> None:
        with self.held:
            assert self.held.wait_for(lambda: self.holding >= count, timeout=GENEROUS), \
                f"only {self.holding} of {count} requests reached the app"

    def release(self) -> None:
        if self.loop is not None and self.gate is not None:
            self.loop.call_soon_threadsafe(self.gate.set)


def start(app: Any, *, request_timeout: float = 1.0, keep_alive: int = 30,
          max_requests: int = 4096) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Run build_server(app) in a thread, on a socket bound to 127.0.0.1; and its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = build_server(app, config=ServerConfig(
        request_timeout=timedelta(seconds=request_timeout)), graceful_shutdown=1,
        max_requests=max_requests)
    server.config.timeout_keep_alive = keep_alive
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + GENEROUS
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return server, thread, sock.getsockname()[1]


def stop(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(GENEROUS)
    assert not thread.is_alive(), "the server did not stop"


@contextmanager
def serving(app: Any, **options: Any) -> Iterator[int]:
    """The server of `start` for the length of a `with` block; yields its port."""
    server, thread, port = start(app, **options)
    try:
        yield port
    finally:
        if isinstance(app, HeldApp):
            app.release()
        stop(server, thread)


def test_half_sent_head_gets_a_json_408_and_is_closed():
    """A head not finished within request_timeout: JSON 408, then the connection closes."""
    with serving(HeldApp(), request_timeout=1) as port, half_sent_head(port) as sock:
        raw, waited = until_closed(sock)
    status, headers, body = response(raw)
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert "within 1 s" in json.loads(body)["error"]
    assert 0.9 <= waited <= GENEROUS


def test_half_sent_body_gets_a_json_408_and_is_closed():
    """A body not finished within request_timeout: JSON 408, then the connection closes."""
    with serving(HeldApp(), request_timeout=1) as port, half_sent_body(port) as sock:
        raw, waited = until_closed(sock)
    status, headers, body = response(raw)
    assert status == 408 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]
    assert 0.9 <= waited <= GENEROUS


def test_the_deadline_counts_from_the_first_byte_not_the_last():
    """A client trickling one byte every 0.2 s is cut off at its deadline, not kept alive."""
    with serving(HeldApp(), request_timeout=1, keep_alive=30) as port, connect(port) as sock:
        started = time.monotonic()
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
        for byte in head:
            if select.select([sock], [], [], 0.2)[0] or time.monotonic() - started > GENEROUS:
                break  # the server answered, or we gave up
            sock.sendall(bytes([byte]))
        raw, _ = until_closed(sock)
        waited = time.monotonic() - started
    assert response(raw)[0] == 408
    assert 0.9 <= waited < GENEROUS


def test_blank_lines_before_a_request_do_not_hold_the_connection():
    """CRLFs alone (the parser skips them without starting a request) still meet the deadline."""
    with serving(HeldApp(), request_timeout=1, keep_alive=30) as port, connect(port) as sock:
        sock.sendall(b"\r\n")
        raw, _ = until_closed(sock)
    assert response(raw)[0] == 408


def test_a_silent_connection_is_closed_after_the_keep_alive_timeout():
    """A connection that never sends a byte is closed like an idle keep-alive one."""
    with serving(HeldApp(), request_timeout=30, keep_alive=1) as port, connect(port) as sock:
        raw, waited = until_closed(sock)
    assert raw == b""
    assert 0.9 <= waited <= GENEROUS


def test_a_slow_but_complete_request_is_answered_and_its_connection_kept():
    """A request finished in time gets its answer; the idle connection then outlives the
    request deadline (only the keep-alive timeout applies) and serves a second request."""
    with serving(HeldApp(), request_timeout=1, keep_alive=30) as port, connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        time.sleep(0.3)
        sock.sendall(b'Content-Length: 8\r\n\r\n{"x": 1}')
        assert read_response(sock) == (200, b'{"received": 8}')
        time.sleep(1.5)  # past the request deadline: only a leftover timer would close it
        assert request(sock) == (200, b'{"received": 2}')


def test_bytes_after_a_request_do_not_cut_its_slow_answer():
    """A complete request then a stray CRLF: the deadline the CRLF armed passes while the
    answer is prepared; the answer still arrives whole, then the connection closes."""
    app = HeldApp()
    with serving(app, request_timeout=1) as port, connect(port) as sock:
        sock.sendall(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        app.wait_holding(1)
        sock.sendall(b"\r\n")
        time.sleep(1.5)  # past the deadline of the CRLF
        app.release()
        raw, _ = until_closed(sock)
    status, _, body = response(raw)
    assert (status, body) == (200, b'{"received": 0}')


def test_a_pipelined_request_held_back_by_the_server_is_not_timed_out():
    """A request sent before the answer to the previous one waits unread while that answer
    is prepared; that wait does not count against the client: both are answered."""
    app = HeldApp()
    with serving(app, request_timeout=1) as port, connect(port) as sock:
        sock.sendall(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n")
        app.wait_holding(1)
        time.sleep(1.5)  # past the second request's deadline, while the server holds it back
        sock.sendall(b"{}")
        app.release()
        assert read_response(sock) == (200, b'{"received": 0}')
        assert read_response(sock) == (200, b'{"received": 2}')


def test_past_the_limit_the_refusal_is_a_json_503_with_retry_after():
    """With max_requests in progress, the next request gets a JSON 503 and Retry-After;
    once they are answered, requests are served again."""
    app = HeldApp()
    with serving(app, max_requests=2) as port:
        held = [connect(port) for _ in range(2)]
        for sock in held:
            sock.sendall(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        app.wait_holding(2)
        with connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
            raw, _ = until_closed(sock)
        status, headers, body = response(raw)
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"] == "1"
        assert "too many requests" in json.loads(body)["error"]
        app.release()
        for sock in held:
            assert read_response(sock)[0] == 200
            sock.close()
        with connect(port) as sock:
            assert request(sock) == (200, b'{"received": 2}')


def test_half_sent_requests_and_idle_connections_do_not_count_toward_the_limit():
    """Five half-sent heads, five half-sent bodies and five silent connections, with a limit
    of 2: a complete request is still answered, not refused."""
    with serving(HeldApp(), request_timeout=30, max_requests=2) as port:
        slow = ([half_sent_head(port) for _ in range(5)] + [half_sent_body(port) for _ in range(5)]
                + [connect(port) for _ in range(5)])
        try:
            with connect(port) as sock:
                assert request(sock) == (200, b'{"received": 2}')
            assert all(still_open(s) for s in slow)
        finally:
            for sock in slow:
                sock.close()


def test_a_malformed_request_gets_a_json_400():
    """uvicorn's own refusal of bytes that are not HTTP is JSON too."""
    with serving(HeldApp()) as port, connect(port) as sock:
        sock.sendall(b"NOT HTTP AT ALL\x00\r\n\r\n")
        raw, _ = until_closed(sock)
    status, headers, body = response(raw)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]




def test_a_request_still_arriving_at_shutdown_gets_a_json_503():
    """On shutdown a request whose body is not in yet was never accepted: it is told so at
    once (JSON 503), instead of being held until the graceful deadline and then cut."""
    server, thread, port = start(HeldApp(), request_timeout=30)
    with half_sent_body(port) as sock:
        stop(server, thread)
        raw, _ = until_closed(sock)
    status, headers, body = response(raw)
    assert status == 503 and headers["content-type"] == "application/json"
    assert "shutting down" in json.loads(body)["error"] and headers["retry-after"] == "1"


def test_an_app_that_fails_before_answering_gets_a_json_500():
    """uvicorn's own 500 (the app raised before starting its response) is JSON."""
    with serving(HeldApp()) as port, connect(port) as sock:
        sock.sendall(b"POST /boom HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        raw, _ = until_closed(sock)
    status, headers, body = response(raw)
    assert status == 500 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "internal error"}
