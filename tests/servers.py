"""Real servers on 127.0.0.1 for the adapter, end-to-end tests and benchmarks.

- `SmtpServer`: aiosmtpd, optionally with STARTTLS (self-signed cert) and AUTH.
  It counts the connections clients open, can drop them, and can take `delay`
  seconds per message.
- `SmsGateway`: an HTTP server shaped like Twilio's Messages API. It checks the
  Basic auth and the form, records each message, and answers with the status
  codes queued by `fail_next()` (201 otherwise). It can take `delay` seconds
  per message, and hang on chosen numbers until `release()`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HANG_LIMIT = 30.0  # a hung request is answered after this long even if never released


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made with the openssl command line."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    data: str
    at: float = 0.0  # time.perf_counter() when the server accepted it


class _Recorder:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.server.refuse_rcpt:
            return self.server.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        self.server.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos),
                                                 envelope.content.decode(errors="replace"),
                                                 time.perf_counter()))
        self.server.arrived.set()
        return "250 Message accepted"


class _CountingSMTP(SMTP):
    """aiosmtpd's protocol, reporting each client connection to its SmtpServer."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport):
        upgrade = self.transport is not None  # STARTTLS: the same connection, now encrypted
        super().connection_made(transport)
        if not upgrade:
            self._owner._opened(self)

    def connection_lost(self, error):
        super().connection_lost(error)
        self._owner._closed(self)

    async def smtp_MAIL(self, arg):
        if self._owner._take_drop():
            self.transport.close()  # no reply: the client sees the connection go
            return
        await super().smtp_MAIL(arg)


class _Controller(Controller):
    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def factory(self):
        return _CountingSMTP(self._owner, self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """aiosmtpd on 127.0.0.1; `login`/`password` turn AUTH on, `tls` turns STARTTLS on.

    `connections` counts the client connections opened since it started,
    `max_open` the most open at once. `delay` seconds pass before each message
    is accepted (other connections go on meanwhile).
    """

    def __init__(self, *, tls: tuple[Path, Path] | None = None, login: str | None = None,
                 password: str | None = None, delay: float = 0.0) -> None:
        self.received: list[ReceivedMail] = []
        self.arrived = threading.Event()
        self.refuse_rcpt: str | None = None
        self.delay = delay
        self.connections = 0
        self.max_open = 0
        self._open: set[_CountingSMTP] = set()
        self._counting = False
        self._drops = 0
        self._state = threading.Condition()
        self.port = free_port()
        options: dict[str, object] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            options.update(tls_context=context, require_starttls=True)
        if login is not None:
            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = (isinstance(auth_data, LoginPassword)
                      and auth_data.login.decode() == login
                      and auth_data.password.decode() == password)
                return AuthResult(success=ok, handled=False)
            options.update(authenticator=authenticate, auth_require_tls=tls is not None,
                           auth_required=True)
        self._controller = _Controller(self, _Recorder(self), hostname="127.0.0.1",
                                       port=self.port, ready_timeout=10, **options)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        with self._state:  # the controller's own probe connection is not a client's
            self._counting = True
        return self

    @property
    def open_now(self) -> int:
        with self._state:
            return len(self._open)

    def drop_connections(self, goodbye: str | None = None, timeout: float = 10) -> None:
        """Close every client connection from the server side, as an idle timeout does,
        first sending `goodbye` (such as "421 4.4.2 timeout") if given."""
        with self._state:
            count = len(self._open)
            protocols = list(self._open)

        def hang_up(transport: Any) -> None:
            if goodbye is not None:
                transport.write(f"{goodbye}\r\n".encode())
            transport.close()

        for protocol in protocols:
            self._controller.loop.call_soon_threadsafe(hang_up, protocol.transport)
        with self._state:
            assert self._state.wait_for(lambda: not self._open, timeout), (
                f"{count} connection(s) still open after {timeout} s")

    def wait_all_closed(self, timeout: float) -> bool:
        """Wait until no client connection is open; False after `timeout` seconds."""
        with self._state:
            return self._state.wait_for(lambda: not self._open, timeout)

    def drop_at_next_mail(self, times: int = 1) -> None:
        """The next `times` MAIL FROM commands get their connection closed, with no reply."""
        with self._state:
            self._drops += times

    def _take_drop(self) -> bool:
        with self._state:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def _opened(self, protocol: _CountingSMTP) -> None:
        with self._state:
            if self._counting:
                self.connections += 1
                self._open.add(protocol)
                self.max_open = max(self.max_open, len(self._open))

    def _closed(self, protocol: _CountingSMTP) -> None:
        with self._state:
            self._open.discard(protocol)
            self._state.notify_all()

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class SentSms:
    account: str
    to: str
    sender: str
    body: str
    at: float = 0.0  # time.perf_counter() when the gateway accepted it


class SmsGateway:
    """A Twilio-shaped Messages API on 127.0.0.1 (HTTP/1.1 keep-alive, a thread per connection).

    `delay` seconds pass before each message is accepted. `hang_on(number)`
    holds every request to that number until `release()` (or HANG_LIMIT).
    `max_in_flight_per_number` is the most requests for one number it ever
    handled at once, `max_in_flight` the most requests at once.
    """

    def __init__(self, account_sid: str = "AC123", auth_token: str = "secret",
                 delay: float = 0.0) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.delay = delay
        self.messages: list[SentSms] = []
        self.requests = 0
        self._answers: list[int] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.arrived = threading.Event()
        self.hanging = threading.Event()  # set once a request to a hung number arrived
        self._hung: set[str] = set()
        self._released = threading.Event()
        self._in_flight: Counter[str] = Counter()
        self.max_in_flight_per_number = 0
        self.max_in_flight = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle, the body would wait for
            # the client's delayed ACK (40 ms on Linux) on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                gateway._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # quick to shut down

    def fail_next(self, *codes: int) -> None:
        """Answer the next requests with these status codes, in order."""
        with self._lock:
            self._answers.extend(codes)

    def hang_on(self, number: str) -> None:
        """Hold every request to `number` until `release()`."""
        with self._lock:
            self._hung.add(number)

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        with self._lock:
            self._hung.clear()
        self._released.set()

    def wait_for(self, condition: Callable[[list[SentSms]], bool], timeout: float) -> bool:
        """Wait until `condition(messages so far)` holds; False after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self.messages), timeout)

    def __enter__(self) -> SmsGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
            forced = self._answers.pop(0) if self._answers else None
        length = int(request.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if request.headers.get("Authorization") != expected:
            self._reply(request, 401, {"code": 20003, "message": "Authenticate"})
        elif request.path != path:
            self._reply(request, 404, {"code": 20404, "message": "not found"})
        elif not {"To", "From", "Body"} <= form.keys():
            self._reply(request, 400, {"code": 21604, "message": "A required field is missing"})
        elif forced is not None:
            self._reply(request, forced, {"code": forced, "message": f"forced {forced}"})
        else:
            self._accept(request, form)

    def _accept(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        to = form["To"]
        with self._lock:
            self._in_flight[to] += 1
            self.max_in_flight_per_number = max(self.max_in_flight_per_number,
                                                self._in_flight[to])
            self.max_in_flight = max(self.max_in_flight, sum(self._in_flight.values()))
            hung = to in self._hung
        try:
            if hung:
                self.hanging.set()
                self._released.wait(timeout=HANG_LIMIT)
            if self.delay:
                time.sleep(self.delay)
            with self._changed:
                self.messages.append(SentSms(self.account_sid, to, form["From"], form["Body"],
                                             time.perf_counter()))
                self._changed.notify_all()
        finally:
            with self._lock:
                self._in_flight[to] -= 1
        self.arrived.set()
        self._reply(request, 201, {"sid": f"SM{len(self.messages)}", "status": "queued"})

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
