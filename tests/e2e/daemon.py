"""Running the daemon as a subprocess for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll an outside process's effect until it shows, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def config_text(*, port: int, state: Path, smtp_port: int, sms_url: str, ack_timeout: str,
                services: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"

[pager]
ack_timeout = "{ack_timeout}"
state = "{state}"
retry_backoff = "100ms"

[mail]
kind = "smtp"
host = "127.0.0.1"
port = {smtp_port}
sender = "pager@example.com"

[sms]
kind = "twilio"
base_url = "{sms_url}"
account_sid = "AC42"
from = "+15550000000"
{services}
"""


class Daemon:
    """`python -m pager_actors run --config ...` with its output in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None,
                 open_files: int | None = None) -> None:
        self.config, self.log = config, log
        self.open_files = open_files  # the soft RLIMIT_NOFILE the daemon starts with
        self.port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        command = [sys.executable, "-m", "pager_actors", "run", "--config", str(self.config)]
        if self.open_files:  # the shell execs the daemon, which keeps its pid
            command = ["sh", "-c", f'ulimit -Sn {self.open_files} && exec "$@"', "sh", *command]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for(self._healthy, 30, "the daemon's /healthz")
        except AssertionError as error:  # say where it stopped: its log so far
            tail = self.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{error}\n--- the daemon's log:\n{tail}") from None
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM, then wait: the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def new_port() -> int:
    return free_port()
