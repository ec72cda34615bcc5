"""Host patching's plan (issue 12): tier order, steps per role, skips, options, invariants.

The fleet is the reference topology (lab/client.py TARGETS): lb1/lb2, ds1..ds3, data1..data3,
each data host in postgres, etcd, redis and rabbitmq.
"""

from __future__ import annotations

import pytest

from ooha.rollout import hostplan as hp
from ooha.rollout.gates import EtcdMember, PatroniMember

DATA = frozenset({"postgres", "etcd", "redis", "rabbitmq"})
AUTO = hp.PatchOptions()


def fleet(**over: dict) -> list[hp.HostView]:
    """Every host with 3 pending updates; lb1 holds the VIP; data3 leader, data1 sync, data2 Redis primary."""
    views = {
        "lb1": hp.HostView("lb1", "az1", frozenset({"lb"}), holds_vip=True, pending=3),
        "lb2": hp.HostView("lb2", "az2", frozenset({"lb"}), holds_vip=False, pending=3),
        "ds1": hp.HostView("ds1", "az1", frozenset({"docs"}), pending=3, sessions=5),
        "ds2": hp.HostView("ds2", "az2", frozenset({"docs"}), pending=3, sessions=1),
        "ds3": hp.HostView("ds3", "az3", frozenset({"docs"}), pending=3, sessions=2),
        "data1": hp.HostView("data1", "az1", DATA, patroni_role="sync_standby", redis_primary=False, pending=3),
        "data2": hp.HostView("data2", "az2", DATA, patroni_role="replica", redis_primary=True, pending=3),
        "data3": hp.HostView("data3", "az3", DATA, patroni_role="leader", redis_primary=False, pending=3),
    }
    for name, changes in over.items():
        views[name] = hp.HostView(**{**views[name].__dict__, **changes})
    return list(views.values())


def names(plan: hp.HostPlan) -> list[str]:
    return plan.hosts()


def steps(wave: hp.HostWave, which: str = "pre") -> list[str]:
    return [s.name for s in getattr(wave, which)]


def test_tier_order_canary_lb_then_ds_then_data_replicas_first_then_vip_holder() -> None:
    plan = hp.plan_hosts(fleet(), AUTO)
    assert not plan.problems
    # lb2 (no VIP) canary; DS by sessions; data: replica-only? none here: sync (1) < Redis primary (2) < leader (4)
    assert names(plan) == ["lb2", "ds2", "ds3", "ds1", "data1", "data2", "data3", "lb1"]
    assert [w.tier for w in plan.waves] == [hp.Tier.LB_STANDBY] + [hp.Tier.DS] * 3 + [hp.Tier.DATA] * 3 + [hp.Tier.LB_VIP]
    assert plan.journal_waves()[0] == ["lb2"] and all(len(w) == 1 for w in plan.journal_waves())


def test_pure_replica_goes_before_the_sync_standby_and_leader_last_even_with_redis_primary() -> None:
    plan = hp.plan_hosts(fleet(data1={"patroni_role": "replica"}, data2={"patroni_role": "sync_standby", "redis_primary": False},
                               data3={"redis_primary": True}), AUTO)
    assert [n for n in names(plan) if n.startswith("data")] == ["data1", "data2", "data3"]
    leader = plan.waves[names(plan).index("data3")]
    pre = steps(leader)
    assert pre.index("sentinel_failover") < pre.index("patroni_nosync") < pre.index("patroni_switchover_to_sync_standby")


def test_data_host_steps_cover_every_role() -> None:
    plan = hp.plan_hosts(fleet(), AUTO)
    by = {w.host: w for w in plan.waves}
    assert steps(by["data3"]) == ["etcd_others_healthy", "patroni_others_streaming", "rabbitmq_sync_queues",
                                  "patroni_nosync", "patroni_switchover_to_sync_standby"]
    assert steps(by["data2"]) == ["etcd_others_healthy", "patroni_others_streaming", "rabbitmq_sync_queues", "sentinel_failover"]
    assert "patroni_nosync" in steps(by["data1"]) and "patroni_switchover_to_sync_standby" not in steps(by["data1"])
    post = steps(by["data3"], "post")
    assert post[:2] == ["host_up", "no_pending_left"]
    assert post.index("patroni_clear_nosync") < post.index("rejoined_replica_lag_under_bound")
    for check in ("etcd_member_healthy", "sentinel_sees_replica", "rabbitmq_running"):
        assert check in post
    assert "patroni_clear_nosync" not in steps(by["data2"], "post")
    checks_first = [s.kind for s in by["data3"].pre]
    assert checks_first[:2] == [hp.CHECK, hp.CHECK] and set(checks_first[2:]) == {hp.ACTION}


def test_ds_and_lb_steps() -> None:
    by = {w.host: w for w in hp.plan_hosts(fleet(), AUTO).waves}
    assert steps(by["ds1"]) == ["ds_drain"] and steps(by["ds1"], "post")[-2:] == ["ds_healthy", "ds_return"]
    assert steps(by["lb2"]) == [] and steps(by["lb2"], "post")[-1] == "lb_backup_state"
    assert steps(by["lb1"]) == ["vip_move"]
    assert by["ds1"].sequence() == ("ds_drain", "apt_upgrade", "reboot", "host_up", "no_pending_left", "ds_healthy",
                                    "ds_return")
    assert hp.DS_DRAIN_TRANSITIONS == (("active", "draining"), ("draining", "out"))


def test_colocated_host_takes_the_riskiest_tier_and_every_step() -> None:
    views = [hp.HostView("edge1", "az1", frozenset({"lb", "docs"}), holds_vip=True, pending=1),
             hp.HostView("edge2", "az2", frozenset({"lb", "docs"}), holds_vip=False, pending=1)]
    plan = hp.plan_hosts(views, AUTO)
    assert names(plan) == ["edge2", "edge1"]
    assert [w.tier for w in plan.waves] == [hp.Tier.DS, hp.Tier.LB_VIP]
    assert steps(plan.waves[1]) == ["vip_move", "ds_drain"]
    assert "lb_backup_state" in steps(plan.waves[1], "post") and "ds_return" in steps(plan.waves[1], "post")


def test_nothing_to_do_plans_nothing_and_says_why() -> None:
    quiet = {n: {"pending": 0} for n in ("lb1", "lb2", "ds1", "ds2", "ds3", "data1", "data2", "data3")}
    plan = hp.plan_hosts(fleet(**quiet), AUTO)
    assert plan.empty and not plan.problems
    assert plan.skipped["ds1"] == "no pending update, no reboot needed"
    only = hp.plan_hosts(fleet(**quiet), hp.PatchOptions(packages=("openssl",)))
    assert only.skipped["lb1"] == "no pending update of patch_packages, no reboot needed"


def test_reboot_only_hosts_and_patch_reboot_modes() -> None:
    views = fleet(ds1={"pending": 0, "reboot_needed": True}, ds2={"pending": 0})
    auto = hp.plan_hosts(views, AUTO)
    by = {w.host: w for w in auto.waves}
    assert "ds2" in auto.skipped and "ds1" in by
    assert by["ds1"].reboot == hp.REBOOT_YES and not by["ds1"].upgrade and "apt_upgrade" not in by["ds1"].sequence()
    assert by["ds3"].reboot == hp.REBOOT_DECIDE
    never = hp.plan_hosts(views, hp.PatchOptions(reboot="never"))
    assert never.skipped["ds1"].startswith("reboot needed but patch_reboot=never")
    assert all(w.reboot == hp.REBOOT_NO and "reboot" not in w.sequence() for w in never.waves)
    always = hp.plan_hosts(views, hp.PatchOptions(reboot="always"))
    assert "ds2" in always.skipped, "always does not add hosts with nothing to do"
    assert all(w.reboot == hp.REBOOT_YES for w in always.waves)


def test_unknown_observations_refuse_the_plan() -> None:
    plan = hp.plan_hosts(fleet(lb1={"holds_vip": None}, ds1={"pending": None}, data2={"redis_primary": None},
                               data1={"reboot_needed": None}), AUTO)
    assert plan.empty
    lines = [p.line() for p in plan.problems]
    assert any(line.startswith("lb1: host-plan: whether it holds the floating address is unknown") for line in lines)
    assert any(line.startswith("ds1: host-plan: pending updates unknown") for line in lines)
    assert any(line.startswith("data2: host-plan: whether its Redis") for line in lines)
    assert any(line.startswith("data1: host-plan: whether a reboot is needed is unknown") for line in lines)
    assert all("; fix: " in line for line in lines)


@pytest.mark.parametrize("over, where", [
    ({"lb1": {"holds_vip": False}}, "lb"),
    ({"lb2": {"holds_vip": True}}, "lb"),
    ({"data1": {"patroni_role": "leader"}}, "postgres"),
    ({"data3": {"patroni_role": "replica"}}, "postgres"),
    ({"data1": {"redis_primary": True}}, "redis"),
    ({"data1": {"patroni_role": "stopped"}}, "data1"),
    ({"ds1": {"groups": frozenset({"docs", "kafka"})}}, "ds1"),
])
def test_inconsistent_cluster_refuses(over: dict, where: str) -> None:
    plan = hp.plan_hosts(fleet(**over), AUTO)
    assert plan.empty and any(p.where == where for p in plan.problems), [p.line() for p in plan.problems]


def test_host_wave_from_a_fresh_look_follows_moved_roles() -> None:
    """The plan's order stands; a host's steps come from the look taken when its turn comes."""
    before = fleet()[6]  # data3, leader at plan time
    after_switch = hp.HostView(**{**before.__dict__, "patroni_role": "replica", "redis_primary": True})
    wave = hp.host_wave(after_switch, AUTO)
    assert "patroni_switchover_to_sync_standby" not in steps(wave) and "sentinel_failover" in steps(wave)


def test_duplicate_names_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        hp.plan_hosts(fleet() + [fleet()[0]], AUTO)


# --- options ---------------------------------------------------------------------------------


def test_patch_options_defaults_and_parsing() -> None:
    assert hp.patch_options({}) == hp.PatchOptions((), "auto")
    assert hp.patch_options({"patch_packages": "openssl, libssl3", "patch_reboot": "never"}) == \
        hp.PatchOptions(("openssl", "libssl3"), "never")
    assert hp.patch_options({"patch_packages": ["linux-image-*", "libc6:amd64"]}).packages == ("linux-image-*", "libc6:amd64")


@pytest.mark.parametrize("data, key", [
    ({"patch_reboot": "sometimes"}, "patch_reboot"),
    ({"patch_packages": "OpenSSL"}, "patch_packages"),
    ({"patch_packages": "openssl;rm -rf /"}, "patch_packages"),
    ({"patch_packages": 3}, "patch_packages"),
])
def test_patch_option_problems_name_key_and_fix(data: dict, key: str) -> None:
    problems = hp.patch_option_problems(data)
    assert len(problems) == 1 and problems[0].startswith(f"{key}: ") and "; fix: " in problems[0]
    with pytest.raises(ValueError):
        hp.patch_options(data)


def test_package_selected() -> None:
    assert hp.package_selected("anything", ())
    assert hp.package_selected("libssl3", ("libssl3",))
    assert hp.package_selected("libc6:i386", ("libc6",))
    assert not hp.package_selected("libc6:i386", ("libc6:amd64",))
    assert hp.package_selected("linux-image-6.1.0-18-amd64", ("linux-image-*",))
    assert not hp.package_selected("libssl3", ("openssl",))


def test_reboot_mode() -> None:
    view = hp.HostView("h", "az", frozenset({"docs"}), pending=1)
    assert hp.reboot_mode(view, "auto") == hp.REBOOT_DECIDE
    assert hp.reboot_mode(hp.HostView(**{**view.__dict__, "reboot_needed": True}), "auto") == hp.REBOOT_YES
    assert hp.reboot_mode(view, "always") == hp.REBOOT_YES and hp.reboot_mode(view, "never") == hp.REBOOT_NO
    with pytest.raises(ValueError):
        hp.reboot_mode(view, "maybe")


# --- invariants ------------------------------------------------------------------------------


def test_etcd_may_stop_never_two_members_down() -> None:
    healthy = (EtcdMember("data1", True), EtcdMember("data2", True), EtcdMember("data3", True))
    assert hp.etcd_may_stop("data1", healthy).ok
    one_down = (EtcdMember("data1", True), EtcdMember("data2", False), EtcdMember("data3", True))
    refused = hp.etcd_may_stop("data1", one_down)
    assert not refused.ok and "data2" in refused.problems[0].what and refused.problems[0].where == "data1"
    assert hp.etcd_may_stop("data2", one_down).ok, "the unhealthy member itself may be patched: still one down"
    assert not hp.etcd_may_stop("data1", None).ok
    assert not hp.etcd_may_stop("data1", healthy[:2]).ok, "two members: the other alone is no majority"
    assert not hp.etcd_may_stop("data1", healthy[:1]).ok


def test_switchover_candidate_is_a_streaming_sync_standby_under_the_lag_bound() -> None:
    members = (PatroniMember("data3", "leader", "running"), PatroniMember("data1", "sync_standby", "streaming", 100),
               PatroniMember("data2", "replica", "streaming", 0))
    assert hp.switchover_candidate(members, "data3", 1024) == "data1"
    assert hp.switchover_candidate(members, "data3", 10) is None
    lagging = (members[0], PatroniMember("data1", "sync_standby", "streaming", None), members[2])
    assert hp.switchover_candidate(lagging, "data3", 1024) is None
    assert hp.switchover_candidate(None, "data3", 1024) is None
