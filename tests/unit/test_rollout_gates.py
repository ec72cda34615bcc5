"""Rollout gates over plain observations: preflight, capacity, compat, health, soak."""

from __future__ import annotations

import pytest

from ooha.rollout import gates as g
from ooha.rollout.plan import NodeView
from ooha.rollout.release import ImageRef

NEW = ImageRef("reg/ds-ee", "9.3.1.2")
OLD = ImageRef("reg/ds-ee", "9.3.0.1")
NOW = 1_000_000.0
LIM = g.Limits(node_capacity_sessions=10, capacity_headroom=0.2)


def fleet(s1: int = 2, s2: int = 1, s3: int = 3) -> list[NodeView]:
    return [NodeView("ds1", "az1", OLD, s1), NodeView("ds2", "az2", OLD, s2), NodeView("ds3", "az3", OLD, s3)]


def cluster(**over) -> g.ClusterView:
    base = dict(
        patroni=(g.PatroniMember("data1", "leader", "running"), g.PatroniMember("data2", "sync_standby", "streaming", 1024),
                 g.PatroniMember("data3", "replica", "streaming", 0)),
        etcd=(g.EtcdMember("data1", True), g.EtcdMember("data2", True), g.EtcdMember("data3", True)),
        sentinels={"data1": "198.18.1.21:6379", "data2": "198.18.1.21:6379", "data3": "198.18.1.21:6379"},
        rabbitmq=g.RabbitView(("rabbit@data1", "rabbit@data2", "rabbit@data3"), ("rabbit@data1", "rabbit@data2", "rabbit@data3")),
        newest_backup_end=NOW - 3600,
    )
    base.update(over)
    return g.ClusterView(**base)


def test_healthy_cluster_passes_every_preflight_gate() -> None:
    results = g.preflight(fleet(), cluster(), [["ds2"], ["ds1"], ["ds3"]], LIM, NOW)
    assert all(r.ok for r in results), g.problems_of(results)
    assert {r.gate for r in results} >= {"ds-nodes", "patroni", "etcd", "sentinel", "rabbitmq", "backup", "capacity"}


def test_each_refusal_names_where_what_and_fix() -> None:
    sick = [NodeView("ds1", "az1", OLD, None, healthy=False, lb_state="draining")] + fleet()[1:]
    bad = cluster(
        patroni=(g.PatroniMember("data1", "leader", "running"), g.PatroniMember("data2", "sync_standby", "streaming", 10**9)),
        etcd=(g.EtcdMember("data1", True), g.EtcdMember("data2", False), g.EtcdMember("data3", False)),
        sentinels={"data1": "a:6379", "data2": "b:6379", "data3": None},
        rabbitmq=g.RabbitView(("rabbit@data1", "rabbit@data2"), ("rabbit@data1",), ("rabbit@data2",), ("memory",)),
        newest_backup_end=NOW - 30 * 3600,
    )
    lines = g.problems_of(g.preflight(sick, bad, [["ds2"]], LIM, NOW))
    assert all("; fix: " in line for line in lines)
    text = "\n".join(lines)
    for expected in ("ds1: preflight: Document Server not healthy", "ds1: preflight: open editing sessions unknown",
                     "ds1: preflight: node is 'draining'", "data2: preflight: sync standby lag", "etcd: preflight: no quorum: 1/3",
                     "Sentinels disagree", "data3: preflight: Sentinel names no primary", "not running: rabbit@data2",
                     "partitions: rabbit@data2", "alarms: memory", "newest backup is 30.0 h old"):
        assert expected in text, expected


def test_unobservable_is_a_refusal_never_a_pass() -> None:
    blind = g.ClusterView(None, None, None, None, None)
    results = g.preflight(fleet(), blind, [], LIM, NOW)
    failed = {r.gate for r in results if not r.ok}
    assert failed == {"patroni", "etcd", "sentinel", "rabbitmq", "backup"}


def test_patroni_needs_one_leader_and_a_streaming_sync_standby() -> None:
    no_sync = (g.PatroniMember("data1", "leader", "running"), g.PatroniMember("data2", "replica", "streaming", 0))
    assert "no synchronous standby" in g.patroni_gate(no_sync, 100).lines()[0]
    two = (g.PatroniMember("a", "leader", "running"), g.PatroniMember("b", "leader", "running"),
           g.PatroniMember("c", "sync_standby", "streaming", 0))
    assert "2 running leader(s)" in g.patroni_gate(two, 100).lines()[0]


def test_etcd_one_member_down_of_three_passes() -> None:
    assert g.etcd_gate((g.EtcdMember("a", True), g.EtcdMember("b", True), g.EtcdMember("c", False))).ok


def test_in_flight_nodes_are_excused_on_resume() -> None:
    nodes = [NodeView("ds1", "az1", None, None, healthy=False, lb_state="out")] + fleet()[1:]
    assert not g.ds_nodes_gate(nodes).ok
    assert g.ds_nodes_gate(nodes, frozenset({"ds1"})).ok


def test_capacity_counts_remaining_active_nodes_with_headroom() -> None:
    # 2 staying nodes x 10 x 0.8 = 16
    assert g.capacity_gate(fleet(5, 5, 6), ("ds1",), 10, 0.2).ok
    refused = g.capacity_gate(fleet(6, 5, 6), ("ds1",), 10, 0.2)
    assert not refused.ok and "17 session(s) on 2 remaining node(s) exceed 16" in refused.lines()[0]
    draining = [NodeView("ds1", "az1", OLD, 0), NodeView("ds2", "az2", OLD, 0, lb_state="draining")]
    assert "no other active healthy node" in g.capacity_gate(draining, ("ds1",), 10, 0.2).lines()[0]
    with pytest.raises(ValueError):
        g.capacity_gate(fleet(), ("ds1",), 10, 1.0)


def test_compat_gate() -> None:
    good = g.CompatObservation("true", "9.3.1.2.5", True, ("doc_changes", "task_result"), True)
    assert g.compat_gate(good, NEW, "ds2").ok
    bad = g.CompatObservation("false", None, False, ("doc_changes",), False, ("container ooha-compat",))
    lines = "\n".join(g.compat_gate(bad, NEW, "ds2").lines())
    for expected in ("'false'", "version command answered None", "no editing session", "missing task_result",
                     "JWT secret not taken", "ds2: compat: scratch objects left: container ooha-compat"):
        assert expected in lines


def test_health_gate() -> None:
    assert g.health_gate("ds2", NEW, "true", "9.3.1.2.1", NEW).ok
    lines = "\n".join(g.health_gate("ds2", OLD, "false", "9.3.0.1", NEW).lines())
    assert "runs reg/ds-ee:9.3.0.1, want reg/ds-ee:9.3.1.2" in lines and "'false'" in lines


def test_soak_gate_checks_each_lb_and_the_synthetic_session() -> None:
    lbs = ("lb1", "lb2")
    ok = [g.SoakSample(NOW + i, "true", {"lb1": 100, "lb2": 0}, {"lb1": 0}) for i in range(3)]
    assert g.soak_gate("ds2", ok, True, LIM, lbs).ok
    errors = ok[:2] + [g.SoakSample(NOW + 3, "true", {"lb1": 100, "lb2": 10}, {"lb2": 1})]
    lines = "\n".join(g.soak_gate("ds2", errors, True, LIM, lbs).lines())
    assert "lb2: soak: 1/10 upstream errors" in lines and "lb1" not in lines
    sick = ok[:2] + [g.SoakSample(NOW + 3, "false")]
    lines = "\n".join(g.soak_gate("ds2", sick, None, LIM, lbs).lines())
    assert "not true in 1/3" in lines and "synthetic editing session not run" in lines
    assert "1 sample(s), want 3" in g.soak_gate("ds2", ok[:1], True, LIM, lbs).lines()[0]
