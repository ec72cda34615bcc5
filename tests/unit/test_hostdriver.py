"""The host-patching driver (ooha/rollout/live/hostdriver.py) against fakes of the cluster store and
of hoststeps (observe_hosts / host_gates / run_step / undo, the contract in the module docstring).

What is proven here without a lab: the order the plan gives is the order steps run, one host at a
time; the journal records each host's step sequence and current index after every step (a resume
re-runs the current step and nothing before it); a failed step undoes that host's moves, leaves the
journal FAILED (open) with host, step and reason, touches no later host, and a rerun resumes there;
a second run plans nothing; a refused preflight or an open DS rollout changes nothing; the
summary and the progress lines read as documented.
"""

from __future__ import annotations

from ooha.rollout.lock import LockLost

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ooha.rollout import hostplan
from ooha.rollout.gates import ClusterView, EtcdMember, GateResult, PatroniMember, Problem, RabbitView
from ooha.rollout.hostplan import HostView, PatchOptions
from ooha.rollout.journal import HOST_PATCH, Journal, Phase, Status, decide_start, new_journal
from ooha.rollout.live import hostdriver
from ooha.rollout.live.driver import Context
from ooha.rollout.lock import LockDecision
from ooha.rollout.options import RolloutOptions
from ooha.rollout.plan import NodeView
from ooha.rollout.release import ImageRef

DATA_GROUPS = frozenset({"postgres", "etcd", "redis", "rabbitmq"})


# --- fakes ------------------------------------------------------------------------------------


@dataclass
class FakeHost:
    name: str
    groups: tuple[str, ...]
    data: dict[str, Any]


class FakeInventory:
    def __init__(self, hosts: list[FakeHost]) -> None:
        self.hosts = hosts
        self.groups = {g: [h for h in hosts if g in h.groups] for h in hosts for g in h.groups}

    def __iter__(self):
        return iter(self.hosts)

    def iter_activated_hosts(self):
        return iter(self.hosts)

    def get_group(self, name: str) -> list[FakeHost]:
        return self.groups[name]


def inventory() -> FakeInventory:
    def host(name: str, az: str, *groups: str) -> FakeHost:
        return FakeHost(name, groups, {"az": az})
    return FakeInventory([host("lb1", "az1", "lb"), host("lb2", "az2", "lb"), host("ds1", "az1", "docs"),
                          host("ds3", "az3", "docs"), host("data1", "az1", *sorted(DATA_GROUPS)),
                          host("data3", "az3", *sorted(DATA_GROUPS))])


def views(pending: dict[str, int]) -> list[HostView]:
    """lb1 holds the VIP, data1 is Patroni leader and Redis primary, data3 the sync standby."""
    p = lambda name: pending.get(name, 0)  # noqa: E731
    return [HostView("lb1", "az1", frozenset({"lb"}), holds_vip=True, pending=p("lb1")),
            HostView("lb2", "az2", frozenset({"lb"}), holds_vip=False, pending=p("lb2")),
            HostView("ds1", "az1", frozenset({"docs"}), pending=p("ds1"), sessions=0),
            HostView("ds3", "az3", frozenset({"docs"}), pending=p("ds3"), sessions=2),
            HostView("data1", "az1", DATA_GROUPS, patroni_role="leader", redis_primary=True, pending=p("data1")),
            HostView("data3", "az3", DATA_GROUPS, patroni_role="sync_standby", pending=p("data3"))]


@dataclass
class StepEnv:
    inventory: Any
    options: Any
    patch: Any
    say: Any
    wait: Any
    memo: dict


@dataclass
class FakeSteps:
    """hoststeps as the contract says; ``pending`` empties as hosts get patched (a rerun plans nothing)."""

    pending: dict[str, int]
    fail: tuple[str, str] | None = None  # (host, step) that fails once
    gate_problems: list[Problem] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    undone: list[tuple[str, list[str]]] = field(default_factory=list)
    observed: int = 0
    interrupt_at: tuple[str, str] | None = None
    ctx: Any = None
    lose_lock_at: tuple[str, str] | None = None
    driver: Any = None

    looked: list[list[str]] = field(default_factory=list)
    unreadable: str | None = None

    def observe_hosts(self, inv: Any, patch: PatchOptions):
        self.observed += 1
        names = [h.name for h in inv.iter_activated_hosts()]
        self.looked.append(names)
        found = [v for v in views(self.pending) if v.name in names]
        if self.observed > 1 and self.unreadable:  # apt on that host stopped answering after the plan
            found = [replace(v, pending=None) if v.name == self.unreadable else v for v in found]
        return found, {}

    def host_gates(self, inv: Any, facts: dict, planned: list[str]) -> list[GateResult]:
        return [GateResult("host-disk", tuple(self.gate_problems), "enough")]

    def run_step(self, env: StepEnv, host: str, step: str) -> tuple[bool, str]:
        self.calls.append((host, step))
        if self.interrupt_at == (host, step):
            self.ctx.interrupts += 1
        if self.lose_lock_at == (host, step):  # the heartbeat found another controller's lock meanwhile
            self.driver.lost = LockLost("the lock was broken by rollout r-other")
            return False, "interrupted by the lost lock"
        if self.fail == (host, step):
            self.fail = None
            env.memo["tried"] = True
            return False, f"{host} did not come back from the reboot in 300 s; fix: start it"
        if step == "ds_drain":
            env.wait(0.01)  # the driver's interruptible, heartbeating sleep
        if step == "apt_upgrade":
            env.memo["packages"] = ["ooha-lab-canary 1.1"]
            self.pending[host] = 0
        if step == "reboot":
            env.memo["rebooted"] = True
        env.say(f"{step} detail")
        return True, f"{step} ok"

    def undo(self, env: StepEnv, host: str, done: list[str]) -> list[str]:
        self.undone.append((host, list(done)))
        return [f"{host}: nothing to undo"]

    def steps(self) -> hostdriver.Steps:
        return hostdriver.Steps(self.observe_hosts, self.host_gates, self.run_step, self.undo, StepEnv)


class FakeStore:
    """The cluster store: one lock row, journals by id (what Store keeps in ooha_ops)."""

    def __init__(self) -> None:
        self.journals: dict[str, dict] = {}
        self.lock: str | None = None
        self.saves: list[dict] = []
        self.acquired = 0

    def ready(self) -> str | None:
        return None

    def open_journal(self) -> Journal | None:
        open_ = [j for j in self.journals.values() if j["status"] in ("running", "interrupted", "failed")]
        return Journal.from_dict(open_[-1]) if open_ else None

    def acquire(self, record: Any, journal: Journal, now: float, break_id: str | None = None) -> LockDecision:
        if self.lock is not None:
            return LockDecision("refuse", f"rollout {self.lock} holds the lock: alive")
        self.lock = journal.rollout_id
        self.acquired += 1
        self.journals[journal.rollout_id] = journal.to_dict()
        return LockDecision("acquire")

    def save(self, journal: Journal, token: str, now: float) -> None:
        self.journals[journal.rollout_id] = json.loads(journal.to_json())
        self.saves.append(self.journals[journal.rollout_id])

    def heartbeat(self, token: str, phase: str, now: float) -> None:
        pass

    def release(self, token: str) -> None:
        self.lock = None


def healthy_cluster() -> ClusterView:
    return ClusterView(patroni=(PatroniMember("data1", "leader", "running", 0), PatroniMember("data3", "sync_standby", "streaming", 0)),
                       etcd=(EtcdMember("data1", True), EtcdMember("data3", True), EtcdMember("data2", True)),
                       sentinels={"data1": "198.18.0.1:6379", "data3": "198.18.0.1:6379"},
                       rabbitmq=RabbitView(("a", "b"), ("a", "b")), newest_backup_end=time.time())


@pytest.fixture
def world(monkeypatch, tmp_path):
    """(run, store, written): ``run(steps, patch)`` runs one driver; ``written`` the patch-last.json files."""
    from ooha.layers import loadbalancer
    from ooha.rollout.live import observe

    monkeypatch.chdir(tmp_path)  # the controller copy under .ooha/rollouts
    monkeypatch.setattr(loadbalancer, "node_state_settings", lambda target: ("ooha:node_state", 100))
    monkeypatch.setattr(observe, "cluster_view", lambda inv: healthy_cluster())
    written: list[tuple[str, dict]] = []

    def fake_run(host: Any, command: str, stdin: str | None = None, **kw: Any) -> Any:
        assert hostdriver.PATCH_LAST_FILE in command and "chmod 644" in command
        written.append((host.name, json.loads(stdin or "{}")))
        return SimpleNamespace(ok=True, why=lambda: "")

    monkeypatch.setattr(hostdriver.remote, "run", fake_run)
    store = FakeStore()

    def run(steps: FakeSteps, patch: PatchOptions = PatchOptions(("ooha-lab-canary",), "auto")) -> tuple[int, list[str]]:
        lines: list[str] = []
        ctx = Context(HOST_PATCH, None, RolloutOptions(), ["pyinfra", "inv.py", "deploys/patch_hosts.py"], lines.append)
        steps.ctx = ctx
        driver = hostdriver.HostDriver(hostdriver.Fleet.of(inventory()), ctx, patch, steps.steps())
        driver.store = store
        steps.driver = driver
        driver.nodes = lambda: [NodeView("ds1", "az1", None, 0), NodeView("ds3", "az3", None, 2)]
        status = hostdriver.run_interruptibly(driver, ctx)
        return status, lines

    return run, store, written


PENDING = {"lb2": 1, "ds3": 1, "data3": 1}


# --- the runs ---------------------------------------------------------------------------------


def test_a_run_patches_the_planned_hosts_in_order_one_step_at_a_time(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING))
    status, lines = run(steps)
    assert status == 0, "\n".join(lines)
    hosts_in_order = [h for h, _ in steps.calls]
    assert hosts_in_order == sorted(hosts_in_order, key=["lb2", "ds3", "data3"].index)  # never back to an earlier host
    plan = hostplan.plan_hosts(views(PENDING), PatchOptions(("ooha-lab-canary",)))
    assert steps.calls == [(w.host, s) for w in plan.waves for s in w.sequence()]
    assert ("data3", "patroni_switchover_to_sync_standby") not in steps.calls  # a sync standby, not the leader
    assert ("data3", "patroni_nosync") in steps.calls
    journal = Journal.from_dict(store.journals[next(iter(store.journals))])
    assert journal.kind == HOST_PATCH and journal.status is Status.DONE and store.lock is None
    assert journal.waves == [["lb2"], ["ds3"], ["data3"]]
    state = journal.flags["hosts"]["data3"]
    assert state["index"] == len(state["sequence"]) and state["outcome"] == "done" and state["memo"]["rebooted"] is True
    # the position was saved after every step: some save had data3 at each index
    seen = {s["flags"]["hosts"]["data3"]["index"] for s in store.saves if "data3" in s["flags"].get("hosts", {})}
    assert set(range(len(state["sequence"]) + 1)) <= seen
    assert [h for h, _ in written] == ["lb2", "ds3", "data3"]
    assert written[0][1]["outcome"] == "done" and written[0][1]["packages"] == ["ooha-lab-canary 1.1"]
    assert written[0][1]["rebooted"] is True and written[0][1]["finished"].endswith("Z")
    assert any(l.endswith("host 3/3 data3 (az3) step patroni_nosync: patroni_nosync detail") and l.startswith("[")
               for l in lines), "\n".join(lines)
    assert any(l.startswith(f"host patching {journal.rollout_id} done in ") for l in lines)
    assert "patched 3 host(s): lb2, ds3, data3; rebooted 3: lb2, ds3, data3" in lines
    assert any(l.startswith("skipped: lb1 (no pending update of patch_packages") and "data1" in l for l in lines)
    assert (store.acquired, len(list(Path(".ooha/rollouts").glob("*.json")))) == (1, 1)
    # one look at every host for the plan, then one fresh look per host at its turn (that host only)
    assert steps.looked == [["lb1", "lb2", "ds1", "ds3", "data1", "data3"], ["ds3"], ["data3"]]


def test_a_second_run_plans_nothing_and_takes_no_lock(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING))
    assert run(steps)[0] == 0
    before = (store.acquired, len(written), len(steps.calls))
    status, lines = run(steps)
    assert status == 0 and (store.acquired, len(written), len(steps.calls)) == before
    assert any("nothing to patch: every host skipped (lb1: no pending update" in l for l in lines), lines


def test_a_failed_step_stops_there_undoes_that_host_and_a_rerun_resumes_at_it(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), fail=("ds3", "reboot"))
    status, lines = run(steps)
    assert status == 1
    assert not any(h == "data3" for h, _ in steps.calls)  # nothing after the failed host is touched
    assert steps.calls[-1] == ("ds3", "reboot")
    assert steps.undone == [("ds3", ["ds_drain", "apt_upgrade", "reboot"])]  # the failed step may have half-moved
    journal = store.open_journal()
    assert journal is not None and journal.status is Status.FAILED and store.lock is None
    assert journal.reason.startswith("ds3 step reboot failed: ds3 did not come back")
    assert journal.current_nodes() == ("ds3",) and journal.flags["hosts"]["ds3"]["index"] == 2
    assert written[-1] == ("ds3", written[-1][1]) and written[-1][1]["outcome"] == "failed: reboot"
    assert any(l.startswith("next: fix the cause, then rerun the same command: it resumes at ds3 step reboot") for l in lines)
    # a DS rollout is refused while the host patching is open
    decision = decide_start(journal, "patch", ImageRef("onlyoffice/documentserver", "9.3.1.2"))
    assert decision.action == "refuse" and "deploys/patch_hosts.py" in decision.message and "ds3 step reboot" in decision.message
    # the rerun: the same journal, the reboot re-run first, nothing of lb2 again
    calls_before = len(steps.calls)
    status, lines = run(steps)
    assert status == 0, "\n".join(lines)
    resumed = steps.calls[calls_before:]
    assert resumed[0] == ("ds3", "reboot") and not any(h == "lb2" for h, _ in resumed)
    assert ("ds3", "ds_return") in resumed and resumed[-1][0] == "data3"
    assert len(store.journals) == 1 and store.open_journal() is None
    assert "patched 3 host(s): lb2, ds3, data3; rebooted 3: lb2, ds3, data3" in lines


def test_a_lost_lock_stops_the_step_with_no_undo_on_hosts_another_controller_owns(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), lose_lock_at=("ds3", "ds_drain"))
    status, lines = run(steps)
    assert status == 1
    assert steps.undone == [] and steps.calls[-1] == ("ds3", "ds_drain")
    assert not any(h == "ds3" for h, _ in written)
    assert any("the lock is not ours any more" in line for line in lines), lines


def test_a_refused_preflight_changes_nothing(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), gate_problems=[Problem("data3", "host-disk", "/var has 10 MiB free, the upgrade needs 50 MiB",
                                                             "free space on /var")])
    status, lines = run(steps)
    assert status == 1 and not steps.calls and store.acquired == 0 and not written
    assert "    data3: host-disk: /var has 10 MiB free, the upgrade needs 50 MiB; fix: free space on /var" in lines
    assert lines[-1].startswith("refused: 1 problem(s) before any change; nothing was changed")


def test_an_open_ds_rollout_refuses_host_patching(world) -> None:
    run, store, written = world
    target = ImageRef("onlyoffice/documentserver", "9.3.1.2")
    other = new_journal("r1-ds", "patch", target, [["ds1"]], {"ds1": target}, False, "op@c", time.time())
    other.status, other.phase, other.wave = Status.INTERRUPTED, Phase.DRAIN, 0
    store.journals[other.rollout_id] = other.to_dict()
    steps = FakeSteps(dict(PENDING))
    status, lines = run(steps)
    assert status == 1 and steps.observed == 0 and not steps.calls and store.acquired == 0
    assert lines == ["refused: rollout r1-ds (patch) is unfinished (interrupted) at ds1 drain; host patching never runs "
                     "beside it; fix: finish it first with deploys/patch.py --data ds_version=9.3.1.2 (or deploys/rollback.py)"]


def test_a_held_lock_refuses_before_any_step(world) -> None:
    run, store, written = world
    store.lock = "r-other"
    steps = FakeSteps(dict(PENDING))
    status, lines = run(steps)
    assert status == 1 and not steps.calls and lines[-1].endswith("refused: rollout r-other holds the lock: alive")


def test_ctrl_c_finishes_the_step_then_stops_and_the_rerun_continues_after_it(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), interrupt_at=("ds3", "ds_drain"))
    status, lines = run(steps)
    assert status == 130 and steps.calls[-1] == ("ds3", "ds_drain")
    journal = store.open_journal()
    assert journal is not None and journal.status is Status.INTERRUPTED and journal.flags["hosts"]["ds3"]["index"] == 1
    calls_before = len(steps.calls)
    steps.interrupt_at = None
    assert run(steps)[0] == 0
    assert steps.calls[calls_before] == ("ds3", "apt_upgrade")


def test_a_fresh_look_skips_a_host_patched_meanwhile(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING))
    original = steps.run_step

    def patch_data3_by_hand(env: Any, host: str, step: str) -> tuple[bool, str]:
        if host == "ds3":
            steps.pending["data3"] = 0  # someone patched data3 while ds3 had its turn
        return original(env, host, step)

    steps.run_step = patch_data3_by_hand  # type: ignore[method-assign]
    status, lines = run(steps)
    assert status == 0 and not any(h == "data3" for h, _ in steps.calls)
    assert any("data3 (" in l and "skipped" in l for l in lines if l.startswith("skipped:")), lines


def test_a_fresh_look_that_cannot_see_the_host_stops_before_it_changes(world) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), unreadable="data3")
    status, lines = run(steps)
    assert status == 1 and not any(h == "data3" for h, _ in steps.calls) and ("ds3", "ds_return") in steps.calls
    journal = store.open_journal()
    assert journal is not None and journal.status is Status.FAILED
    assert journal.reason.startswith("data3 step fresh-look failed: data3: host-plan: pending updates unknown")
    assert not any(h == "data3" for h, _ in written) and not steps.undone


def test_a_host_removed_from_the_inventory_while_the_run_was_open_is_skipped_on_resume(world, monkeypatch) -> None:
    run, store, written = world
    steps = FakeSteps(dict(PENDING), fail=("ds3", "reboot"))
    assert run(steps)[0] == 1
    full = inventory

    def without_ds3() -> FakeInventory:
        return FakeInventory([h for h in full().hosts if h.name != "ds3"])

    monkeypatch.setitem(globals(), "inventory", without_ds3)  # what the fixture builds the next driver from
    calls_before = len(steps.calls)
    status, lines = run(steps)
    assert status == 0 and all(h == "data3" for h, _ in steps.calls[calls_before:]), steps.calls[calls_before:]
    assert any("ds3 (" in l and "skipped: not in the inventory any more" in l for l in lines), lines


def test_a_turn_whose_first_step_failed_resumes_without_the_cluster_gates_refusing_it(world) -> None:
    """ds_drain failed half-way (the node left draining): on resume the ds-nodes gate would refuse
    that node, but the turn has begun and owes its own steps (ds_return) first."""
    run, store, written = world
    steps = FakeSteps(dict(PENDING), fail=("ds3", "ds_drain"))
    assert run(steps)[0] == 1
    assert store.open_journal().flags["hosts"]["ds3"]["index"] == 0
    steps.gate_problems = [Problem("ds3", "preflight", "node is 'draining' in the load balancers outside a rollout", "x")]
    calls_before = len(steps.calls)
    status, lines = run(steps)
    assert status == 0, "\n".join(lines)
    assert steps.calls[calls_before] == ("ds3", "ds_drain") and ("ds3", "ds_return") in steps.calls[calls_before:]
    assert any("mid-turn: the preflight's findings are shown, not enforced" in l for l in lines)


# --- pure parts -------------------------------------------------------------------------------

LEADER = ["etcd_others_healthy", "patroni_others_streaming", "rabbitmq_sync_queues", "sentinel_failover", "patroni_nosync",
          "patroni_switchover_to_sync_standby", "apt_upgrade", "reboot", "host_up", "no_pending_left", "etcd_member_healthy",
          "patroni_clear_nosync", "rejoined_replica_lag_under_bound", "sentinel_sees_replica", "rabbitmq_running"]


def test_resume_with_an_unchanged_wave_reruns_the_current_step() -> None:
    assert hostdriver.resume_sequence(LEADER, 6, LEADER) == (LEADER, 6)


def test_resume_after_the_switchover_keeps_the_undo_of_what_this_run_did() -> None:
    """Interrupted in apt_upgrade after the switchover: the fresh look sees a replica with nothing
    pending (no switchover, no nosync, no apt_upgrade), yet the tag must still be cleared."""
    replica = hostplan.host_wave(HostView("data1", "az1", DATA_GROUPS, patroni_role="replica", pending=0, reboot_needed=True),
                                 PatchOptions()).sequence()
    sequence, index = hostdriver.resume_sequence(LEADER, 6, replica)
    assert sequence == LEADER and sequence[index] == "apt_upgrade"


def test_resume_adds_a_new_pre_step_only_before_the_host_went_down() -> None:
    old = ["etcd_others_healthy", "patroni_others_streaming", "apt_upgrade", "reboot", "host_up"]
    new = ["etcd_others_healthy", "patroni_others_streaming", "sentinel_failover", "apt_upgrade", "reboot", "host_up",
           "sentinel_sees_replica"]
    # still before the upgrade: the Redis primary moved here meanwhile -> failover first, after the current check
    assert hostdriver.resume_sequence(old, 1, new) == (
        ["etcd_others_healthy", "patroni_others_streaming", "sentinel_failover", "apt_upgrade", "reboot", "host_up",
         "sentinel_sees_replica"], 1)
    # after the reboot: moving the primary away protects nothing; the new post check is kept, after the current step
    sequence, index = hostdriver.resume_sequence(old, 4, new)
    assert sequence == ["etcd_others_healthy", "patroni_others_streaming", "apt_upgrade", "reboot", "host_up",
                        "sentinel_sees_replica"] and index == 4


def test_the_summary_names_patched_rebooted_and_skipped_hosts() -> None:
    target = ImageRef("os-packages", "all")
    journal = new_journal("r20261205-1-ab", HOST_PATCH, target, [["lb2"], ["ds3"]], {"lb2": target, "ds3": target}, False,
                          "op@c", 0.0)
    journal.flags["skipped"] = {"lb1": "no pending update, no reboot needed"}
    journal.flags["hosts"] = {"lb2": {"outcome": "done", "memo": {"rebooted": False}, "started": 10.0, "ended": 70.0},
                              "ds3": {"outcome": "done", "memo": {"rebooted": True}, "started": 70.0, "ended": 200.0}}
    journal.status = Status.DONE
    assert hostdriver.summary_lines(journal, 205) == [
        "host patching r20261205-1-ab done in 3m25s",
        "patched 2 host(s): lb2, ds3; rebooted 1: ds3",
        "skipped: lb1 (no pending update, no reboot needed)",
        "host times: lb2 1m00s, ds3 2m10s",
    ]


def test_progress_line_format() -> None:
    target = ImageRef("os-packages", "all")
    journal = new_journal("r", HOST_PATCH, target, [["lb2"], ["data2"], ["x"]], {h: target for h in ("lb2", "data2", "x")},
                          False, "", 0.0)
    journal.wave = 1
    assert hostdriver.host_progress(journal, 0.0, 134.0, {"data2": "az2"}, "patroni_switchover_to_sync_standby", "done") == \
        "[  2m14s] host 2/3 data2 (az2) step patroni_switchover_to_sync_standby: done"
    assert hostdriver.host_progress(None, 0.0, 3.0, {}, None, "plan: lb2") == "[     3s] cluster: plan: lb2"


def test_the_journal_target_and_options_round_trip() -> None:
    patch = PatchOptions(("ooha-lab-canary", "linux-image-*"), "always")
    journal = new_journal("r", HOST_PATCH, hostdriver.target_of(patch), [["a"]], {"a": hostdriver.target_of(patch)}, False, "", 0.0)
    journal.flags["patch"] = hostdriver.patch_flags(patch)
    assert hostdriver.patch_of(Journal.from_json(journal.to_json())) == patch
    assert hostdriver.target_of(PatchOptions()).version == "all"


def test_bad_command_line_options_are_named_one_line_each() -> None:
    lines = hostdriver.patch_hosts_problems({"patch_packages": "Bad", "patch_reboot": "yes"}, ["pyinfra", "--limit", "x"])
    assert [l.split(":", 1)[0] for l in lines] == ["--limit", "patch_packages", "patch_reboot"]
    assert all("fix:" in l for l in lines)
