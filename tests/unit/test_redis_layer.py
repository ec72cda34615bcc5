"""Parsers of the Redis facts, the primary-choice rule, input checks and the templates."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from pyinfra.api.exceptions import DeployError

from ooha.layers.redis import REDIS_DEFAULTS, choose_primary, owned_settings, secret, sentinel_settings
from ooha.facts.redis import (
    MARK,
    SentinelQuorum,
    parse_flat_pairs,
    parse_info,
    parse_master_addr,
    parse_replicas,
    split_per_address,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

PRIMARY_INFO = """\
# Replication
role:master
connected_slaves:2
min_slaves_good_slaves:2
slave0:ip=198.18.2.31,port=6379,state=online,offset=5000,lag=0
slave1:ip=198.18.3.31,port=6379,state=wait_bgsave,offset=0,lag=1
master_failover_state:no-failover
master_replid:5b7c0e0c0d
master_repl_offset:5042
""".splitlines()

REPLICA_INFO = """\
# Replication
role:slave
master_host:198.18.1.31
master_port:6379
master_link_status:up
slave_repl_offset:5042
""".splitlines()


def test_info_of_a_primary_and_its_replicas() -> None:
    info = parse_info(PRIMARY_INFO)
    assert info and info["role"] == "master" and info["master_repl_offset"] == "5042"
    assert parse_replicas(info) == [
        {"ip": "198.18.2.31", "port": 6379, "state": "online", "offset": 5000, "lag": 0},
        {"ip": "198.18.3.31", "port": 6379, "state": "wait_bgsave", "offset": 0, "lag": 1},
    ]


def test_info_that_is_not_an_answer_is_none() -> None:
    assert parse_info(["Could not connect to Redis at 198.18.1.31:6379: Connection refused"]) is None
    assert parse_info(["NOAUTH Authentication required."]) is None
    assert parse_info([]) is None


def test_per_address_output_is_split_by_marker() -> None:
    lines = [f"{MARK}198.18.1.31", *PRIMARY_INFO, f"{MARK}198.18.2.31", *REPLICA_INFO, f"{MARK}198.18.3.31",
             "Could not connect to Redis at 198.18.3.31:6379: Connection refused"]
    parts = split_per_address(lines)
    assert list(parts) == ["198.18.1.31", "198.18.2.31", "198.18.3.31"]
    assert parse_info(parts["198.18.2.31"])["master_host"] == "198.18.1.31"
    assert parse_info(parts["198.18.3.31"]) is None


def test_master_addr_answers() -> None:
    assert parse_master_addr(["198.18.2.31", "6379"]) == "198.18.2.31"
    assert parse_master_addr([""]) is None  # nil: the master name is not monitored
    assert parse_master_addr(["AUTH failed: WRONGPASS", "NOAUTH Authentication required."]) is None


def test_flat_pairs_and_errors() -> None:
    assert parse_flat_pairs(["bind", "198.18.1.31 127.0.0.1", "min-replicas-to-write", "1"]) == {
        "bind": "198.18.1.31 127.0.0.1", "min-replicas-to-write": "1"}
    assert parse_flat_pairs(["NOAUTH Authentication required."]) == {}
    assert parse_flat_pairs(["odd"]) == {}


def test_ckquorum_ok_and_not() -> None:
    fact = SentinelQuorum()
    assert fact.process(["OK 3 usable Sentinels. Quorum and failover authorization can be reached"])["ok"] is True
    bad = fact.process(["NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the majority"])
    assert bad["ok"] is False and bad["message"].startswith("NOQUORUM")


def test_primary_choice_follows_the_sentinels_then_the_local_replica_then_the_first_host() -> None:
    first = "198.18.1.31"
    assert choose_primary({"a": "198.18.2.31", "b": "198.18.2.31", "c": None}, None, first) == "198.18.2.31"
    assert choose_primary({"a": "198.18.3.31", "b": "198.18.2.31", "c": "198.18.2.31"}, None, first) == "198.18.2.31"
    assert choose_primary({"a": None, "b": None}, "198.18.3.31", first) == "198.18.3.31"
    assert choose_primary({}, None, first) == first


def _target(**data) -> SimpleNamespace:
    values = {"private_address": "198.18.1.31", "secrets": {"redis_password": "a" * 32}, **data}
    return SimpleNamespace(name="data1", data=SimpleNamespace(get=values.get, private_address=values["private_address"]))


def test_owned_settings_and_forbidden_keys() -> None:
    wanted = owned_settings(_target())
    assert wanted == {"bind": "198.18.1.31 127.0.0.1", "protected-mode": "yes",
                      "min-replicas-to-write": "1", "min-replicas-max-lag": "5"}
    assert "replicaof" not in wanted
    with pytest.raises(DeployError, match=r"data1: redis_settings: replicaof not allowed"):
        owned_settings(_target(redis_settings={"replicaof": "x 6379"}))
    assert sentinel_settings(_target())["down-after-milliseconds"] == str(REDIS_DEFAULTS["redis_down_after_ms"])


def test_secrets_are_checked_with_host_field_and_fix() -> None:
    assert secret(_target(), "redis_password") == "a" * 32
    with pytest.raises(DeployError, match=r"data1: secrets.redis_sentinel_password: missing; fix:"):
        secret(_target(), "redis_sentinel_password")
    with pytest.raises(DeployError, match=r"data1: secrets.redis_password: must be .*; fix:"):
        secret(_target(secrets={"redis_password": 'has "quotes" and spaces'}), "redis_password")


def _render(name: str, **values) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string((TEMPLATES / name).read_text()).render(**values)


def test_owned_file_never_names_a_primary() -> None:
    text = _render("redis/redis-onlyoffice-ha.conf.j2", bind="198.18.1.31 127.0.0.1", port=6379, password="p" * 20,
                   min_replicas_to_write="1", min_replicas_max_lag="5", settings={"maxmemory-policy": "noeviction"})
    assert not re.search(r"^\s*(replicaof|slaveof)\b", text, re.M)
    assert "min-replicas-to-write 1" in text and "maxmemory-policy noeviction" in text
    assert 'requirepass "' + "p" * 20 + '"' in text


def test_sentinel_bootstrap_monitors_the_given_primary() -> None:
    text = _render("redis/sentinel-bootstrap.conf.j2", port=26379, redis_port=6379, bind="198.18.2.31 127.0.0.1",
                   announce_ip="198.18.2.31", sentinel_password="s" * 20, password="p" * 20, master="onlyoffice",
                   primary="198.18.1.31", quorum="2", parallel_syncs="1", down_after_ms="5000", failover_timeout_ms="20000")
    assert "sentinel monitor onlyoffice 198.18.1.31 6379 2" in text
    assert "sentinel down-after-milliseconds onlyoffice 5000" in text
    assert "sentinel myid" not in text  # Sentinel makes its own id


def test_haproxy_role_check_regex() -> None:
    """The rstring recommended for HAProxy (ooha/layers/redis.py docstring) on real INFO shapes."""
    pattern = re.compile(r"role:master[\s]+connected_slaves:[1-9]")
    primary = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n"
    lonely = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
    replica = "# Replication\r\nrole:slave\r\nmaster_host:198.18.1.31\r\n"
    assert pattern.search(primary) and not pattern.search(lonely) and not pattern.search(replica)
