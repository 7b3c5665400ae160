"""Three daemons on one PostgreSQL: any node answers, the owner pages once, a dead or paused
node's services move, a stopping node hands over at once, PostgreSQL may restart.

Each test starts its own database (`pg_dsn`), its own SMTP and SMS servers and
its own daemons, on 127.0.0.1, with a 3 s lease TTL unless it says otherwise.
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from pager_actors.cluster import SHARDS, shard_of
from pager_actors.daemon.replies import twilio_signature
from tests.e2e.cluster import Cluster, number, paused, services_text
from tests.e2e.daemon import wait_for
from tests.e2e.test_daemon import metric
from tests.e2e.test_oncall import PEOPLE
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(240)

TTL, ACK = 3.0, 2.0


@pytest.fixture
def gateways():
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        yield smtp, sms


@pytest.fixture
def make_cluster(tmp_path, gateways, pg_dsn):
    smtp, sms = gateways
    made: list[Cluster] = []

    def make(services: str, **options: object) -> Cluster:
        cluster = Cluster(tmp_path, pg_dsn, smtp_port=smtp.port, sms_url=sms.base_url,
                          services=services, **options)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def sent_to(sms: SmsGateway) -> Counter[str]:
    return Counter(message.to for message in sms.messages)


def test_any_node_takes_any_command_and_only_the_owner_pages(make_cluster, gateways):
    """Alerts for six services sent to every node give one page each; an ack sent to a node
    that does not own the service is applied by its owner and read back from a third;
    GET /api/v1/cluster shows three nodes sharing the 64 shards, one config."""
    _, sms = gateways
    cluster = make_cluster(services_text(6), ack_timeout="1h").start()
    for i in range(6):
        for daemon in cluster.daemons:
            reply = cluster.alert(f"svc-{i}", via=daemon)
            assert reply.status_code == 202, reply.text
    wait_for(lambda: len(sms.messages) >= 6, 10, "six level-1 pages")
    owner = cluster.owner("svc-0")
    other, third = cluster.others(owner)
    acked = other.api("POST", "/api/v1/services/svc-0/acknowledge")
    assert acked.status_code == 202 and acked.json()["status"]["acknowledged"] is True
    status = third.api("GET", "/api/v1/services/svc-0").json()
    assert status["acknowledged"] is True and status["level"] == 1
    body = third.api("GET", "/api/v1/cluster").json()
    assert body["shards"] == SHARDS and body["config_mismatch"] is False
    assert sorted(n["node"] for n in body["nodes"]) == ["node-0", "node-1", "node-2"]
    assert sum(n["shards_held"] for n in body["nodes"]) == SHARDS
    assert all(n["config_matches"] and n["last_renewal"] for n in body["nodes"])
    assert sum(metric(d, "pager_cluster_forwarded_commands_total")
               for d in cluster.daemons) >= 12  # two of each service's three alerts at least
    assert sum(metric(d, "pager_cluster_shards_held") for d in cluster.daemons) == SHARDS
    assert sent_to(sms) == {number(i, 1): 1 for i in range(6)}


def test_level_2_still_comes_when_the_owner_is_killed(make_cluster, gateways):
    """kill -9 the owner right after level 1: a survivor takes the shard once its lease
    lapses, re-arms the ack timeout with the time left and pages level 2, within
    lease_ttl + the ack timeout + 2 s of level 1 (the issue's bound); level 1 repeats only
    if it was in flight at the kill."""
    _, sms = gateways
    # No SMS throttle: a level 1 resent after the kill would otherwise wait out its
    # number's window (the cluster counted the first send), which is right, but slow.
    cluster = make_cluster(services_text(3), ack_timeout=f"{ACK:g}s", lease_ttl=f"{TTL:g}s",
                           sms="max_per_contact = 0\n").start()
    owner = cluster.owner("svc-0")
    assert cluster.alert("svc-0", via=cluster.others(owner)[0]).status_code == 202
    wait_for(lambda: sent_to(sms)[number(0, 1)], 10, "level 1")
    paged = time.perf_counter()
    owner.kill()
    wait_for(lambda: sent_to(sms)[number(0, 2)], TTL + ACK + 2, "level 2 from a survivor")
    [level_2] = [m for m in sms.messages if m.to == number(0, 2)]
    assert level_2.at - paged <= TTL + ACK + 2
    cluster.wait_settled()
    # A level 1 in flight at the kill is resent by the survivor, and marked, meanwhile.
    wait_for(lambda: [(level, status) for _, level, _, _, status in cluster.outbox("svc-0")]
             == [(1, "delivered"), (2, "delivered")], 10, "both pages marked delivered")
    in_flight = 1 if sent_to(sms)[number(0, 1)] == 2 else 0
    assert sent_to(sms) == {number(0, 1): 1 + in_flight, number(0, 2): 1}
    assert metric(cluster.others(owner)[0], "pager_cluster_failovers_total") + metric(
        cluster.others(owner)[1], "pager_cluster_failovers_total") >= 1


def test_a_paused_node_commits_and_sends_nothing_for_the_shards_it_lost(
        make_cluster, gateways):
    """SIGSTOP the owner past its lease: a survivor takes over and pages level 2 when the
    ack timeout falls due. SIGCONT: the old owner's own timer for that incident fires at
    once, late, and is fenced (its lease epoch is gone): no second level 2, no row
    written, and it rejoins with a fair share."""
    _, sms = gateways
    cluster = make_cluster(services_text(3), ack_timeout=f"{ACK:g}s",
                           lease_ttl=f"{TTL:g}s").start()
    owner = cluster.owner("svc-0")
    assert cluster.alert("svc-0", via=cluster.others(owner)[0]).status_code == 202
    wait_for(lambda: sent_to(sms)[number(0, 1)], 10, "level 1")
    # Level 1's outcome recorded first: no page is in flight at the pause, so none may repeat.
    wait_for(lambda: [status for *_, status in cluster.outbox("svc-0")] == ["delivered"], 10,
             "level 1 marked delivered")
    with paused(owner):
        wait_for(lambda: cluster.leases()[shard_of("svc-0")] not in (
            None, f"node-{cluster.daemons.index(owner)}"), 4 * TTL, "a survivor's lease")
        wait_for(lambda: sent_to(sms)[number(0, 2)], 2 * ACK + 2, "level 2 from the survivor")
        rows_before = cluster.outbox("svc-0")
    wait_for(lambda: metric(owner, "pager_cluster_shards_lost_total") >= 1, 10,
             "the resumed node to notice its lost leases")
    cluster.wait_settled()
    # The resumed node is back with a fair share: anything it did meanwhile is done.
    assert cluster.outbox("svc-0") == rows_before
    assert sent_to(sms) == {number(0, 1): 1, number(0, 2): 1}


def test_a_stopping_node_hands_its_shards_over_without_waiting_for_the_ttl(
        make_cluster, gateways):
    """With a 30 s TTL, SIGTERM one node while one of its services escalates: it exits 0,
    the two others hold every shard within 10 s, and level 2 comes once, on time."""
    _, sms = gateways
    cluster = make_cluster(services_text(3), ack_timeout="3s", lease_ttl="30s").start()
    owner = cluster.owner("svc-0")
    assert cluster.alert("svc-0", via=owner).status_code == 202
    wait_for(lambda: sent_to(sms)[number(0, 1)], 10, "level 1")
    assert owner.terminate(timeout=20) == 0
    cluster.wait_settled(timeout=10)
    wait_for(lambda: sent_to(sms)[number(0, 2)], 10, "level 2 from the next owner")
    assert sent_to(sms) == {number(0, 1): 1, number(0, 2): 1}
    assert "shards_abandoned" in owner.log.read_text()


def test_nodes_on_another_config_are_flagged_until_reloaded(make_cluster):
    """A node whose policies differ is flagged on every node's /api/v1/cluster and in the
    metrics; once its file is fixed and SIGHUP reloads it, the flag clears."""
    cluster = make_cluster(services_text(2), ack_timeout="1h")
    odd = cluster.daemons[2]
    agreed = odd.config.read_text()
    odd.config.write_text(agreed.replace(number(1, 2), number(1, 3)))
    cluster.start()

    def flagged(daemon) -> list[str]:
        body = daemon.api("GET", "/api/v1/cluster").json()
        return [n["node"] for n in body["nodes"] if not n["config_matches"]]

    # What each node says comes from the others' last renewals: it may take a tick.
    wait_for(lambda: flagged(cluster.daemons[0]) == ["node-2"]
             and flagged(odd) == ["node-0", "node-1"]
             and cluster.daemons[0].api("GET", "/api/v1/cluster").json()["config_mismatch"],
             3 * TTL, "every node flagging the others' config")
    wait_for(lambda: metric(cluster.daemons[1], "pager_cluster_config_mismatch") == 1,
             3 * TTL, "the mismatch in the metrics")
    odd.config.write_text(agreed)
    assert odd.proc is not None
    odd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not any(flagged(d) for d in cluster.daemons), 3 * TTL,
             "the flag cleared once every node agrees")


def test_postgresql_restarting_gives_503s_then_everything_goes_on(make_cluster, gateways,
                                                                  postgres):
    """While PostgreSQL is down, commands get a JSON 503 and /readyz says 503; nothing is
    paged for them. Once it is back the nodes take the shards again by themselves and an
    alert pages, once."""
    _, sms = gateways
    cluster = make_cluster(services_text(3), ack_timeout="1h", size=2).start()
    with postgres.stopped():
        refused = cluster.alert("svc-1")
        assert refused.status_code == 503 and "error" in refused.json()
        wait_for(lambda: all(d.api("GET", "/readyz").status_code == 503
                             for d in cluster.daemons), 3 * TTL, "every /readyz at 503")
    cluster.wait_settled(timeout=60)
    wait_for(lambda: all(d.api("GET", "/readyz").status_code == 200 for d in cluster.daemons),
             30, "every /readyz at 200 again")
    accepted = cluster.alert("svc-0")
    assert accepted.status_code == 202, accepted.text
    wait_for(lambda: sent_to(sms)[number(0, 1)], 10, "the page after the restart")
    assert sent_to(sms) == {number(0, 1): 1}
    assert cluster.outbox("svc-1") == []


def test_a_storm_with_kills_and_restarts_loses_no_alert_and_no_timer(make_cluster, gateways):
    """Keyed alerts to random nodes while nodes are killed (-9) and started again: every
    alert answered 202 is in its incident's timeline, every incident still reaches level 2
    (no timer lost), and a page repeats only across a kill (it was in flight)."""
    _, sms = gateways
    services = 8
    cluster = make_cluster(services_text(services), ack_timeout=f"{ACK:g}s",
                           lease_ttl=f"{TTL:g}s", seed=11).start()
    accepted: list[tuple[str, str]] = []
    kills: list[float] = []
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            service, key = f"svc-{n % services}", f"k{n}"
            n += 1
            try:
                reply = cluster.alert(service, key=key)
            except httpx.HTTPError:
                continue  # a node died under the request: not accepted
            if reply.status_code == 202:
                accepted.append((service, key))

    sender = threading.Thread(target=send, name="storm")
    sender.start()
    try:
        for _ in range(3):
            time.sleep(1.5)
            victim = cluster.any()
            kills.append(time.perf_counter())
            victim.kill()
            time.sleep(1.5)
            victim.start()
    finally:
        stop.set()
        sender.join(timeout=30)
    assert len(accepted) > 50
    cluster.wait_settled(timeout=60)
    wait_for(lambda: all(sent_to(sms)[number(i, 2)] for i in range(services)),
             TTL + ACK + 10, "level 2 of every incident")
    filed = set(cluster.query("SELECT service_id, key FROM timeline "
                              "WHERE event IN ('opened', 'alert_added')"))
    assert set(accepted) <= filed, sorted(set(accepted) - filed)[:5]
    arrivals: dict[str, list[float]] = defaultdict(list)
    for message in sms.messages:
        arrivals[message.to].append(message.at)
    for to, times in arrivals.items():
        for first, again in itertools.pairwise(times):
            assert any(first <= kill <= again for kill in kills), (
                f"{to} paged twice with no kill between")




def test_overrides_reply_codes_windows_and_timelines_work_from_any_node(
        make_cluster, gateways):
    """An override made through one node pages its user from the owner; an SMS reply to a
    node that does not own the service acknowledges it; a maintenance window started,
    hit and ended through three different nodes holds the alert, then pages it; the
    timeline reads the same from every node."""
    _, sms = gateways
    public = "http://pager.example"
    cluster = make_cluster(
        PEOPLE + services_text(1, prefix="search"), ack_timeout="1h",
        server=f'public_url = "{public}"\nsecret = "{"s" * 40}"\ntoken = "t0ken"\n',
        sms="max_per_contact = 0\n").start()
    a, b, c = cluster.daemons
    numbers = {"alice": "+33600000001", "bob": "+33600000002"}

    def on_call(daemon) -> str:
        return cluster.api("GET", "/api/v1/rotations/primary/oncall", via=daemon).json()["user"]

    today = on_call(a)
    other = "bob" if today == "alice" else "alice"
    now = datetime.now(UTC)
    made = cluster.api("POST", "/api/v1/rotations/primary/overrides", via=a, json={
        "user": other, "start": (now - timedelta(minutes=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat()})
    assert made.status_code == 201, made.text
    wait_for(lambda: all(on_call(d) == other for d in cluster.daemons), 10,
             "every node sees the override")
    assert cluster.alert("checkout", via=b).status_code == 202
    wait_for(lambda: sent_to(sms)[numbers[other]], 10, "the page to the override's user")
    [page] = [m for m in sms.messages if m.to == numbers[other]]
    code = re.search(r"Reply ACK (\d{4,6}) to acknowledge", page.body)[1]
    assert int(code) % SHARDS == shard_of("checkout")

    stranger = next(d for d in cluster.daemons if d is not cluster.owner("checkout"))
    params = [("AccountSid", "AC42"), ("Body", f"ACK {code}"), ("From", numbers[other]),
              ("MessageSid", "SM1"), ("To", "+15550000000")]
    signature = twilio_signature(b"tok", f"{public}/api/v1/sms/inbound", params)
    replied = httpx.post(f"{stranger.url}/api/v1/sms/inbound", data=dict(params),
                         headers={"X-Twilio-Signature": signature}, timeout=10)
    assert "checkout #1 acknowledged" in replied.text, replied.text
    for daemon in cluster.daemons:
        incident = cluster.api("GET", "/api/v1/services/checkout/incidents/1", via=daemon)
        assert [e["by"] for e in incident.json()["timeline"]
                if e["event"] == "acknowledged"] == [f"sms:{other}"]

    window = cluster.api("POST", "/api/v1/services/search-0/maintenance", via=a, json={
        "end": (now + timedelta(hours=1)).isoformat(), "reason": "deploy"})
    assert window.status_code == 201, window.text
    held = cluster.alert("search-0", via=b)
    assert held.status_code == 202 and held.json()["event"] == "suppressed"
    ended = cluster.api("DELETE", f"/api/v1/services/search-0/maintenance/{window.json()['id']}",
                        via=c)
    assert ended.status_code == 200, ended.text
    wait_for(lambda: sent_to(sms)[number(0, 1)], 10, "the held alert paged at the window's end")
    assert sent_to(sms)[numbers[today]] == 0


def test_a_contacts_throttle_holds_over_nodes(make_cluster, gateways):
    """Two services run by two nodes page one phone, one SMS per 3 s allowed: the first goes
    at once, the other node's waits for the window (PostgreSQL counted the first), then
    goes; never two within the window."""
    _, sms = gateways
    services = "".join(f'\n[[services]]\nid = "shared-{i}"\nlevels = [["sms:+33600000007"]]\n'
                       for i in range(8))
    cluster = make_cluster(services, ack_timeout="1h", size=2,
                           sms='max_per_contact = 1\nthrottle_window = "3s"\n').start()
    first = "shared-0"
    second = next(f"shared-{i}" for i in range(1, 8)
                  if cluster.owner(f"shared-{i}") is not cluster.owner(first))
    assert cluster.alert(first).status_code == 202
    wait_for(lambda: sms.messages, 10, "the first page")
    assert cluster.alert(second).status_code == 202
    wait_for(lambda: len(sms.messages) == 2, 15, "the other node's page, once the window allows")
    early, late = sms.messages
    assert late.at - early.at >= 3.0 - 0.2  # the database's clock against ours: a little slack
    assert sum(metric(d, "pager_ledger_refusals_total") for d in cluster.daemons) >= 1
