"""Rebuilding a blank data host (issue 10): the pure decisions of the redis and rabbitmq layers.

Redis: when a host is blank, which primary it follows, which Sentinel entries are stale
(the old identity of a rebuilt host) and when the rolling SENTINEL RESET is done.  RabbitMQ:
what a node does in ``cluster_joined`` (noop, join a surviving node after it forgot the old
identity, or refuse with host, reason and fix).
"""

from __future__ import annotations

import inspect

import pytest

from ooha.facts.rabbitmq import RabbitmqPeerClusterStatus
from ooha.facts.redis import (
    MARK,
    SECTION,
    RedisBootstrapEvidence,
    SentinelTopology,
    parse_entries,
    parse_topology,
)
from ooha.layers import rabbitmq as rabbitmq_layer
from ooha.layers.rabbitmq import join_plan
from ooha.layers.redis import bootstrap_primary, is_blank, rediscovery_missing, reset_plan, stale_entries

A, B, C, NEW = "198.18.1.31", "198.18.2.31", "198.18.3.31", "198.18.3.99"
ADDRESSES = [A, B, C]
ID = {A: "a" * 40, B: "b" * 40, C: "c" * 40, "old": "d" * 40}


# --- Redis: blank and the primary a blank host follows ------------------------------------


def test_blank_only_without_any_evidence() -> None:
    fact = RedisBootstrapEvidence()
    assert is_blank(fact.process([]))
    assert not is_blank(fact.process(["marker"]))
    assert not is_blank(fact.process(["data:/var/lib/redis/dump.rdb"]))  # data but no marker: never again
    assert not is_blank(fact.process(["replicaof", "rewrite"]))
    command = fact.command(marker="/var/lib/redis/onlyoffice-ha.bootstrapped", conf="/etc/redis/redis.conf")
    assert "onlyoffice-ha.bootstrapped" in command and "dump.rdb" in command and "CONFIG REWRITE" in command
    with pytest.raises(ValueError):
        fact.command(marker="/tmp/x; rm -rf /", conf="/etc/redis/redis.conf")


def test_blank_host_follows_the_sentinels_majority_never_the_inventory_order() -> None:
    # C is blank; A is first in the inventory, but the Sentinels failed over to B.
    assert bootstrap_primary(C, A, {A: B, B: B}, {}) == (B, None)
    assert bootstrap_primary(C, A, {A: B, B: None}, {}) == (B, None)  # one Sentinel answers
    assert bootstrap_primary(A, A, {B: C, C: C}, {}) == (C, None)  # the first host rebuilt: a replica


def test_blank_host_still_named_primary_is_refused() -> None:
    primary, why = bootstrap_primary(C, A, {A: C, B: C}, {})
    assert primary is None and "still the primary for 2/2" in why and "fix: wait for Sentinel to fail over" in why


def test_split_sentinels_are_refused() -> None:
    primary, why = bootstrap_primary(C, A, {A: A, B: B}, {})
    assert primary is None and "do not agree" in why and "fix:" in why


def test_brand_new_group_takes_the_first_host() -> None:
    assert bootstrap_primary(A, A, {B: None, C: None}, {B: None, C: None}) == (A, None)
    # A fresh peer already bootstrapped as a replica of the first host is consistent with it.
    assert bootstrap_primary(C, A, {A: None, B: None}, {A: {"role": "master"}, B: {"role": "slave", "master_host": A}}) == (A, None)


def test_no_sentinel_but_peers_replicating_elsewhere_is_refused() -> None:
    primary, why = bootstrap_primary(A, A, {B: None, C: None},
                                     {B: {"role": "master"}, C: {"role": "slave", "master_host": B}})
    assert primary is None and B in why and "fix: start redis-sentinel" in why


# --- Redis: stale Sentinel entries and the rolling reset -------------------------------------


def view(myid: str | None, primary: str | None = A, sentinels=(), replicas=(), role="slave", run_id="r",
         master_host: str | None = A, flags: str = "master") -> dict:
    return {
        "myid": myid, "primary": primary, "master_flags": flags,
        "sentinels": [dict(ip=ip, port=port, runid=runid, flags="sentinel") for ip, port, runid in sentinels],
        "replicas": [dict(ip=ip, port="6379", runid=rid, flags=f) for ip, rid, f in replicas],
        "redis_run_id": run_id, "redis_role": role, "redis_master_host": None if role == "master" else master_host,
    }


def healthy() -> dict:
    """A primary, B and C replicas; every Sentinel knows the two others."""
    return {
        A: view(ID[A], sentinels=[(B, "26379", ID[B]), (C, "26379", ID[C])],
                replicas=[(B, "rb", "slave"), (C, "rc", "slave")], role="master", run_id="ra"),
        B: view(ID[B], sentinels=[(A, "26379", ID[A]), (C, "26379", ID[C])],
                replicas=[(B, "rb", "slave"), (C, "rc", "slave")], run_id="rb"),
        C: view(ID[C], sentinels=[(A, "26379", ID[A]), (B, "26379", ID[B])],
                replicas=[(B, "rb", "slave"), (C, "rc", "slave")], run_id="rc"),
    }


def test_normal_rerun_finds_nothing_stale_and_plans_nothing() -> None:
    assert stale_entries(healthy(), ADDRESSES) == {}
    assert reset_plan(healthy(), ADDRESSES) is None


def test_a_stopped_host_is_not_stale() -> None:
    topology = healthy()
    topology[C] = view(None, primary=None, role=None, run_id=None)  # host C stopped: nothing answers there
    topology[A]["replicas"][1]["flags"] = "slave,s_down,disconnected"
    assert stale_entries(topology, ADDRESSES) == {}
    assert reset_plan(topology, ADDRESSES) is None


def rebuilt_c(port_zero: bool) -> dict:
    """C rebuilt blank at the same address: a new Sentinel id; A and B still remember the old one."""
    topology = healthy()
    topology[C] = view(ID["old"].replace("d", "e"), sentinels=[], replicas=[(B, "rb", "slave"), (C, "rc2", "slave")],
                       run_id="rc2")
    for a in (A, B):
        old = [(C, "0" if port_zero else "26379", ID["old"])]
        if port_zero:  # after the new Sentinel's hello: the old entry's port is zeroed, the new one added
            old.append((C, "26379", topology[C]["myid"]))
        others = [(x, "26379", ID[x]) for x in (A, B) if x != a]
        topology[a]["sentinels"] = [dict(ip=ip, port=port, runid=runid, flags="sentinel")
                                    for ip, port, runid in [*others, *old]]
    return topology


@pytest.mark.parametrize("port_zero", [False, True])
def test_rebuilt_host_makes_the_others_entries_stale_and_plans_a_rolling_reset(port_zero: bool) -> None:
    topology = rebuilt_c(port_zero)
    stale = stale_entries(topology, ADDRESSES)
    assert sorted(stale) == [A, B]
    assert all(any(e.startswith(f"sentinel {C}:") for e in entries) for entries in stale.values())
    plan = reset_plan(topology, ADDRESSES)
    assert plan["order"] == [A, B] and plan["primary"] == A and plan["replicas"] == [B, C]
    assert plan["sentinels"] == {A: ID[A], B: ID[B], C: topology[C]["myid"]}
    # After A's reset, A is done once it lists the replicas and B and C's NEW Sentinel, nothing else.
    assert rediscovery_missing(topology[A], A, plan, ADDRESSES)
    done = view(ID[A], sentinels=[(B, "26379", ID[B]), (C, "26379", topology[C]["myid"])],
                replicas=[(B, "rb", "slave"), (C, "rc2", "slave")], role="master")
    assert rediscovery_missing(done, A, plan, ADDRESSES) == []
    partial = view(ID[A], sentinels=[(B, "26379", ID[B])], replicas=[(B, "rb", "slave")], role="master")
    missing = rediscovery_missing(partial, A, plan, ADDRESSES)
    assert any("replicas" in m for m in missing) and any("sentinels" in m for m in missing)


def test_new_address_leaves_ghosts_at_the_old_one() -> None:
    # C replaced by a host at NEW (inventory edited): A still remembers C's Sentinel and replica.
    addresses = [A, B, NEW]
    topology = healthy()
    topology[NEW] = view("f" * 40, sentinels=[], replicas=[], run_id="rn")
    del topology[C]
    stale = stale_entries(topology, addresses)
    assert f"sentinel {C}:26379 id {ID[C][:8]}" in stale[A] and f"replica {C}:6379" in stale[A]
    assert reset_plan(topology, addresses)["replicas"] == [B, NEW]


def test_replica_down_with_a_new_run_id_is_stale_but_not_one_merely_down() -> None:
    topology = healthy()
    topology[A]["replicas"][1] = dict(ip=C, port="6379", runid="rc-old", flags="slave,s_down")
    assert stale_entries(topology, ADDRESSES) == {A: [f"replica {C}:6379"]}
    topology[A]["replicas"][1]["runid"] = "rc"
    assert stale_entries(topology, ADDRESSES) == {}


def test_reset_is_refused_while_not_settled() -> None:
    topology = rebuilt_c(True)
    topology[B]["primary"] = B
    with pytest.raises(ValueError, match="do not all name one primary.*fix:"):
        reset_plan(topology, ADDRESSES)
    topology = rebuilt_c(True)
    topology[A]["master_flags"] = "master,failover_in_progress"
    with pytest.raises(ValueError, match="failover is in progress.*fix:"):
        reset_plan(topology, ADDRESSES)
    topology = rebuilt_c(True)
    topology[A]["redis_role"] = "slave"
    with pytest.raises(ValueError, match="does not answer as a master"):
        reset_plan(topology, ADDRESSES)


def test_sentinel_entries_and_topology_parse_redis_cli_flat_output() -> None:
    entries = parse_entries(["name", "bbb", "ip", B, "port", "26379", "runid", ID[B], "flags", "sentinel",
                             "name", "ccc", "ip", C, "port", "0", "runid", ID["old"], "flags", "sentinel"])
    assert [(e["ip"], e["port"]) for e in entries] == [(B, "26379"), (C, "0")]
    assert parse_entries(["ERR No such master with that name"]) == []
    assert parse_entries([]) == []
    lines = [f"{SECTION}myid", ID[A], f"{SECTION}primary", A, "6379", f"{SECTION}master", "name", "onlyoffice", "flags",
             "master", f"{SECTION}replicas", "name", f"{B}:6379", "ip", B, "port", "6379", "runid", "rb", "flags", "slave",
             f"{SECTION}sentinels", f"{SECTION}redis", "# Server", "run_id:ra", "# Replication", "role:master"]
    parsed = parse_topology(lines)
    assert parsed["myid"] == ID[A] and parsed["primary"] == A and parsed["master_flags"] == "master"
    assert parsed["replicas"][0]["ip"] == B and parsed["sentinels"] == []
    assert parsed["redis_run_id"] == "ra" and parsed["redis_role"] == "master" and parsed["redis_master_host"] is None
    dead = parse_topology([f"{SECTION}myid", "Could not connect to Redis at 198.18.3.31:26379: Connection refused"])
    assert dead["myid"] is None and dead["primary"] is None
    fact = SentinelTopology()
    out = fact.process([f"{MARK}{A}", *lines, f"{MARK}{C}", f"{SECTION}myid", "Could not connect"])
    assert set(out) == {A, C} and out[C]["myid"] is None
    assert "SENTINEL sentinels onlyoffice" in fact.command([A, C], "onlyoffice")


# --- RabbitMQ: what a node does in cluster_joined ---------------------------------------------

ME, SEED, OTHER = "rabbit@data3", "rabbit@data1", "rabbit@data2"
PEERS = [SEED, OTHER]


def status(members, running) -> dict:
    return {"members": sorted(members), "running_nodes": sorted(running), "partitions": {}, "alarms": []}


def test_clustered_node_is_left_alone_without_asking_its_peers() -> None:
    local = status([ME, SEED, OTHER], [ME, SEED, OTHER])
    assert join_plan(ME, SEED, PEERS, local, [], None)["action"] == "noop"


def test_node_clustered_elsewhere_is_refused() -> None:
    plan = join_plan(ME, SEED, PEERS, status([ME, "rabbit@stranger"], [ME]), [], None)
    assert plan["action"] == "refuse" and "none of them in the inventory" in plan["message"] and "fix:" in plan["message"]


def test_standalone_node_asks_its_peers_first() -> None:
    assert join_plan(ME, SEED, PEERS, status([ME], [ME]), [], None) == {"action": "ask"}


def test_blank_node_still_listed_is_forgotten_through_a_running_survivor_then_joins() -> None:
    survivors = status([ME, SEED, OTHER], [SEED, OTHER])
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], {SEED: survivors, OTHER: survivors})
    assert plan == {"action": "join", "target": SEED, "forget": True, "message": f"join {SEED} after it forgets the old {ME}"}
    # The seed's own host is down: the other survivor does it.
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], {SEED: None, OTHER: status([ME, SEED, OTHER], [OTHER])})
    assert plan["target"] == OTHER and plan["forget"] is True


def test_rebuilt_seed_joins_the_survivors_instead_of_starting_a_new_cluster() -> None:
    survivors = status([SEED, OTHER, ME], [OTHER, ME])
    plan = join_plan(SEED, SEED, [OTHER, ME], status([SEED], [SEED]), ["/"], {OTHER: survivors, ME: survivors})
    assert plan["action"] == "join" and plan["target"] == OTHER and plan["forget"] is True


def test_already_forgotten_node_joins_without_forgetting_again() -> None:
    survivors = status([SEED, OTHER], [SEED, OTHER])
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], {SEED: survivors, OTHER: survivors})
    assert plan["action"] == "join" and plan["target"] == SEED and plan["forget"] is False


def test_brand_new_cluster_seed_stays_and_others_join_it() -> None:
    fresh = {SEED: status([SEED], [SEED]), OTHER: status([OTHER], [OTHER])}
    assert join_plan(SEED, SEED, [OTHER, ME], status([SEED], [SEED]), ["/"],
                     {OTHER: fresh[OTHER], ME: status([ME], [ME])})["action"] == "noop"
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], fresh)
    assert plan["action"] == "join" and plan["target"] == SEED and plan["forget"] is False


def test_no_running_survivor_is_refused_with_host_reason_fix() -> None:
    stopped = status([ME, SEED, OTHER], [])
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], {SEED: None, OTHER: stopped})
    assert plan["action"] == "refuse"
    assert "no surviving node of the cluster is running" in plan["message"]
    assert f"{SEED}: no answer" in plan["message"] and f"{OTHER}: app stopped" in plan["message"]
    assert "fix: start rabbitmq-server" in plan["message"]
    # The seed rebuilt while every other node is down: refused too, never a second cluster.
    plan = join_plan(SEED, SEED, [OTHER, ME], status([SEED], [SEED]), ["/"], {OTHER: None, ME: None})
    assert plan["action"] == "refuse"


def test_standalone_node_with_data_is_never_reset() -> None:
    survivors = status([ME, SEED, OTHER], [SEED, OTHER])
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/", "onlyoffice"], {SEED: survivors, OTHER: survivors})
    assert plan["action"] == "refuse" and "holds vhosts onlyoffice" in plan["message"] and "fix:" in plan["message"]


def test_a_peer_that_sees_this_name_running_is_refused() -> None:
    survivors = status([ME, SEED, OTHER], [ME, SEED, OTHER])
    plan = join_plan(ME, SEED, PEERS, status([ME], [ME]), ["/"], {SEED: survivors, OTHER: survivors})
    assert plan["action"] == "refuse" and "still sees it running" in plan["message"]


def test_peer_status_fact_splits_each_node_answer() -> None:
    fact = RabbitmqPeerClusterStatus()
    command = fact.command(nodes=[SEED, OTHER])
    assert f"rabbitmqctl -n {SEED} cluster_status" in command and "timeout" in command
    with pytest.raises(ValueError):
        fact.command(nodes=["rabbit@x; reboot"])
    out = fact.process(["=== ooha node rabbit@data1", '{"running_nodes": ["rabbit@data1"], "disk_nodes": ["rabbit@data1"]}',
                        "=== ooha node rabbit@data2"])
    assert out[SEED]["running_nodes"] == [SEED] and out[OTHER] is None


def test_erlang_cookie_is_written_before_the_package_first_starts_the_node() -> None:
    deploy_source = inspect.getsource(rabbitmq_layer.rabbitmq)
    assert deploy_source.index("_node_files(") < deploy_source.index("_service(")
    files_source = inspect.getsource(rabbitmq_layer._node_files)
    assert "COOKIE_FILE" in files_source
    assert "apt.packages" not in files_source and "apt.packages" in inspect.getsource(rabbitmq_layer._service)


def test_a_hung_start_app_after_a_join_restarts_the_node_instead_of_waiting_for_ever(tmp_path) -> None:
    """The join's start_app is bounded: a hang (Erlang 25 ``global`` after a same-name rejoin) ends
    in a service restart and await_startup; a start_app that finishes restarts nothing."""
    import os
    import subprocess

    from ooha.layers.rabbitmq import start_app_command

    log = tmp_path / "calls"
    for name, body in (("rabbitmqctl", 'echo "rabbitmqctl $*" >> "$LOG"; [ "$1" = start_app ] && [ -n "$HANG" ] && sleep 30; exit 0'),
                       ("systemctl", 'echo "systemctl $*" >> "$LOG"')):
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "LOG": str(log)}

    ok = subprocess.run(["sh", "-c", start_app_command(timeout=1)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and log.read_text().splitlines() == ["rabbitmqctl start_app"]

    log.write_text("")
    hung = subprocess.run(["sh", "-c", start_app_command(timeout=1)], env={**env, "HANG": "1"},
                          capture_output=True, text=True, timeout=20)
    assert hung.returncode == 0, hung.stderr
    assert log.read_text().splitlines() == ["rabbitmqctl start_app", "systemctl restart rabbitmq-server.service",
                                            "rabbitmqctl await_startup --timeout 300"]
    assert "start_app did not finish in 1 s" in hung.stderr
