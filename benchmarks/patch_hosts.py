"""Host patching of every lab host (issue 12), measured from outside: the full run, all 8 hosts.

The canary 1.0 of the lab's apt repository on every host, so each one has a real upgrade that asks
for a reboot; then `deploys/patch_hosts.py --data patch_packages=ooha-lab-canary` with the
production drain bound (`--drain` s, default 120) while this machine runs idempotent GETs through
the front door, a Redis writer with Sentinel discovery, editors coming and going (each session
held `--hold` s, shorter than the drain bound) and PostgreSQL writers through the endpoints of two
DS hosts (each started again once its host is back from its reboot).  Prints: the total time and
each host's, failed front-door requests, the PostgreSQL write pause per switchover (and every
pause over 0.5 s with the host whose turn it was), lost PostgreSQL rows and Redis keys, editing
sessions cut (with the host whose turn it was).  Goals (issue 12): 0 failed, pause per switchover
<= 2 s, 0 lost, 0 cut before the drain bound.  Removes the canary at the end (the run itself leaves
the lab converged).  Needs a converged lab; takes the exclusive lab lock:

    .venv/bin/python benchmarks/patch_hosts.py [--drain 120] [--hold 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lab import aptrepo
from lab.client import TARGETS, PyinfraRun, lab_cli, locked_lab, secrets, wait_for
from lab.workload import (LineClock, Loop, PatchTimeline, PgWriters, SessionChurn, Writer, boot_markers, cluster_view,
                          package_version, patch_timeline, redis_hosts, remove_canary, sentinels_primary, vip_holder,
                          wait_healthy)

PACKAGE = aptrepo.PACKAGE
PATHS = ["/healthcheck", "/healthcheck?shardkey=patch-hosts-bench-doc"]
WRITER_HOSTS = ["ds1", "ds2"]
"""Two client hosts: the DS tier reboots them one at a time, so one of them always writes."""
PAUSE_S = 0.5


def redis_primary_host(lab: dict[str, Any]) -> str | None:
    named = sentinels_primary(lab)
    return redis_hosts(lab)[next(iter(named))] if len(named) == 1 else None


def redis_gap(keys: Writer, offset: float, start: float, end: float) -> float:
    """The longest time between two acknowledged Redis writes around [start, end] (unix times;
    ``offset`` turns the writer's monotonic clock into unix time)."""
    times = [t + offset for _, t in keys.acked]
    gaps = [b - a for a, b in zip(times, times[1:]) if b >= start - 1 and a <= end + 1]
    return max(gaps, default=0.0)


def role_moves(timeline: PatchTimeline, pg: PgWriters, keys: Writer, offset: float) -> list[str]:
    """One line per switchover and per Sentinel failover: the client-side pause it caused."""
    lines = []
    pauses = pg.pauses(PAUSE_S)
    for host in timeline.hosts():
        switchover = timeline.step(host, "patroni_switchover_to_sync_standby")
        if switchover is not None and switchover.end is not None:
            seen = [(client, p) for client, p in pauses if switchover.start - 2 <= p.start <= switchover.end + 2]
            worst = max((p.seconds for _, p in seen), default=0.0)
            lines.append(f"PostgreSQL switchover away from {host} ({switchover.detail or 'no detail'}): write pause "
                         f"{worst:.1f} s (" + (", ".join(f"{c} {p.seconds:.1f} s, {p.failed} failed inserts" for c, p in seen)
                                               or f"no pause over {PAUSE_S} s") + f"); step {switchover.seconds:.0f} s")
        failover = timeline.step(host, "sentinel_failover")
        if failover is not None and failover.end is not None:
            lines.append(f"Sentinel failover away from {host} ({failover.detail or 'no detail'}): longest Redis write gap "
                         f"{redis_gap(keys, offset, failover.start, failover.end):.1f} s; step {failover.seconds:.0f} s")
        vip = timeline.step(host, "vip_move")
        if vip is not None and vip.end is not None:
            lines.append(f"VIP moved away from {host} ({vip.detail or 'no detail'}): step {vip.seconds:.0f} s")
    return lines


def patched_before(timeline: PatchTimeline, new_leader: str, old_leader: str) -> bool:
    """Was the host the leadership moved to already patched when the switchover ran?"""
    switchover = timeline.step(old_leader, "patroni_switchover_to_sync_standby")
    return switchover is not None and new_leader in timeline.turns and timeline.turns[new_leader][1] <= switchover.start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drain", type=int, default=120, help="ds_drain_seconds (default 120)")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each editing session stays open (default 20)")
    args = parser.parse_args()
    with locked_lab() as lab:
        view = wait_healthy(lab)
        before = {"leader": view["leader"], "redis": redis_primary_host(lab), "vip": vip_holder(lab)}
        lab_cli("canary", *TARGETS, "--version", "1.0", timeout=900, check=True)
        markers = boot_markers(lab, TARGETS)
        pg = PgWriters(lab, WRITER_HOSTS, secrets(lab)["postgres_ds_password"], max_seconds=5400)
        keys = Writer(lab, f"patch-bench:{int(time.time())}")
        offset = time.time() - time.monotonic()
        started = time.time()
        try:
            try:
                pg.start()
                keys.start()
                wait_for("writes before the run", lambda: pg.acked() >= 10 and len(keys.acked) >= 20, 60)
                with Loop(lab, PATHS, timeout=10.0) as loop, SessionChurn(lab, hold=args.hold, every=2.0) as churn:
                    run = PyinfraRun("-y", "inventories/lab.py", "deploys/patch_hosts.py",
                                     "--data", f"patch_packages={PACKAGE}", "--data", f"ds_drain_seconds={args.drain}")
                    clock = LineClock(run)
                    code = run.wait(5400)
                    stamped = clock.stop()
            finally:
                keys.stop()
                pg.stop()
            took = time.time() - started
            return report(lab, args, before, markers, run, code, took, stamped, loop, churn, pg, keys, offset)
        finally:
            pg.cleanup()
            remove_canary(lab, TARGETS)
            print("canary removed from every host")


def report(lab: dict[str, Any], args: argparse.Namespace, before: dict[str, Any], markers: dict[str, str], run: PyinfraRun,
           code: int, took: float, stamped: list[tuple[float, str]], loop: Loop, churn: SessionChurn, pg: PgWriters,
           keys: Writer, offset: float) -> int:
    """Print the figures; 0 when every goal that must hold held."""
    timeline = patch_timeline(stamped)
    after = boot_markers(lab, TARGETS)
    upgraded = {h: package_version(lab, h, PACKAGE) for h in TARGETS}
    lost_rows, lost_keys = pg.lost(), keys.lost()
    now = wait_healthy(lab, deadline=300)
    roles = {"leader": now["leader"], "redis": redis_primary_host(lab), "vip": vip_holder(lab)}

    print(f"host patching, all {len(TARGETS)} hosts (canary 1.0 -> 1.1, each asks for a reboot), drain bound "
          f"{args.drain} s, sessions held {args.hold:.0f} s: exit {code} in {took:.0f} s")
    for line in run.lines:
        if line.startswith(("host patching ", "patched ", "skipped: ", "host times: ")) or " plan: " in line \
                or "FAILED" in line:
            print(f"    {line.strip()}")
    print("per host (first to last progress line of its turn): " + ", ".join(
        f"{h} {b - a:.0f} s" for h, (a, b) in sorted(timeline.turns.items(), key=lambda t: t[1][0])))
    print(f"upgraded to 1.1: {sum(v == '1.1' for v in upgraded.values())}/{len(TARGETS)}; rebooted: "
          f"{sum(after[h] != markers[h] for h in TARGETS)}/{len(TARGETS)}")
    print(f"front door: {loop.failed} failed of {loop.ok + loop.failed} GETs (longest gap {loop.gap:.1f} s)"
          + (f"; {loop.failures[:5]}" if loop.failed else ""))
    for line in role_moves(timeline, pg, keys, offset):
        print(line)
    pauses = pg.pauses(PAUSE_S)
    print(f"every PostgreSQL write pause over {PAUSE_S} s: " + (", ".join(
        f"{p.seconds:.1f} s on {c} during {timeline.where(p.start)}" for c, p in pauses) or "none"))
    print(f"PostgreSQL: {pg.total_acked()} rows acknowledged by {len(pg.segments)} writer runs on "
          f"{', '.join(WRITER_HOSTS)}, {len(lost_rows)} lost" + (f" {lost_rows[:10]}" if lost_rows else ""))
    print(f"Redis through Sentinel: {len(keys.acked)} keys acknowledged, {len(lost_keys)} lost, {len(keys.errors)} "
          f"errors, longest gap {keys.longest_gap():.1f} s")
    cut_where = [f"{node} during {timeline.where(at)}" for at, node in churn.cut_at]
    print(f"editing sessions: {churn.summary()}" + (f"; cut: {', '.join(cut_where)}" if cut_where else ""))
    moved = roles["leader"] != before["leader"]
    print(f"roles: Patroni leader {before['leader']} -> {roles['leader']}"
          + (f" (already patched when the switchover ran: {patched_before(timeline, roles['leader'], before['leader'])})"
             if moved else "")
          + f"; Redis primary {before['redis']} -> {roles['redis']}; VIP {before['vip']} -> {roles['vip']}; "
          f"Patroni members {', '.join(m['name'] + ':' + str(m['role']) for m in (cluster_view(lab) or {}).get('members', []))}")
    ok = (code == 0 and loop.failed == 0 and not lost_rows and not lost_keys and churn.failed_open == 0
          and all(v == "1.1" for v in upgraded.values()))
    print("every goal that must hold held" if ok else "NOT all goals met (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
