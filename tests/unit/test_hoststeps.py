"""Host patching's steps (issue 12): the command builders, parsers and decisions of
ooha/rollout/live/hoststeps.py, and the drain helpers it shares with the DS rollout
(ooha/rollout/live/nodestate.py).  The remote I/O is a few lines per step, proven on the lab."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from ooha.rollout.gates import PatroniMember
from ooha.rollout.hostplan import HostView, post_steps, pre_steps
from ooha.rollout.live import hoststeps as hs
from ooha.rollout.live import nodestate

OBSERVED = """\
----ooha-update----
Hit:1 http://deb.debian.org/debian bookworm InRelease
Get:2 http://198.18.20.10:8081/ooha-lab ./ InRelease [1,234 B]
Reading package lists...
update-exit 0
----ooha-simulate----
Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  ooha-lab-canary openssl
2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Inst ooha-lab-canary [1.0] (1.1 ooha-lab [all])
Inst openssl [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])
Conf ooha-lab-canary (1.1 ooha-lab [all])
----ooha-df----
Filesystem     Mounted on        Avail
overlay        /          74758774784
overlay        /          74758774784
----ooha-audit----
----ooha-held----
postgresql-15
----ooha-reboot----
yes
ooha-lab-canary
----ooha-needrestart----
NEEDRESTART-VER: 3.6
NEEDRESTART-KSTA: 0
NEEDRESTART-SVC: patroni.service
"""


def test_observation_sections_parse_into_host_facts() -> None:
    facts = hs.parse_observation(OBSERVED)
    assert facts.update_exit == 0 and "InRelease" in (facts.update_output or "")
    assert [p.name for p in facts.simulation.pending] == ["ooha-lab-canary", "openssl"]
    assert facts.root == facts.var and facts.root.avail_bytes == 74758774784
    assert facts.audit == "" and facts.held == ("postgresql-15",)
    assert facts.flag.required and facts.flag.packages == ("ooha-lab-canary",)
    assert facts.needrestart.services == ("patroni.service",)
    assert [p.name for p in facts.pending(("ooha-lab-*",))] == ["ooha-lab-canary"]
    assert hs.upgrade_names(facts, ("ooha-lab-canary",)) == ("ooha-lab-canary",)
    assert hs.upgrade_names(facts, ()) is None  # no selection: apt-get upgrade


def test_a_cut_section_is_unknown_not_empty() -> None:
    text = OBSERVED.replace("----ooha-audit----\n", "----ooha-audit----\n----ooha-cut----\n")
    text = text.replace("update-exit 0\n", "")
    facts = hs.parse_observation(text)
    assert facts.audit is None  # dpkg --audit timed out: the manual-attention gate refuses
    assert facts.update_exit is None and facts.update_output is None
    assert hs.parse_observation("").simulation is None


def test_parse_df_needs_both_rows() -> None:
    rows = ["Filesystem Mounted on Avail", "/dev/sda1 / 1000", "/dev/sdb1 /var 2000"]
    fs = hs.parse_df(rows)
    assert fs["/"].target == "/" and fs["/var"].avail_bytes == 2000
    assert hs.parse_df(rows[:2]) == {}


@pytest.mark.parametrize("names, want", [
    (None, "apt-get -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef upgrade --with-new-pkgs"),
    (("ooha-lab-canary", "libssl3:amd64"), "install --only-upgrade ooha-lab-canary libssl3:amd64"),
])
def test_upgrade_command_is_noninteractive_and_keeps_our_config(names: tuple[str, ...] | None, want: str) -> None:
    command = hs.upgrade_command(names)
    assert "DEBIAN_FRONTEND=noninteractive" in command and "LC_ALL=C" in command and want in command
    sizes = hs.sizes_command(names)
    assert "--print-uris --assume-no" in sizes and "-y" not in sizes.split()  # observing installs nothing


def test_reboot_is_fired_outside_the_ssh_session() -> None:
    assert hs.reboot_command().startswith("systemd-run ") and "systemctl reboot" in hs.reboot_command()


@pytest.mark.parametrize("before, value, want, out", [
    ("  nosync: false\n", True, "  nosync: true\n", "changed"),
    ("  nosync: true\n", True, "  nosync: true\n", "same"),
    ("  nosync: true\n", False, "  nosync: false\n", "changed"),
])
def test_nosync_command_edits_only_the_tag_line(tmp_path, monkeypatch, before: str, value: bool, want: str, out: str) -> None:
    """Run the real shell text against a copy of the template's tags block (systemctl stubbed)."""
    conf = tmp_path / "config.yml"
    conf.write_text("tags:\n  nofailover: false\n" + before + "  clonefrom: false\n")
    monkeypatch.setattr(hs, "PATRONI_CONFIG", str(conf))
    command = hs.nosync_command(value).replace("systemctl reload patroni", "true")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == out
    assert conf.read_text() == "tags:\n  nofailover: false\n" + want + "  clonefrom: false\n"


def test_nosync_command_refuses_a_config_without_the_line(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "config.yml"
    conf.write_text("tags: {}\n")
    monkeypatch.setattr(hs, "PATRONI_CONFIG", str(conf))
    result = subprocess.run(["sh", "-c", hs.nosync_command(True)], capture_output=True, text=True)
    assert result.returncode == 3 and "no nosync line" in result.stderr


def test_commands_quote_their_arguments() -> None:
    command = hs.switchover_command("data1", "data2; rm -rf /")
    assert shlex.quote("data2; rm -rf /") in command and "--force" in command
    assert hs.checkpoint_command(5432).startswith("runuser -u postgres -- psql -h /var/run/postgresql -p 5432 ")
    assert hs.pause_writes_command(5000).endswith("redis -e CLIENT PAUSE 5000 WRITE 2>&1")
    assert "CLIENT UNPAUSE" in hs.unpause_command()
    assert "REDISCLI_AUTH" not in hs.sentinel_failover_command("onlyoffice")  # the wrapper reads the password
    assert hs.sentinel_failover_command("onlyoffice").endswith("SENTINEL FAILOVER onlyoffice 2>&1")
    # the old primary is made a replica while still paused: released writers then get READONLY
    assert hs.replicaof_command("198.18.2.31", 6379).endswith("redis -e REPLICAOF 198.18.2.31 6379 2>&1")
    assert hs.role_command().endswith("redis ROLE 2>&1")


RABBIT = (
    "vhost onlyoffice_ds1\n"
    "a\t<rabbit@data1.1700.512.0>\tfalse\tha-onlyoffice\t[<rabbit@data2.1.2.0>, <rabbit@data3.1.2.0>]\t[<rabbit@data2.1.2.0>]\n"
    "b\t<rabbit@data2.1.3.0>\tfalse\tha-onlyoffice\t[<rabbit@data1.1.2.0>]\t[]\n"
    "c\t<rabbit@data1.1.4.0>\tfalse\tha-onlyoffice\t[]\t[]\n"
    "amq.gen-WeDsRZvMMxxEVwMpccUK1A\t<rabbit@data1.1.5.0>\ttrue\t\t[]\t[]\n"
    "vhost /\n"
)


def test_rabbit_queues_and_what_must_sync_before_a_node_stops() -> None:
    queues = hs.parse_rabbit_queues(RABBIT)
    assert [(q["vhost"], q["name"], q["master"]) for q in queues] == [
        ("onlyoffice_ds1", "a", "rabbit@data1"), ("onlyoffice_ds1", "b", "rabbit@data2"), ("onlyoffice_ds1", "c", "rabbit@data1"),
        ("onlyoffice_ds1", "amq.gen-WeDsRZvMMxxEVwMpccUK1A", "rabbit@data1")]
    assert queues[0]["synced"] == ["rabbit@data2"]
    # a: synced on data2; b: its master is elsewhere; c: no mirror at all; amq.gen: exclusive, never mirrored
    assert hs.queues_to_sync(queues, "rabbit@data1") == [("onlyoffice_ds1", "c")]
    assert hs.queues_to_sync(queues, "rabbit@data3") == []


def _m(name: str, role: str, state: str = "streaming", lag: int | None = 0) -> PatroniMember:
    return PatroniMember(name, role, state, lag)


CLUSTER = (_m("data1", "leader", "running"), _m("data2", "sync_standby"), _m("data3", "replica"))


def test_patroni_ready_per_role() -> None:
    assert hs.patroni_ready("data1", CLUSTER, 100) == (True, "data1 is the leader, switchover target data2")
    assert hs.patroni_ready("data2", CLUSTER, 100)[0]
    lagging = CLUSTER[:2] + (_m("data3", "replica", lag=10_000),)
    ok, why = hs.patroni_ready("data2", lagging, 100)
    assert not ok and "no other streaming standby" in why and "fix:" in why
    ok, why = hs.patroni_ready("data1", (CLUSTER[0], _m("data2", "sync_standby", lag=None), CLUSTER[2]), 100)
    assert not ok and "no streaming sync standby" in why
    assert not hs.patroni_ready("data3", None, 100)[0]
    assert not hs.patroni_ready("data3", (_m("data1", "leader", "stopped"),) + CLUSTER[1:], 100)[0]


def test_patroni_rejoined_and_leader_helpers() -> None:
    after = (_m("data2", "leader", "running"), _m("data3", "sync_standby"), _m("data1", "replica", "starting", None))
    ok, why = hs.patroni_rejoined("data1", after, 100)
    assert not ok and "starting" in why
    back = after[:2] + (_m("data1", "replica", lag=5),)
    assert hs.patroni_rejoined("data1", back, 100) == (True, "data1 replica streaming, lag 5 B")
    assert not hs.patroni_rejoined("data1", (after[0], _m("data3", "replica"), _m("data1", "replica")), 100)[0]
    assert hs.leader_of(after) == "data2" and hs.leader_of(None) is None
    assert hs.sync_standby_elsewhere("data2", CLUSTER) is None
    assert hs.sync_standby_elsewhere("data3", CLUSTER) == "data2"


def test_sentinel_agreement_and_small_parsers() -> None:
    assert hs.sentinel_agreement({"data1": "198.18.1.21", "data2": "198.18.1.21"}) == "198.18.1.21"
    assert hs.sentinel_agreement({"data1": "198.18.1.21", "data2": "198.18.2.21"}) is None
    assert hs.sentinel_agreement({"data1": None}) is None and hs.sentinel_agreement(None) is None
    assert hs.parse_boot_marker("Sat 2026-12-05 19:20:01 UTC\n") == "Sat 2026-12-05 19:20:01 UTC"
    assert hs.parse_boot_marker("n/a") is None and hs.parse_boot_marker("") is None
    assert hs.parse_failed_units("● nginx.service loaded failed failed A high performance web server\n") == ["nginx.service"]
    assert hs.parse_failed_units("") == []
    ip = "3: eth1    inet 198.18.10.100/24 scope global secondary eth1\\       valid_lft forever"
    assert hs.holds_address(ip, "198.18.10.100") and not hs.holds_address(ip, "198.18.10.10")
    silent = "1: lo    inet 198.18.10.100/32 scope global lo\\       valid_lft forever"
    assert not hs.holds_address(silent, "198.18.10.100")  # vip_move's copy on lo during the handover


def test_handover_keeps_a_silent_copy_and_restores_the_sysctls() -> None:
    keep = hs.handover_keep_command("198.18.10.100")
    assert "arp_ignore=1" in keep and "arp_announce=2" in keep and "ip addr add 198.18.10.100/32 dev lo" in keep
    release = hs.handover_release_command("198.18.10.100", "1 0")
    assert "ip addr del 198.18.10.100/32 dev lo" in release
    assert release.endswith("arp_ignore=1 net.ipv4.conf.all.arp_announce=0")
    assert hs.handover_release_command("198.18.10.100", "").endswith("arp_ignore=0 net.ipv4.conf.all.arp_announce=0")


def test_host_up_wants_a_new_boot_a_settled_systemd_and_no_failed_unit() -> None:
    assert hs.host_up_verdict("ds1", None, None, "", []) == (False, "ds1: systemd does not answer")
    assert hs.host_up_verdict("ds1", "Sat 19:00", "Sat 19:00", "running", [])[1] == "ds1: still the boot from before the reboot"
    assert hs.host_up_verdict("ds1", "Sat 19:05", "Sat 19:00", "starting", [])[1] == "ds1: systemd starting"
    assert hs.host_up_verdict("ds1", "Sat 19:05", "Sat 19:00", "degraded", ["nginx.service"])[1] == "ds1: failed unit(s) nginx.service"
    assert hs.host_up_verdict("ds1", "Sat 19:05", "Sat 19:00", "running", [])[0]
    assert hs.host_up_verdict("ds1", "Sat 19:00", None, "running", [])[0]  # not rebooted: the same boot is fine


def test_every_planned_step_has_an_implementation() -> None:
    every = HostView("x", "az1", frozenset({"lb", "docs", "postgres", "etcd", "redis", "rabbitmq"}),
                     holds_vip=True, patroni_role="leader", redis_primary=True)
    names = {s.name for s in pre_steps(every) + post_steps(every)} | {"apt_upgrade", "reboot"}
    assert names <= set(hs.STEPS)
    env = hs.StepEnv(inventory=None, options=None, patch=None, say=print, wait=lambda s: None)  # type: ignore[arg-type]
    ok, why = hs.run_step(env, "x", "no_such_step")
    assert not ok and "unknown step" in why


def test_a_crashing_step_is_a_failed_step(monkeypatch) -> None:
    def boom(env, host):
        raise RuntimeError("connection lost")
    monkeypatch.setitem(hs.STEPS, "host_up", boom)
    env = hs.StepEnv(inventory=None, options=None, patch=None, say=print, wait=lambda s: None)  # type: ignore[arg-type]
    assert hs.run_step(env, "ds1", "host_up") == (False, "host_up on ds1: RuntimeError: connection lost")


# --- the drain helpers shared with the DS rollout -------------------------------------------


def test_wait_drained_ends_at_zero_at_the_bound_or_on_interrupt(monkeypatch) -> None:
    clock = {"t": 0.0}
    monkeypatch.setattr(nodestate.time, "time", lambda: clock["t"])

    def wait(seconds: float) -> None:
        clock["t"] += seconds

    counts = iter([{"ds1": 2}, {"ds1": None}, {"ds1": 0}])
    end = nodestate.wait_drained(lambda: next(counts), 60, wait, lambda line: None, lambda: False)
    assert end.drained and end.elapsed == 2 and not end.interrupted

    said: list[str] = []
    end = nodestate.wait_drained(lambda: {"ds1": 3}, 5, wait, said.append, lambda: False, every_s=0)
    assert not end.drained and end.left == {"ds1": 3} and end.elapsed >= 5 and said

    end = nodestate.wait_drained(lambda: {"ds1": 3}, 60, wait, lambda line: None, lambda: True)
    assert end.interrupted and not end.drained


def test_move_state_walks_allowed_transitions_on_the_first_answering_host(monkeypatch) -> None:
    table: dict[str, str] = {}
    writes: list[tuple[str, str, str]] = []

    def read_states(host: str, key: str) -> dict[str, str]:
        if host == "down":
            raise nodestate.NodeStateError("no route")
        return dict(table)

    def set_state(host: str, key: str, node: str, state: str) -> None:
        if host == "down":
            raise nodestate.NodeStateError("no route")
        writes.append((host, node, state))
        table[node] = state

    monkeypatch.setattr(nodestate, "read_states", read_states)
    monkeypatch.setattr(nodestate, "set_state", set_state)
    assert nodestate.move_state(["down", "data2"], "k", "ds1", "out")
    assert writes == [("data2", "ds1", "draining"), ("data2", "ds1", "out")]
    assert not nodestate.move_state(["data2"], "k", "ds1", "out")  # already there: nothing written
    with pytest.raises(nodestate.NodeStateError, match="out -> draining is not allowed"):
        nodestate.move_state(["data2"], "k", "ds1", "draining")
    with pytest.raises(nodestate.NodeStateError, match="not reachable through any redis host"):
        nodestate.move_state(["down"], "k", "ds1", "active")


def test_hosts_are_observed_at_once_and_a_crash_is_unknown() -> None:
    class Host:
        def __init__(self, name: str) -> None:
            self.name = name

    def look(target: Host) -> hs.HostFacts:
        if target.name == "bad":
            raise OSError("ssh died")
        return hs.parse_observation(OBSERVED)

    facts = hs._on_each([Host("good"), Host("bad")], look)
    assert facts["good"].update_exit == 0
    assert facts["bad"].simulation is None and facts["bad"].update_exit is None  # refused by the plan and the gates


def test_undo_follows_the_memo_even_when_the_move_itself_failed(monkeypatch) -> None:
    calls: list[str] = []

    class Env:
        memo = {"keepalived_stopped": True, "nosync_set": True, "ds_image": "img"}

        def host(self, name: str) -> str:
            return name

    monkeypatch.setattr(hs, "run_step", lambda env, host, step: (calls.append(step), (True, "ok"))[1])
    monkeypatch.setattr(hs, "_set_nosync", lambda env, host, value: (calls.append(f"nosync {value}"), (True, "same"))[1])
    monkeypatch.setattr(hs.observe, "node_health", lambda target: ("img", "false", None))
    lines = hs.undo(Env(), "ds1", [])  # type: ignore[arg-type]
    assert calls == ["lb_backup_state", "nosync False"]
    assert lines[0] == "keepalived started again on ds1" and lines[1] == "ds1: nosync tag cleared"
    assert "left out of the load balancers' table" in lines[2]  # unhealthy: not returned
    Env.memo = {}
    calls.clear()
    assert hs.undo(Env(), "ds1", ["ds_drain", "ds_return"]) == [] and calls == []  # type: ignore[arg-type]


@pytest.mark.parametrize("script, status", [
    ("exit 2", 1),                      # rabbitmqctl fails: not "no queue to sync"
    ("true", 1),                        # no vhost listed: the same
    ('if [ "$1" = list_vhosts ]; then echo /; else echo "q\tpid"; fi', 0),
])
def test_the_queue_listing_fails_when_the_vhosts_cannot_be_listed(tmp_path, script: str, status: int) -> None:
    import os
    import subprocess

    fake = tmp_path / "rabbitmqctl"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert subprocess.run(["sh", "-c", hs.RABBIT_QUEUES], env=env, capture_output=True).returncode == status
