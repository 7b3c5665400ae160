"""Two console nodes on one PostgreSQL database, behind a load balancer: a person logged in
through one is logged in on both, and failed logins add up over both."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from adapters.pg_console import PgConsoleState
from adapters.postgres import PostgresStore
from pager_actors.console.limits import LoginLimits
from tests.console.conftest import PASSWORD, cheap_hash, csrf_of, log_in


class Balancer:
    """An ASGI load balancer in front of the nodes: each request goes to `node`, which the
    test sets, so one browser (one cookie jar) reaches either node."""

    def __init__(self, apps: list) -> None:
        self.apps, self.node = apps, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.apps[self.node](scope, receive, send)


@pytest.fixture
def console_db(pg_dsn):
    """A database with the console's tables, as the store's schema v3 makes them."""
    PostgresStore(pg_dsn).close()  # its migration creates the console's tables
    return pg_dsn


@pytest.fixture
def cluster(site, console_db):
    """Two console apps over the same Pager, each with its own PgConsoleState (its own
    pool), as two daemons would have; limits small enough to reach."""
    states = [PgConsoleState(console_db) for _ in range(2)]
    limits = LoginLimits(per_account=5, per_client=8, overall=50)
    try:
        apps = [site.app(sessions=state.sessions(), limiter=state.limiter(limits),
                         login_key=state.login_key()) for state in states]
        yield Balancer(apps)
    finally:
        for state in states:
            state.close()


def browser(balancer: Balancer, address: str = "203.0.113.1") -> TestClient:
    return TestClient(balancer, follow_redirects=False, client=(address, 40000))


def flash(page: str) -> str | None:
    found = re.search(r'class="flash[^"]*"[^>]*>([^<]*)<', page)
    return found.group(1) if found else None


def rows(dsn: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return db.execute(query, params).fetchall()


def test_a_session_made_on_one_node_opens_pages_on_the_other(cluster):
    """Log in through A; the next request lands on B and is served, as Alice."""
    client = browser(cluster)
    assert log_in(client).status_code == 303
    cluster.node = 1
    page = client.get("/services/checkout")
    assert page.status_code == 200 and "Signed in as <strong>Alice Martin</strong>" in page.text


def test_a_form_from_one_node_posted_to_the_other_acts_and_its_message_shows_once(
        cluster, site):
    """The page comes from A, its form is posted to B (CSRF accepted), the message B kept
    is shown by A's next page, once."""
    client = browser(cluster)
    log_in(client)
    page = client.get("/services/checkout").text
    cluster.node = 1
    end = (site.wall + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = client.post("/services/checkout/maintenance",
                           data={"csrf": csrf_of(page), "end": end, "reason": "db upgrade"})
    assert response.status_code == 303
    assert [w.reason for w in site.pager.state("checkout").windows] == ["db upgrade"]
    cluster.node = 0
    said = flash(client.get("/services/checkout").text)
    assert said is not None and said.startswith("Maintenance window 1 runs until ")
    assert flash(client.get("/services/checkout").text) is None
    cluster.node = 1
    assert flash(client.get("/services/checkout").text) is None


def test_a_wrong_csrf_token_is_refused_on_either_node(cluster):
    """Sharing sessions does not loosen the check: a token that is not the session's is 403."""
    client = browser(cluster)
    log_in(client)
    cluster.node = 1
    response = client.post("/services/checkout/maintenance/1/end", data={"csrf": "forged"})
    assert response.status_code == 403 and "This form was refused" in response.text


def test_logging_out_on_one_node_ends_the_session_on_the_other(cluster):
    """Logout through B: the same cookie, replayed to A, opens nothing."""
    client = browser(cluster)
    log_in(client)
    cookie = client.cookies.get("pager_session")
    cluster.node = 1
    response = client.post("/logout", data={"csrf": csrf_of(client.get("/").text)})
    assert response.status_code == 303
    cluster.node = 0
    replay = browser(cluster)
    replay.cookies.set("pager_session", cookie)
    assert replay.get("/").status_code == 303


def test_a_login_form_served_by_one_node_is_accepted_by_the_other(cluster):
    """Both nodes sign login forms with the key in the database."""
    client = browser(cluster)
    token = csrf_of(client.get("/login").text)
    cluster.node = 1
    response = client.post("/login", data={"csrf": token, "user": "alice",
                                           "password": PASSWORD, "next": "/"})
    assert response.status_code == 303 and response.headers["location"] == "/"
    cluster.node = 0
    assert client.get("/").status_code == 200


def test_failed_logins_on_both_nodes_add_up_to_the_account_limit(cluster):
    """Three failures on A and two on B lock the account on both, even for the right
    password, with a Retry-After within the window."""
    for node, address in ((0, "203.0.113.1"), (0, "203.0.113.2"), (0, "203.0.113.3"),
                          (1, "203.0.113.4"), (1, "203.0.113.5")):
        cluster.node = node
        assert log_in(browser(cluster, address), "alice", "guess").status_code == 401
    for node in (0, 1):
        cluster.node = node
        refused = log_in(browser(cluster, "198.51.100.7"), "alice", PASSWORD)
        assert refused.status_code == 429 and "Too many failed logins" in refused.text
        assert 0 < int(refused.headers["retry-after"]) <= 900
    assert log_in(browser(cluster, "198.51.100.7"), "bob").status_code == 303


def test_failures_of_one_client_add_up_across_nodes(cluster):
    """One address spraying names at both nodes is refused once its count, kept in the
    database, is full; another address still logs in."""
    client = browser(cluster, "203.0.113.9")
    for n in range(8):
        cluster.node = n % 2
        assert log_in(client, f"user{n}", "guess").status_code == 401
    assert log_in(client, "alice", PASSWORD).status_code == 429
    assert log_in(browser(cluster, "198.51.100.7")).status_code == 303


def test_unknown_accounts_are_limited_alike_across_nodes(cluster):
    """A name nobody has, in any case and spacing, locks like a real one."""
    for n in range(5):
        cluster.node = n % 2
        assert log_in(browser(cluster, f"203.0.113.{n}"), "mallory", "x").status_code == 401
    assert log_in(browser(cluster, "198.51.100.7"), " MALLORY", "x").status_code == 429


def test_a_success_on_one_node_clears_the_accounts_failures_on_both(cluster):
    """Four failures on A, a success on B, four more failures: still not locked."""
    for _ in range(4):
        assert log_in(browser(cluster, "203.0.113.1"), "alice", "guess").status_code == 401
    cluster.node = 1
    assert log_in(browser(cluster, "203.0.113.2")).status_code == 303
    cluster.node = 0
    for _ in range(4):
        assert log_in(browser(cluster, "203.0.113.3"), "alice", "guess").status_code == 401
    assert log_in(browser(cluster, "203.0.113.4")).status_code == 303


def test_a_removed_user_or_changed_password_ends_the_session_on_every_node(cluster, site):
    """A reload that changes Alice's hash logs her out on both nodes; her session row is
    gone; Bob, removed, is logged out too."""
    alice, bob = browser(cluster), browser(cluster, "203.0.113.2")
    log_in(alice)
    log_in(bob, "bob")
    site.users[0] = replace(site.users[0], password_hash=cheap_hash("new password"))
    site.users[:] = [u for u in site.users if u.id != "bob"]
    for node in (1, 0):
        cluster.node = node
        assert alice.get("/").status_code == 303
        assert bob.get("/").status_code == 303


def test_the_database_keeps_only_a_digest_of_the_session_id(cluster, console_db):
    """The cookie's value is nowhere in the table; its SHA-256 is the row's key."""
    client = browser(cluster)
    log_in(client)
    cookie = client.cookies.get("pager_session")
    [(digest, user_id)] = rows(console_db, "SELECT id_digest, user_id FROM console_sessions")
    assert user_id == "alice" and digest == hashlib.sha256(cookie.encode()).hexdigest()
    dump = rows(console_db, "SELECT console_sessions::text FROM console_sessions")
    assert cookie not in repr(dump)


def test_a_session_expires_by_the_databases_clock(cluster, console_db):
    """Once its expires_at has passed in the database's time, neither node honours the
    session, whatever the nodes' clocks say, and the row is removed when met."""
    client = browser(cluster)
    log_in(client)
    [(hours,)] = rows(console_db, "SELECT EXTRACT(EPOCH FROM expires_at - created_at) / 3600 "
                                  "FROM console_sessions")
    assert float(hours) == 12
    rows(console_db, "UPDATE console_sessions SET expires_at = now() - interval '1 second' "
                     "RETURNING 1")
    for node in (1, 0):
        cluster.node = node
        assert client.get("/").status_code == 303
    assert rows(console_db, "SELECT count(*) FROM console_sessions") == [(0,)]


def test_while_the_database_is_down_the_console_answers_503_then_recovers(
        site, console_db, postgres):
    """A node that cannot reach its sessions shows a 503 page (not a 500, not a login
    form); once PostgreSQL is back the same session works again."""
    state = PgConsoleState(console_db, timeout=1)
    try:
        app = site.app(sessions=state.sessions(), limiter=state.limiter(),
                       login_key=state.login_key())
        client = TestClient(app, follow_redirects=False)
        log_in(client)
        with postgres.stopped():
            page = client.get("/")
            assert page.status_code == 503 and "cannot answer right now" in page.text
            assert page.headers["retry-after"] == "5"
            refused = log_in(TestClient(app, follow_redirects=False), "bob")
            assert refused.status_code == 503
        assert client.get("/").status_code == 200
    finally:
        state.close()
