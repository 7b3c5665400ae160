"""[cluster]: the node's name and the lease TTL, and the config hash the nodes compare."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

from pager_actors.daemon.config import config_hash, load_config
from tests.unit.test_config import GOOD, problems, write

URL = "postgresql://pager@db.example/pager"


def clustered(extra: str = "") -> str:
    return GOOD.replace('state = "state/pager.db"', f'state = "{URL}"') + extra


def test_a_node_is_named_by_its_host_and_port_and_leases_last_10s(tmp_path):
    """Without [cluster], the node is `hostname:port` and lease_ttl 10 s."""
    config = load_config(write(tmp_path, clustered()), {})
    assert config.cluster.lease_ttl == timedelta(seconds=10)
    assert config.cluster.node_id(config.server.port) == (
        f"{socket.gethostname()}:{config.server.port}")


def test_cluster_settings_are_read_and_a_ttl_under_3s_refused(tmp_path):
    """[cluster] node and lease_ttl are taken; a TTL below 3 s is refused, saying why."""
    config = load_config(write(tmp_path, clustered(
        '\n[cluster]\nnode = "pager-2"\nlease_ttl = "5s"\n')), {})
    assert config.cluster.node_id(8080) == "pager-2"
    assert config.cluster.lease_ttl == timedelta(seconds=5)
    [line] = problems(tmp_path, clustered('\n[cluster]\nlease_ttl = "2s"\n'))
    assert "[cluster] lease_ttl" in line and "at least 3s" in line


def test_cluster_on_a_file_state_draws_a_warning(tmp_path):
    """[cluster] with an SQLite state does nothing: said at start and by check-config."""
    config = load_config(write(tmp_path, GOOD + '\n[cluster]\nnode = "a"\n'), {})
    assert [w for w in config.warnings if "[cluster] is ignored" in w]
    assert not [w for w in load_config(write(tmp_path, clustered(
        '\n[cluster]\nnode = "a"\n')), {}).warnings if "[cluster]" in w]


def test_the_hash_ignores_what_is_each_nodes_own_and_sees_what_they_share(tmp_path):
    """Node name, listen address and state URL leave the hash alone; a policy change or
    another ack timeout changes it."""
    base = config_hash(load_config(write(tmp_path, clustered()), {}))
    own = clustered('\n[cluster]\nnode = "pager-3"\n').replace(
        '127.0.0.1:9090', '127.0.0.1:9091').replace(URL, "postgresql://other@db2/pager")
    assert config_hash(load_config(write(tmp_path, own), {})) == base
    assert config_hash(load_config(write(tmp_path, clustered().replace(
        'ack_timeout = "', 'ack_timeout = "1', 1)), {})) != base


def test_the_hash_is_the_same_in_every_process(tmp_path):
    """Two interpreters with different hash seeds compute one hash (no set order in it)."""
    path = write(tmp_path, clustered())
    code = ("import sys; from pager_actors.daemon.config import config_hash, load_config; "
            "print(config_hash(load_config(sys.argv[1], {})))")
    hashes = {subprocess.run([sys.executable, "-c", code, str(path)], check=True, text=True,
                             capture_output=True, env={"PYTHONHASHSEED": seed}).stdout
              for seed in ("1", "2", "3")}
    assert len(hashes) == 1
