"""A daemon that cannot own its state or its port exits 2 with one line, and sends nothing."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite import SqliteStore
from pager_actors.domain import MonitoredService, RaiseAlert, decide
from pager_actors.ports import Transition
from tests.conftest import two_level_policy
from tests.e2e.daemon import ROOT, Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(60)

SERVICES = """
[[services]]
id = "checkout"
levels = [["mailto:oncall@example.com", "sms:+33600000001"], ["sms:+33600000002"]]
"""


@pytest.fixture
def gateways():
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        yield smtp, sms


def state_with_pending_pages(path) -> None:
    """A state file holding an open incident whose two pages were never delivered."""
    store = SqliteStore(path)
    decision = decide(MonitoredService("checkout"), RaiseAlert("down"),
                      two_level_policy("checkout"), now=datetime.now(UTC),
                      ack_timeout=timedelta(hours=1))
    store.commit([Transition(0, decision.service, decision.effects)])
    store.close()


def write_config(tmp_path, gateways, port: int):
    smtp, sms = gateways
    config = tmp_path / "pager.toml"
    config.write_text(config_text(port=port, state=tmp_path / "pager.db", smtp_port=smtp.port,
                                  sms_url=sms.base_url, ack_timeout="1h", services=SERVICES))
    return config


def start_refused(config, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pager_actors", "run", "--config", str(config)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=15,
                          env={"PAGER_SMS_AUTH_TOKEN": "tok", "PATH": "/usr/bin:/bin", **env})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_daemon_on_the_same_state_exits_2_and_resends_nothing(tmp_path, gateways):
    """While the state is owned, a daemon exits 2 within 5 s with one line naming the file."""
    smtp, sms = gateways
    state = tmp_path / "pager.db"
    state_with_pending_pages(state)
    config = write_config(tmp_path, gateways, new_port())
    owner = SqliteStore(state)  # the first pager, holding the state
    before = digest(state)
    try:
        refused = start_refused(config)
    finally:
        owner.close()
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert str(state) in line and "in use" in line
    assert refused.stdout == ""
    assert digest(state) == before
    assert smtp.received == [] and sms.messages == []
    # Once free, the next daemon owns it and resends what was pending.
    daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
    try:
        daemon.start()
        wait_for(lambda: len(smtp.received) == 1 and len(sms.messages) == 1, 10, "the resend")
    finally:
        assert daemon.terminate() == 0


def test_a_port_in_use_exits_2_before_anything_is_resent(tmp_path, gateways):
    """The socket is bound before recovery: a taken port costs no duplicate page."""
    smtp, sms = gateways
    state_with_pending_pages(tmp_path / "pager.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = start_refused(write_config(tmp_path, gateways, port))
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert f"127.0.0.1:{port}" in line and "already in use" in line
    assert smtp.received == [] and sms.messages == []
    store = SqliteStore(tmp_path / "pager.db")
    assert len(store.undelivered()) == 2  # still pending, for the daemon that will own them
    store.close()


def foreign(path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()


def newer(path) -> None:
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()


def damaged(path) -> None:
    store = SqliteStore(path)
    for i in range(300):
        decision = decide(MonitoredService(f"s{i}"), RaiseAlert("x" * 200),
                          two_level_policy(f"s{i}"), now=datetime.now(UTC),
                          ack_timeout=timedelta(hours=1))
        store.commit([Transition(0, decision.service, decision.effects)])
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3:4096 * 3 + 600] = b"\x5a" * 600  # scribble over a b-tree page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil,says", [
    (foreign, "no pager schema version"), (newer, "newer than this program's"),
    (damaged, "not a readable pager store"), (lambda path: path.write_text("notes\n"),
                                              "not an SQLite file"),
])
def test_an_unusable_state_file_exits_2_with_one_line_and_is_left_as_it_was(
        tmp_path, gateways, spoil, says):
    """Foreign, newer, damaged or not SQLite at all: exit 2, one line, the file unchanged."""
    state = tmp_path / "pager.db"
    spoil(state)
    before = digest(state)
    refused = start_refused(write_config(tmp_path, gateways, new_port()))
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert str(state) in line and says in line
    assert digest(state) == before


def test_a_missing_state_directory_is_named(tmp_path, gateways):
    """The directory is named as missing, not the file called unreadable."""
    config = write_config(tmp_path, gateways, new_port())
    config.write_text(config.read_text().replace(str(tmp_path / "pager.db"),
                                                 str(tmp_path / "gone" / "pager.db")))
    refused = start_refused(config)
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert "directory" in line and "does not exist" in line


def test_the_listening_socket_answers_without_nagle_delays():
    """Accepted connections have TCP_NODELAY: small answers are not held 40 ms for an ACK."""
    from pager_actors.daemon.config import ServerConfig  # noqa: PLC0415
    from pager_actors.daemon.run import listen_socket  # noqa: PLC0415

    with listen_socket(ServerConfig(host="127.0.0.1", port=new_port())) as listener, \
            socket.create_connection(listener.getsockname(), timeout=5):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_a_postgresql_state_that_cannot_be_had_exits_2_without_the_password(
        tmp_path, gateways, postgres):
    """A refused login or an unreachable server: exit 2, one line naming the server and the
    reason, never the password; no lock file is made beside the config."""
    config = write_config(tmp_path, gateways, new_port())
    secret = "wrong-password-for-the-test"
    for url, reason in ((postgres.dsn("postgres", password=secret),
                         "password authentication failed"),
                        (f"postgresql://pager:{secret}@127.0.0.1:{new_port()}/pager",
                         "cannot connect")):
        refused = start_refused(config, PAGER_STATE=url)
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.splitlines()
        assert "PostgreSQL at 127.0.0.1:" in line and reason in line
        assert secret not in refused.stderr + refused.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pager.toml"]
