"""Failed logins are limited per account, per client and overall; password checks run one
at a time on a thread of their own, and a login flood is refused rather than queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pager_actors.console import passwords
from pager_actors.console.limits import LoginLimiter, LoginLimits
from pager_actors.console.passwords import CheckerBusy, PasswordChecker
from pager_actors.domain.people import User
from tests.console.conftest import PASSWORD, cheap_hash, log_in


class CountingChecker(PasswordChecker):
    """The real checker, counting the passwords it was asked to check."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    async def check(self, user, password, everyone):
        self.checked += 1
        return await super().check(user, password, everyone)


def test_five_failures_lock_the_account_even_for_the_right_password(site):
    """The sixth attempt on an account is refused before its password is checked: 429 with
    Retry-After; the window passing unlocks it."""
    checker = CountingChecker()
    app = site.app(checker=checker)
    client = site.client(app)
    for _ in range(5):
        assert log_in(client, "alice", "guess").status_code == 401
    refused = log_in(client, "alice", PASSWORD)
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 900
    assert checker.checked == 5, "a refused attempt costs no password check"
    assert log_in(site.client(app), "bob").status_code == 303, "other accounts are not locked"
    site.clock.advance(900)
    assert log_in(client, "alice", PASSWORD).status_code == 303


def test_unknown_accounts_are_limited_like_known_ones(site):
    """Five failures for a name nobody has: the same 429, so a refusal says nothing."""
    client = site.client()
    for _ in range(5):
        assert log_in(client, "mallory", "guess").status_code == 401
    assert log_in(client, "mallory", "guess").status_code == 429
    assert log_in(client, "MALLORY ", "guess").status_code == 429, "case and spaces ignored"


def test_one_client_failing_on_many_accounts_is_limited(site):
    """Twenty failures from one address over many names: that address gets 429, another
    address still logs in."""
    app = site.app()
    sprayer = site.client(app, client=("203.0.113.9", 40000))
    for n in range(20):
        assert log_in(sprayer, f"user{n}", "guess").status_code == 401
    assert log_in(sprayer, "alice", PASSWORD).status_code == 429
    assert log_in(site.client(app, client=("198.51.100.7", 40000))).status_code == 303


def test_failures_overall_are_limited_across_clients_and_accounts(site):
    """Past the overall limit everyone waits, whatever their address or account."""
    app = site.app(limits=LoginLimits(overall=6))
    for n in range(6):
        client = site.client(app, client=(f"203.0.113.{n}", 40000))
        assert log_in(client, f"user{n}", "guess").status_code == 401
    fresh = site.client(app, client=("198.51.100.7", 40000))
    assert log_in(fresh, "alice", PASSWORD).status_code == 429


def test_a_success_clears_its_accounts_failures():
    """Four failures, a success, four more failures: still not locked."""
    limiter = LoginLimiter(LoginLimits(per_account=5, per_client=100), clock=lambda: 0.0)
    for _ in range(4):
        limiter.failed("alice", "c")
    limiter.succeeded("alice")
    for _ in range(4):
        limiter.failed("alice", "c")
    assert limiter.refused("alice", "c") is None
    limiter.failed("alice", "c")
    assert limiter.refused("alice", "c").scope == "account"


def test_remembered_keys_are_bounded():
    """A spray of distinct names never grows the tables past `max_tracked`."""
    now = [0.0]
    limiter = LoginLimiter(LoginLimits(max_tracked=50, overall=10_000), clock=lambda: now[0])
    for n in range(500):
        limiter.failed(f"name{n}", f"10.0.{n // 250}.{n % 250}")
    assert len(limiter._accounts) <= 50 and len(limiter._clients) <= 50


def test_password_checks_run_one_at_a_time_and_a_flood_is_refused(monkeypatch):
    """With one thread and room for 3 waiting, the fourth concurrent check raises
    CheckerBusy at once; the others run one after another."""
    running, most, release = [0], [0], threading.Event()
    lock = threading.Lock()

    def slow_verify(password_hash, password):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return password == PASSWORD

    monkeypatch.setattr(passwords, "verify_password", slow_verify)
    checker = PasswordChecker(concurrency=1, max_waiting=3)
    alice = User("alice", "Alice", cheap_hash())

    async def flood():
        checks = [asyncio.create_task(checker.check(alice, PASSWORD, [alice]))
                  for _ in range(3)]
        await asyncio.sleep(0)  # let the three enter
        with pytest.raises(CheckerBusy):
            await checker.check(alice, PASSWORD, [alice])
        release.set()
        return await asyncio.gather(*checks)

    try:
        assert asyncio.run(flood()) == [True, True, True]
    finally:
        checker.close()
    assert most[0] == 1


def test_a_flooded_checker_answers_503(site, monkeypatch):
    """A login that finds the checker full gets a 503 page with Retry-After."""

    async def busy(self, user, password, everyone):
        raise CheckerBusy()

    monkeypatch.setattr(PasswordChecker, "check", busy)
    response = log_in(site.client())
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_an_unknown_account_is_checked_against_a_hash_as_costly_as_the_users(monkeypatch):
    """No such user: the password is still verified, against a dummy hash with the
    parameters of the configured users' hashes."""
    seen = []
    real = passwords.verify_password

    def spy(password_hash, password):
        seen.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", spy)
    checker = PasswordChecker()
    users = [User("alice", "Alice", cheap_hash())]
    try:
        assert asyncio.run(checker.check(None, PASSWORD, users)) is False
    finally:
        checker.close()
    [dummy] = seen
    assert dummy != users[0].password_hash
    assert passwords._profile(dummy) == passwords._profile(users[0].password_hash)
