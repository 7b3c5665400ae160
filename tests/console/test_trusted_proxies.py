"""X-Forwarded-For names the client only when a trusted proxy wrote it."""

from __future__ import annotations

import pytest

from pager_actors.console.clients import client_address, parse_networks
from tests.console.conftest import PASSWORD, log_in

PROXIES = parse_networks(["10.0.0.1", "192.168.0.0/24", "fd00::/8"])


@pytest.mark.parametrize("peer,forwarded,expected", [
    ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),              # not a proxy: ignored
    ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),                # the proxy's word
    ("10.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),       # the client's own XFF
    ("10.0.0.1", ["198.51.100.1, 192.168.0.7"], "198.51.100.1"),   # two trusted hops
    ("10.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),     # headers in order
    ("10.0.0.1", ["192.168.0.7"], "192.168.0.7"),                  # only proxies: leftmost
    ("10.0.0.1", ["not-an-ip"], "10.0.0.1"),                       # garbage: the proxy
    ("10.0.0.1", ["6.6.6.6, garbage, 198.51.100.1"], "198.51.100.1"),
    ("10.0.0.1", [], "10.0.0.1"),
    ("fd00::5", ["2001:db8::1"], "2001:db8::1"),
    ("::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1"),         # v4-mapped peer
    ("testclient", ["198.51.100.1"], "testclient"),                # not an address
])
def test_the_client_address(peer, forwarded, expected):
    """Read from the right, trusted hops skipped; untrusted peers are themselves."""
    assert client_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_nobody_is_believed():
    """No [server] trusted_proxies: even 127.0.0.1's header is ignored."""
    assert client_address("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


def test_a_client_cannot_escape_its_limit_by_forging_the_header(site):
    """From an untrusted address, a new X-Forwarded-For each try changes nothing: that
    address is limited after 20 failures."""
    app = site.app(trusted_proxies=PROXIES)
    client = site.client(app, client=("203.0.113.9", 40000))
    for n in range(20):
        client.headers["X-Forwarded-For"] = f"198.51.100.{n}"
        assert log_in(client, f"user{n}", "guess").status_code == 401
    client.headers["X-Forwarded-For"] = "198.51.100.200"
    assert log_in(client, "alice", PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(site):
    """Through the proxy, the address it names is limited, not the proxy's."""
    app = site.app(trusted_proxies=PROXIES)
    proxy = site.client(app, client=("10.0.0.1", 40000))
    proxy.headers["X-Forwarded-For"] = "198.51.100.66"
    for n in range(20):
        assert log_in(proxy, f"user{n}", "guess").status_code == 401
    assert log_in(proxy, "alice", PASSWORD).status_code == 429
    proxy.headers["X-Forwarded-For"] = "198.51.100.7"
    assert log_in(proxy, "alice", PASSWORD).status_code == 303


def test_networks_with_host_bits_are_refused():
    """"10.0.0.5/24" is a typo, not a network."""
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.5/24"])
