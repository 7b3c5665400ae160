"""The console in the daemon, over real HTTP: a reload that removes a user ends their
session, and X-Forwarded-For from an untrusted peer (even 127.0.0.1) names nobody."""

from __future__ import annotations

import re
import signal

import argon2
import httpx
import pytest

from tests.e2e.daemon import Daemon, new_port, wait_for
from tests.e2e.test_operations import events

pytestmark = pytest.mark.timeout(90)

PASSWORD = "night shift"
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def config(port: int, state, users: str, server: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
{server}

[pager]
state = "{state}"

[[services]]
id = "checkout"
levels = [["mailto:oncall@example.com"]]
{users}
"""


def user(user_id: str) -> str:
    return (f'\n[[users]]\nid = "{user_id}"\nname = "{user_id.title()}"\n'
            f'password_hash = "{CHEAP.hash(PASSWORD)}"\n')


@pytest.fixture
def started(tmp_path):
    daemons = []

    def start(users: str, server: str = "") -> Daemon:
        path = tmp_path / "pager.toml"
        port = new_port()
        path.write_text(config(port, tmp_path / "pager.db", users, server))
        daemon = Daemon(path, tmp_path / "daemon.log")
        daemons.append(daemon)
        return daemon.start()

    yield start
    for daemon in daemons:
        daemon.stop_quietly()


def log_in(daemon: Daemon, user_id: str, password: str = PASSWORD,
           headers: dict[str, str] | None = None) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=daemon.url, timeout=10, headers=headers or {})
    form = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    return client, client.post("/login", data={"csrf": token, "user": user_id,
                                                "password": password, "next": "/"})


def test_a_reload_without_the_user_ends_their_session(started):
    """alice is logged in; SIGHUP with her entry gone: her next request goes to the login
    form, and bob's session lives on."""
    daemon = started(user("alice") + user("bob"))
    alice, answer = log_in(daemon, "alice")
    bob, _ = log_in(daemon, "bob")
    assert answer.status_code == 303 and alice.get("/").status_code == 200
    text = daemon.config.read_text()
    daemon.config.write_text(text[:text.index('\n[[users]]\nid = "alice"')]
                             + text[text.index('\n[[users]]\nid = "bob"'):])
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: events(daemon, "config_reloaded"), 10, "the reload")
    gone = alice.get("/")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert bob.get("/").status_code == 200
    alice.close()
    bob.close()


def test_x_forwarded_for_from_an_untrusted_peer_is_not_believed(started):
    """No trusted proxies: 20 failed logins from 127.0.0.1, each claiming another address,
    lock 127.0.0.1 out; uvicorn's own proxy-header handling is off."""
    daemon = started(user("alice"))
    for n in range(20):
        _, answer = log_in(daemon, f"user{n}", "guess",
                           headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert answer.status_code == 401
    _, answer = log_in(daemon, "alice", headers={"X-Forwarded-For": "198.51.100.99"})
    assert answer.status_code == 429
    limited = events(daemon, "console_login_limited")
    assert limited and limited[-1]["client"] == "127.0.0.1"


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(started):
    """With 127.0.0.1 trusted, each forwarded address has its own count."""
    daemon = started(user("alice"), 'trusted_proxies = ["127.0.0.1"]')
    for n in range(20):
        _, answer = log_in(daemon, f"user{n}", "guess",
                           headers={"X-Forwarded-For": "198.51.100.66"})
        assert answer.status_code == 401
    _, answer = log_in(daemon, "alice", headers={"X-Forwarded-For": "198.51.100.66"})
    assert answer.status_code == 429
    _, answer = log_in(daemon, "alice", headers={"X-Forwarded-For": "198.51.100.7"})
    assert answer.status_code == 303
    failed = events(daemon, "console_login_failed")
    assert {record["client"] for record in failed} == {"198.51.100.66"}
