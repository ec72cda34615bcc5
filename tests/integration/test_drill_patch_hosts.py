"""Host-patching drills (issue 12, deliverable 5): deploys/patch_hosts.py on the lab, for real.

The lab's apt repository serves ooha-lab-canary 1.0 and 1.1 (1.1 asks for a reboot); a host
with 1.0 installed has a real upgrade pending.  One exclusive hold of the lab, state restored
once at the end:

1. the canary 1.0 on a SUBSET of hosts that exercises every special path of the run: the LB
   holding the floating address (``vip_move``), one DS host (``ds_drain`` with editing sessions
   held open on it), the data host that is the Patroni leader (``patroni_nosync``, the
   switchover to the synchronous standby) and the Redis primary's host (``sentinel_failover``;
   the same host or one more).  ``--data patch_packages=ooha-lab-canary`` (the lab's hosts may
   have real Debian updates pending) under idempotent GETs through the front door, a PostgreSQL writer
   through a DS host's endpoint, a Redis writer with Sentinel discovery and the held sessions:
   exit 0; each canary host on 1.1 and really rebooted (systemd's UserspaceTimestamp moved);
   0 failed GETs, 0 lost PostgreSQL rows, 0 lost Redis keys, 0 held sessions cut (the drain
   waited for them; they end 8 s into a 30 s bound); the PostgreSQL write pause of the
   switchover printed; the leader moved off the patched host and that host streams again; the
   VIP on the other LB; the report's base line shows the last patch run; a rerun plans nothing
   and reboots nothing.
2. a host that does not come back from its reboot (its container loses its restart policy:
   a VM stuck at boot) stops the run: exit 1 naming the host and the step, the other planned
   host untouched; `python -m lab start HOST`, and the same command resumes and finishes.
3. the lab as before: canary packages and the lab source removed, no open journal, a main-job
   rerun changes nothing but the lab's own /etc/hosts gap (``LAB_REBOOT_ARTIFACTS``).

benchmarks/patch_hosts.py runs the full run (all 8 hosts) under the same load and prints its
figures.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from typing import Any

import pytest

from lab import aptrepo
from lab.client import (TARGETS, PyinfraRun, changed_operations, explain, hosts_in, lab_cli, output_of,
                        report_lines, run_pyinfra, secrets, ssh, wait_for)
from lab.workload import (LineClock, Loop, NoRestart, PgWriter, Writer, boot_markers, container_of,
                          hold_sessions_on, package_version, patch_timeline, redis_hosts, remove_canary, sentinels_primary,
                          vip_holder, wait_healthy, write_pauses)
from tests.integration.deploytools import drill_lab
from tests.integration.dstools import leader

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

INVENTORY = "inventories/lab.py"
PACKAGE = aptrepo.PACKAGE
OLD, NEW = "1.0", "1.1"
DRAIN_S = 30
COMMAND = ("-y", INVENTORY, "deploys/patch_hosts.py", "--data", f"patch_packages={PACKAGE}",
           "--data", f"ds_drain_seconds={DRAIN_S}")
UP_BOUND_S = 60
"""The failure drill's bound for a host to come back (the lab's hosts boot in 10-40 s)."""
FAILURE_COMMAND = (*COMMAND, "--data", f"patch_host_up_seconds={UP_BOUND_S}")
DS_HOST = "ds3"
WRITER_HOST = "ds1"
"""The PostgreSQL writer runs on a DS host the drill does not patch (its loop would die with it)."""
HELD = 3
HELD_INTO_DRAIN_S = 8.0
"""The held sessions end on their own this long after the drain began: well inside the bound."""
PATHS = ["/healthcheck", "/healthcheck?shardkey=patch-hosts-drill-doc"]
OPEN_STATUSES = "('running', 'interrupted', 'failed')"
LAB_REBOOT_ARTIFACTS = {"RabbitMQ | Peers in /etc/hosts"}
"""What the main job may still change after the drills: Docker writes a fresh /etc/hosts into a
lab host's container at every start (a VM keeps its file), so the RabbitMQ peers' lines of the
data hosts the drills rebooted come back with the main job.  A lab gap, not a change the run made."""


def ops_sql(lab: dict[str, Any], sql: str) -> str:
    code, out = ssh(lab, leader(lab), f"echo {sql!r} | sudo -u postgres psql -h /var/run/postgresql -d ooha_ops -XAtq")
    assert code == 0, out
    return out.strip()


def open_patch_journals(lab: dict[str, Any]) -> int:
    return int(ops_sql(lab, f"SELECT count(*) FROM rollout WHERE kind = 'host-patch' AND status IN {OPEN_STATUSES}"))


def redis_primary_host(lab: dict[str, Any]) -> str:
    """The data host whose Redis every Sentinel names primary."""
    named = wait_for("one primary named by the Sentinels", lambda: p if len(p := sentinels_primary(lab)) == 1 else None,
                     60, interval=0.5)
    return redis_hosts(lab)[next(iter(named))]


def the_vip_holder(lab: dict[str, Any]) -> str:
    return wait_for("one LB holding the VIP", lambda: vip_holder(lab), 30, interval=0.5, tolerate=(Exception,))


def versions(lab: dict[str, Any], hosts: list[str]) -> dict[str, str | None]:
    return {h: package_version(lab, h, PACKAGE) for h in hosts}


def planned_hosts(output: str) -> list[str]:
    """The hosts of the run's ``plan: a -> b -> c`` line."""
    match = re.search(r"\] (?:cluster: )?plan: (.+?)(?:; skipped:|$)", output, re.M)
    assert match, output[-3000:]
    return [h.strip() for h in match.group(1).split("->")]


def last_run_stamps(lab: dict[str, Any], hosts: list[str]) -> dict[str, str]:
    """The base report line's 'last patch run: ...' part per host (deploys/validate.py, base layer)."""
    result = run_pyinfra("-y", INVENTORY, "deploys/validate.py", "--data", "layers=base", timeout=600)
    lines = report_lines(output_of(result))
    found = {}
    for host in hosts:
        text = lines.get((host, "base"), "")
        match = re.search(r"last patch run: (.*?)(?:, apt lists|$)", text)
        found[host] = match.group(1) if match else f"(no base line: {text!r})"
    return found


def restore(lab: dict[str, Any]) -> None:
    """Whatever a failed drill left: every host running with its restart policy, an open
    host-patching journal finished by the same command, the canary and the lab source removed,
    the canary's reboot flag gone; the main job only when something had to be finished."""
    from lab.hosts import ensure_restart_policy

    unfinished = False
    for host in TARGETS:
        container = container_of(lab, host)
        ensure_restart_policy(container)
        if container.status != "running":
            unfinished = True
            lab_cli("start", host, timeout=300)
    if open_patch_journals(lab):
        unfinished = True
        resumed = run_pyinfra(*FAILURE_COMMAND, timeout=1500)
        print(f"\nrestore: the open host-patching run resumed: exit {resumed.returncode}\n{output_of(resumed)[-1500:]}")
    try:
        remove_canary(lab, TARGETS)
    except AssertionError as error:
        print(f"restore: {error}")
    for host in TARGETS:
        ssh(lab, host, "if [ \"$(sort -u /run/reboot-required.pkgs 2>/dev/null)\" = " + repr(PACKAGE) + " ]; then "
                       "sudo rm -f /run/reboot-required /run/reboot-required.pkgs; fi")
    if unfinished or not lab.get("restored"):  # the last test did not run the main job: the /etc/hosts gap
        converge = run_pyinfra("-y", INVENTORY, "deploys/ha.py", timeout=1500)
        print(f"restore: main job exit {converge.returncode}")


@pytest.fixture(scope="module")
def patch_lab(request: pytest.FixtureRequest) -> Any:
    with drill_lab(request, restore) as lab:
        yield lab


def test_a_subset_patched_under_load_fails_no_request_and_loses_no_write(patch_lab: dict[str, Any]) -> None:
    lab = patch_lab
    view = wait_healthy(lab)
    leader0, sync0 = view["leader"], list(view["sync_standbys"])
    holder0 = the_vip_holder(lab)
    other_lb = next(lb for lb in hosts_in(lab, "lb") if lb != holder0)
    redis0 = redis_primary_host(lab)
    # the Redis primary's host too when it is not the leader's: the Sentinel failover runs in every drill
    canaried = [DS_HOST, leader0, *([redis0] if redis0 != leader0 else []), holder0]
    assert WRITER_HOST not in canaried
    lab_cli("canary", *canaried, "--version", OLD, timeout=600, check=True)
    assert versions(lab, canaried) == {h: OLD for h in canaried}
    markers = boot_markers(lab, TARGETS)
    figures = [f"canary {OLD} on {', '.join(canaried)}; Patroni leader {leader0} (sync standby {', '.join(sync0)}), "
               f"Redis primary on {redis0}, VIP on {holder0}"]

    pg = PgWriter(lab, host=WRITER_HOST)
    pg.prepare(secrets(lab)["postgres_ds_password"])
    keys = Writer(lab, f"patch-drill:{int(time.time())}")
    offset = time.time() - time.monotonic()  # the Redis writer's clock is monotonic
    started = time.time()
    try:
        pg.start(max_seconds=1500)
        keys.start()
        wait_for("rows and keys written before the run", lambda: len(pg.acked()) >= 10 and len(keys.acked) >= 20, 60)
        with Loop(lab, PATHS, timeout=10.0) as loop:
            held = hold_sessions_on(lab, DS_HOST, HELD, 600.0, prefix="patch-held")
            run = PyinfraRun(*COMMAND)
            clock = LineClock(run)

            def end_sessions_into_the_drain() -> None:
                try:
                    run.wait_line(rf"\] host \d+/\d+ {DS_HOST} \(.*\) step ds_drain: start", 900)
                    held.release.wait(HELD_INTO_DRAIN_S)  # the editors keep working this long into the drain
                finally:
                    held.release.set()

            releaser = threading.Thread(target=end_sessions_into_the_drain, daemon=True)
            releaser.start()
            code = run.wait(1500)
            stamped = clock.stop()
            held.release.set()
            held.join(30)
        keys.stop()
        events = pg.stop(deadline=60)
    finally:
        keys.stop()
        pg.cleanup()
    took = time.time() - started
    output = run.output
    timeline = patch_timeline(stamped)
    print("\n" + "\n".join(line for line in run.lines if re.search(r"\] (?:cluster: )?plan: |^    \S+ \(tier |^host patching |"
                                                                     r"^patched |^skipped: |^host times: |FAILED", line)))
    assert code == 0, output[-5000:]
    plan = planned_hosts(output)
    assert set(canaried) <= set(plan), plan
    untouched = [h for h in TARGETS if h not in plan]

    # each canary host upgraded and really rebooted; no other host rebooted
    after = boot_markers(lab, TARGETS)
    assert versions(lab, canaried) == {h: NEW for h in canaried}
    assert [h for h in canaried if after[h] == markers[h]] == [], (markers, after)
    assert {h: after[h] for h in untouched} == {h: markers[h] for h in untouched}, "a host outside the plan rebooted"

    # the clients: 0 failed requests, 0 lost rows and keys, 0 held sessions cut
    acked = {i for kind, i, _ in events if kind == "ok"}
    lost_rows = acked - pg.present()
    lost_keys = keys.lost()
    pauses = write_pauses(events, threshold=1.0)
    switchover = timeline.step(leader0, "patroni_switchover_to_sync_standby")
    assert switchover is not None and switchover.ok, output[-4000:]
    at_switchover = [p for p in pauses if switchover.start - 2 <= p.start <= (switchover.end or 0) + 2]
    drain = timeline.step(DS_HOST, "ds_drain")
    assert drain is not None and drain.ok, output[-4000:]
    view = wait_healthy(lab, deadline=180)
    figures += [
        f"run: exit {code} in {took:.0f} s; per host: "
        + ", ".join(f"{h} {b - a:.0f} s" for h, (a, b) in sorted(timeline.turns.items(), key=lambda t: t[1][0])),
        f"front door: {loop.failed} failed of {loop.ok + loop.failed} GETs (longest gap {loop.gap:.1f} s)"
        + "".join(f"; {what} during {timeline.where(at)}" for what, at in zip(loop.failures, loop.failed_at)),
        f"PostgreSQL through {WRITER_HOST}'s endpoint: {len(acked)} rows acknowledged, {len(lost_rows)} lost; "
        f"write pause at the switchover {leader0} -> {view['leader']}: "
        + (", ".join(f"{p.seconds:.1f} s ({p.failed} failed inserts)" for p in at_switchover) or "none over 1 s")
        + "; every pause over 1 s: "
        + (", ".join(f"{p.seconds:.1f} s during {timeline.where(p.start)}" for p in pauses) or "none"),
        f"Redis through Sentinel: {len(keys.acked)} keys acknowledged, {len(lost_keys)} lost, "
        f"longest gap {keys.longest_gap():.1f} s, {len(keys.errors)} errors"
        + (f" (first during {timeline.where(keys.errors[0][0] + offset)}: {keys.errors[0][1]}; last during "
           f"{timeline.where(keys.errors[-1][0] + offset)}: {keys.errors[-1][1]})" if keys.errors else "")
        + (f"; the lost keys were acknowledged during {sorted({timeline.where(t + offset) for n, t in keys.acked if n in set(lost_keys)})}"
           if lost_keys else ""),
        f"held sessions on {DS_HOST}: {held.summary(DS_HOST)}; its drain took {drain.seconds:.0f} s (bound {DRAIN_S} s)",
    ]
    print("\n".join(figures))
    # 0 failed GETs, except at most ONE in the VIP holder's turn: the address moves on purpose
    # (keepalived stopped, the old holder answers in-flight requests from a silent lo copy for 5 s),
    # yet 3 of the first ~10 moves on the lab still lost one GET (a ReadTimeout or a reset); the
    # last ones lost none.  A known gap (issue 12's note), measured in benchmarks/patch_hosts.py;
    # a second failure there, or any failure in another host's turn, fails the drill.
    failures = list(zip(loop.failures, loop.failed_at))
    holder_turn = timeline.turns.get(holder0, (float("inf"), 0.0))[0]  # the holder goes last (tier lb_vip)
    elsewhere = [(what, timeline.where(at)) for what, at in failures if at < holder_turn]
    at_move = [(what, timeline.where(at)) for what, at in failures if at >= holder_turn]
    assert not elsewhere, elsewhere
    assert len(at_move) <= 1, at_move
    assert not lost_rows, f"acknowledged rows lost: {sorted(lost_rows)[:20]}"
    assert not lost_keys, f"acknowledged Redis keys lost: {lost_keys[:20]}"
    assert held.on_node == HELD and held.ended == HELD and not held.cut, held
    assert drain.seconds is not None and drain.seconds >= HELD_INTO_DRAIN_S - 2, \
        f"the drain did not wait for the held sessions ({drain.seconds} s)"

    # roles: the leader moved off the patched host, which streams again; the VIP on the other LB
    print(f"Patroni leader {leader0} -> {view['leader']}; Redis primary {redis0} -> {redis_primary_host(lab)}; "
          f"VIP {holder0} -> {the_vip_holder(lab)}")
    assert view["leader"] != leader0, view
    rejoined = next(m for m in view["members"] if m["name"] == leader0)
    assert rejoined["streaming"], view
    failover = timeline.step(redis0, "sentinel_failover")  # it ran before the primary's host went down
    assert failover is not None and failover.ok, output[-4000:]
    assert redis_primary_host(lab) != redis0
    assert the_vip_holder(lab) == other_lb

    # the report shows the last run; a rerun plans nothing and reboots nothing
    stamps = last_run_stamps(lab, canaried)
    print(f"report: {stamps}")
    for host, text in stamps.items():
        match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(done\)", text)
        assert match, (host, text)
        assert calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ")) >= int(started) - 1, (host, text)
    again = run_pyinfra(*COMMAND, timeout=900)
    assert again.returncode == 0 and "nothing to patch" in output_of(again), output_of(again)[-3000:]
    assert boot_markers(lab, TARGETS) == after, "the rerun rebooted a host"
    assert versions(lab, canaried) == {h: NEW for h in canaried}


def test_a_host_that_does_not_come_back_stops_the_run_and_the_same_command_resumes(patch_lab: dict[str, Any]) -> None:
    lab = patch_lab
    holder = the_vip_holder(lab)
    stuck = next(lb for lb in hosts_in(lab, "lb") if lb != holder)  # planned first (tier lb_standby), the holder last
    lab_cli("canary", stuck, holder, "--version", OLD, timeout=600, check=True)
    markers = boot_markers(lab, TARGETS)
    with Loop(lab, PATHS, timeout=10.0) as loop:  # the front door while the standby LB is lost
        with NoRestart(lab, stuck) as no_restart:
            t0 = time.monotonic()
            failed = run_pyinfra(*FAILURE_COMMAND, timeout=1200)
            text = output_of(failed)
            print(f"\nrun with {stuck} not coming back from its reboot: exit {failed.returncode} in "
                  f"{time.monotonic() - t0:.0f} s")
            print("\n".join(line for line in text.splitlines() if "FAILED" in line or line.startswith(("host patching ", "next:"))))
            assert failed.returncode == 1, text[-4000:]
            assert planned_hosts(text) == [stuck, holder], text[-4000:]
            assert re.search(rf"{stuck} step reboot failed: .*{stuck}", text), text[-4000:]
            assert no_restart.down()
            # nothing else touched: the holder still has 1.0, kept the VIP, no other host rebooted
            assert versions(lab, [holder]) == {holder: OLD}, "the host after the failed one changed (or observing changed it)"
            assert the_vip_holder(lab) == holder
            others = [h for h in TARGETS if h != stuck]
            assert boot_markers(lab, others) == {h: markers[h] for h in others}
            assert open_patch_journals(lab) == 1
    print(f"front door while {stuck} was lost: {loop.failed} failed of {loop.ok + loop.failed} GETs "
          f"(longest gap {loop.gap:.1f} s)")
    assert loop.failed == 0, loop.failures
    lab_cli("start", stuck, timeout=300, check=True)
    t0 = time.monotonic()
    resumed = run_pyinfra(*FAILURE_COMMAND, timeout=1200)  # its vip_move under load: the first test's part
    text = output_of(resumed)
    print(f"the same command after `python -m lab start {stuck}`: exit {resumed.returncode} in "
          f"{time.monotonic() - t0:.0f} s")
    print("\n".join(line for line in text.splitlines() if line.startswith(("host patching ", "patched ", "host times"))))
    assert resumed.returncode == 0, text[-4000:]
    assert "resuming host patching" in text, text[-3000:]
    assert versions(lab, [stuck, holder]) == {stuck: NEW, holder: NEW}
    after = boot_markers(lab, TARGETS)
    assert after[stuck] != markers[stuck] and after[holder] != markers[holder], (markers, after)
    assert the_vip_holder(lab) == stuck
    assert open_patch_journals(lab) == 0


def test_the_lab_is_as_before_and_the_main_job_changes_nothing(patch_lab: dict[str, Any]) -> None:
    lab = patch_lab
    remove_canary(lab, TARGETS)
    _, sources = ssh(lab, "lb1", f"ls {aptrepo.SOURCE_FILE} 2>&1")
    assert "No such file" in sources, sources
    assert open_patch_journals(lab) == 0
    wait_healthy(lab, deadline=180)
    the_vip_holder(lab)
    rerun = run_pyinfra("-y", INVENTORY, "deploys/ha.py", timeout=1500)
    assert rerun.returncode == 0, explain(rerun)
    lab["restored"] = True
    changed = {op: n for op, n in changed_operations(output_of(rerun)).items() if op != "Grand total"}
    print(f"\nmain job after the drills: changed {changed or 'nothing'}")
    assert set(changed) <= LAB_REBOOT_ARTIFACTS, changed
