"""Slow clients against the daemon as a subprocess: half-sent requests time out, and while
2,000 of them are open an authenticated alert still gets its 202."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, new_port
from tests.http.rawhttp import half_sent_body, half_sent_head, response, still_open, until_closed

pytestmark = pytest.mark.timeout(120)

HALF_SENT = 2000
TOKEN = "s3cret"


def daemon_for(tmp_path: Path, request_timeout: str, open_files: int | None = None) -> Daemon:
    config = tmp_path / "pager.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{new_port()}"
token = "{TOKEN}"
request_timeout = "{request_timeout}"

[pager]
state = "{tmp_path / 'pager.db'}"

[mail]
kind = "log"

[sms]
kind = "log"

[[services]]
id = "checkout"
levels = [["mailto:oncall@example.com", "sms:+33600000001"]]
""")
    return Daemon(config, tmp_path / "daemon.log", open_files=open_files)


@pytest.fixture
def many_files():
    """This process holds one socket per slow client: raise its own soft limit meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = HALF_SENT + 1000
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open-files limit ({hard}) is below {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def test_an_alert_gets_its_202_while_2000_half_sent_requests_are_open(tmp_path, many_files):
    """Started with a soft limit of 1,024 open files, the daemon raises it to the hard limit
    and logs it; with 2,000 half-sent requests open, an authenticated alert gets its 202."""
    daemon = daemon_for(tmp_path, request_timeout="60s", open_files=1024).start()
    slow = []
    try:
        assert daemon.proc is not None
        soft, hard = open_files_limits(daemon.proc.pid)
        assert soft == hard > 1024
        logged = [json.loads(line) for line in daemon.log.read_text().splitlines()
                  if '"open_files_limit"' in line]
        assert [entry["limit"] for entry in logged] == [soft]
        for i in range(HALF_SENT):
            slow.append(half_sent_head(daemon.port, "/api/v1/alerts") if i % 2 else
                        half_sent_body(daemon.port, "/api/v1/alerts",
                                       f"Authorization: Bearer {TOKEN}\r\n"))
        accepted = daemon.api("POST", "/api/v1/alerts",
                              headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"service_id": "checkout", "message": "p99 above 2s"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["event"] == "incident_opened"
        assert all(still_open(sock) for sock in slow), "the slow clients were not all held"
    finally:
        for sock in slow:
            sock.close()
        daemon.stop_quietly()


def test_the_daemon_answers_half_sent_requests_with_a_json_408(tmp_path):
    """[server] request_timeout reaches the server: a half-sent head and a half-sent body
    each get a JSON 408 and are closed."""
    daemon = daemon_for(tmp_path, request_timeout="1s").start()
    try:
        for half_sent in (lambda: half_sent_head(daemon.port, "/api/v1/alerts"),
                          lambda: half_sent_body(daemon.port, "/api/v1/alerts",
                                                 f"Authorization: Bearer {TOKEN}\r\n")):
            with half_sent() as sock:
                raw, waited = until_closed(sock)
            status, headers, body = response(raw)
            assert status == 408 and headers["content-type"] == "application/json"
            assert "within 1 s" in json.loads(body)["error"]
            assert 0.9 <= waited <= 10
        assert daemon.terminate() == 0
    finally:
        daemon.stop_quietly()
