"""The PostgreSQL layer's pure parts: cluster verdicts, DCS diffs, timing rule, SCRAM verifiers,
and the Patroni/etcd fact parsers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from ooha.layers.postgres import (
    POSTGRES_DEFAULTS,
    dcs_differences,
    judge_cluster,
    scram_verifier,
    validate_timing,
    verifier_matches,
)
from ooha.facts.etcd import parse_etcd_cluster
from ooha.facts.patroni import parse_ds_objects, parse_patroni_cluster


def _raw(leader_role: str = "master", lag: int = 0, streaming=("data2", "data3"), sync=True, second_primary=False):
    members = [
        {"name": "data1", "role": "leader", "state": "running", "host": "198.18.1.31", "timeline": 3,
         "api_url": "http://198.18.1.31:8008/patroni"},
        {"name": "data2", "role": "sync_standby" if sync else "replica", "state": "running", "host": "198.18.2.31",
         "timeline": 3, "lag": lag, "api_url": "http://198.18.2.31:8008/patroni"},
        {"name": "data3", "role": "replica", "state": "running", "host": "198.18.3.31", "timeline": 3, "lag": 0,
         "api_url": "http://198.18.3.31:8008/patroni"},
    ]
    status = {
        "data1": {"role": leader_role, "timeline": 3,
                  "replication": [{"application_name": n, "state": "streaming"} for n in streaming]},
        "data2": {"role": "master" if second_primary else "replica", "timeline": 3},
        "data3": {"role": "replica", "timeline": 3},
    }
    return json.dumps({"cluster": {"members": members, "scope": "onlyoffice"},
                       "local": {"role": "replica", "state": "running", "patroni": {"name": "data2"}},
                       "status": status})


EXPECTED = ["data1", "data2", "data3"]


def test_healthy_cluster_reports_one_line_summary() -> None:
    result = judge_cluster(parse_patroni_cluster(_raw()), EXPECTED, 1024, True)
    assert result.ok, result
    assert result.detail == "leader data1, 2 replicas streaming, lag 0 B, timeline 3, sync data2"


def test_failures_are_named() -> None:
    assert "not streaming: data3" in judge_cluster(parse_patroni_cluster(_raw(streaming=("data2",))), EXPECTED, 1024, True).detail
    assert "lag above" in judge_cluster(parse_patroni_cluster(_raw(lag=5000)), EXPECTED, 1024, True).detail
    assert "no sync standby" in judge_cluster(parse_patroni_cluster(_raw(sync=False)), EXPECTED, 1024, True).detail
    assert judge_cluster(parse_patroni_cluster(_raw(sync=False)), EXPECTED, 1024, False).ok
    assert "more than one leader: data1, data2" in judge_cluster(
        parse_patroni_cluster(_raw(second_primary=True)), EXPECTED, 1024, True).detail
    assert "member(s) missing: data4" in judge_cluster(parse_patroni_cluster(_raw()), EXPECTED + ["data4"], 1024, True).detail
    assert not judge_cluster(None, EXPECTED, 1024, True).ok


def test_no_leader() -> None:
    raw = json.loads(_raw())
    for m in raw["cluster"]["members"]:
        m["role"] = "replica"
    result = judge_cluster(parse_patroni_cluster(json.dumps(raw)), EXPECTED, 1024, True)
    assert not result.ok and "no leader" in result.detail


def test_timing_rule_and_defaults() -> None:
    assert validate_timing(POSTGRES_DEFAULTS["patroni_dcs"]) is None
    assert validate_timing({"ttl": 10, "loop_wait": 2, "retry_timeout": 5}) == "loop_wait 2 + 2 * retry_timeout 5 > ttl 10"


def test_dcs_differences_only_patches_what_differs() -> None:
    current = {"ttl": 30, "loop_wait": 2, "synchronous_mode": True, "postgresql": {"use_pg_rewind": True,
               "parameters": {"wal_level": "replica", "hot_standby": "on"}}}
    wanted = {"ttl": 12, "loop_wait": 2, "synchronous_mode": True, "postgresql": {"use_pg_rewind": True,
              "parameters": {"wal_level": "replica", "hot_standby": "on", "max_wal_senders": 10}}}
    assert dcs_differences(current, wanted) == {"ttl": 12, "postgresql": {"parameters": {"max_wal_senders": 10}}}
    assert dcs_differences(wanted, wanted) == {}


def test_scram_verifier_matches_rfc7677_construction() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt, 4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert verifier.startswith(f"SCRAM-SHA-256$4096:{base64.b64encode(salt).decode()}$")
    assert verifier.endswith(":" + base64.b64encode(server_key).decode())
    assert verifier_matches(verifier, "pencil")
    assert not verifier_matches(verifier, "pencil2")
    assert not verifier_matches("md5abc", "pencil") and not verifier_matches(None, "pencil")


def test_ds_objects_parser() -> None:
    row = ["onlyoffice|true|SCRAM-SHA-256$4096:c2FsdA==$a:b|onlyoffice|onlyoffice|false"]
    assert parse_ds_objects(row) == {"role_exists": True, "can_login": True, "verifier": "SCRAM-SHA-256$4096:c2FsdA==$a:b",
                                     "db_exists": True, "db_owner": "onlyoffice", "in_recovery": False}
    assert parse_ds_objects(["|||||true"])["role_exists"] is False
    assert parse_ds_objects([]) is None


def test_etcd_parser() -> None:
    health = json.dumps([{"endpoint": "https://198.18.1.31:2379", "health": True, "took": "1ms"},
                         {"endpoint": "https://198.18.2.31:2379", "health": False, "error": "context deadline exceeded"}])
    members = json.dumps({"members": [{"ID": 255, "name": "data1", "peerURLs": ["https://198.18.1.31:2380"],
                                       "clientURLs": ["https://198.18.1.31:2379"]}]})
    view = parse_etcd_cluster([health, "", "----onlyoffice-ha-etcd-members----", members])
    assert view["members"][0] == {"name": "data1", "id": "ff", "peer_urls": ["https://198.18.1.31:2380"],
                                  "client_urls": ["https://198.18.1.31:2379"]}
    assert [e["healthy"] for e in view["endpoints"]] == [True, False]
    assert parse_etcd_cluster(["garbage"]) is None
