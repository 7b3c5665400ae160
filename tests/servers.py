"""Real servers on 127.0.0.1 for the adapter and end-to-end tests.

- `SmtpServer`: aiosmtpd, optionally with STARTTLS (self-signed cert) and AUTH.
- `SmsGateway`: an HTTP server shaped like Twilio's Messages API. It checks the
  Basic auth and the form, records each message, and answers with the status
  codes queued by `fail_next()` (201 otherwise).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


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


class _Recorder:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.server.refuse_rcpt:
            return self.server.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.server.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos),
                                                 envelope.content.decode(errors="replace")))
        self.server.arrived.set()
        return "250 Message accepted"


class SmtpServer:
    """aiosmtpd on 127.0.0.1; `login`/`password` turn AUTH on, `tls` turns STARTTLS on."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None, login: str | None = None,
                 password: str | None = None) -> None:
        self.received: list[ReceivedMail] = []
        self.arrived = threading.Event()
        self.refuse_rcpt: str | None = None
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
        self._controller = Controller(_Recorder(self), hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10, **options)

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class SentSms:
    account: str
    to: str
    sender: str
    body: str


class SmsGateway:
    """A Twilio-shaped Messages API on 127.0.0.1."""

    def __init__(self, account_sid: str = "AC123", auth_token: str = "secret") -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.messages: list[SentSms] = []
        self.requests = 0
        self._answers: list[int] = []
        self._lock = threading.Lock()
        self.arrived = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                gateway._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def fail_next(self, *codes: int) -> None:
        """Answer the next requests with these status codes, in order."""
        with self._lock:
            self._answers.extend(codes)

    def __enter__(self) -> SmsGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
            with self._lock:
                self.messages.append(SentSms(self.account_sid, form["To"], form["From"],
                                             form["Body"]))
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
