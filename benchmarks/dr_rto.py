"""Disaster recovery: the RTO of each scenario, blank host(s) -> healthy and back in every quorum.

    .venv/bin/python benchmarks/dr_rto.py [--scenarios ds,lb,data,redis,moved,az,site]

(Takes the exclusive lab lock itself; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)
Scenarios, each on the converged lab, each ending converged:
- ds:   a Document Server host recreated blank (``python -m lab recreate ds2``), then the main job;
- lb:   the load balancer holding the floating address recreated blank, then the main job;
- data: the PostgreSQL leader's data host recreated blank, then the main job;
- redis: the Redis primary's data host recreated blank, then the main job;
- moved: a data host that leads nothing replaced blank at a NEW address of its AZ
         (``python -m lab recreate HOST --address A``), then the main job; then put back blank
         at its topology address, then the main job again (both rebuilds timed);
- az:   every host of the VIP holder's AZ recreated blank, then the main job;
- site: every host recreated blank, then ``deploys/rebuild_site.py`` (PostgreSQL from pgBackRest).
RTO = from the moment the host(s) are gone until the command that rebuilds them has exited 0
with every report line OK (every check waits for its quorum: etcd members, Patroni streaming,
Sentinels agreeing, RabbitMQ nodes, the VIP). Also printed: how long the blank hosts took to
come up (the lab's part, a VM replacement in production) and whether a second run of the main
job changed nothing. Goals: host <= 3 min, AZ <= 10 min, site <= 15 min.
The drills with clients running and data checks are tests/integration/test_drill_lost_az.py
(one AZ lost at once: the VIP holder, a DS host with its files, the PostgreSQL leader's and the
Redis primary's host, that one at a new address and back), test_drill_site.py and
test_drill_rebuild_ds.py (a restarted DS host is never restored over); this script times each
single-host loss the lost-AZ drill folds together.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lab.client import (free_address_in_az, address_of, changed_operations, explain, host_entry, hosts_in, lab_cli, lab_state, locked_lab,
                        output_of, report_lines, run_pyinfra, TARGETS, wait_for)
from lab.workload import cluster_view, healthy, redis_hosts, sentinels_primary, vip_holder

SCENARIOS = ("ds", "lb", "data", "redis", "moved", "az", "site")
GOALS = {"ds": 180, "lb": 180, "data": 180, "redis": 180, "moved": 180, "az": 600, "site": 900}


def _redis_primary_host(lab: dict[str, Any]) -> str:
    """The data host whose Redis the Sentinels name primary (all agreeing)."""
    primary = wait_for("one primary named by the Sentinels",
                       lambda: next(iter(p)) if len(p := sentinels_primary(lab)) == 1 else None, 60, interval=0.5)
    return redis_hosts(lab)[primary]


def _idle_data_host(lab: dict[str, Any]) -> str:
    """A data host that leads nothing: not the Patroni leader, not the Redis primary (last first)."""
    view = wait_for("a healthy Patroni cluster", lambda: v if healthy(v := cluster_view(lab)) else None, 180)
    busy = {view["leader"], _redis_primary_host(lab)}
    return next(h for h in reversed(hosts_in(lab, "postgres")) if h not in busy)


def _victims(lab: dict[str, Any], scenario: str) -> list[str]:
    """The hosts a scenario loses, chosen from the lab's current state."""
    if scenario == "ds":
        return ["ds2"]
    holder = wait_for("one LB holding the VIP", lambda: vip_holder(lab), 30, interval=0.5, tolerate=(Exception,))
    if scenario == "lb":
        return [holder]
    if scenario == "data":
        view = wait_for("a healthy Patroni cluster", lambda: v if healthy(v := cluster_view(lab)) else None, 180)
        return [view["leader"]]
    if scenario == "redis":
        return [_redis_primary_host(lab)]
    if scenario == "moved":
        return [_idle_data_host(lab)]
    if scenario == "az":
        az = host_entry(lab, holder)["az"]
        return [name for name in TARGETS if host_entry(lab, name)["az"] == az]
    return list(TARGETS)


def _rebuild(scenario: str, recreate: list[str]) -> tuple[float, float]:
    """``python -m lab recreate RECREATE...`` then the scenario's rebuild command, which must exit 0
    with every report line OK; (blank hosts up s, rebuild s)."""
    command = "deploys/rebuild_site.py" if scenario == "site" else "deploys/ha.py"
    lost = time.monotonic()
    lab_cli("recreate", *recreate, timeout=900, check=True)
    blank = time.monotonic()
    result = run_pyinfra("-y", "inventories/lab.py", command, timeout=1800)
    done = time.monotonic()
    lines = report_lines(output_of(result))
    if result.returncode != 0 or not lines or not all(line.startswith("OK") for line in lines.values()):
        raise SystemExit(f"{scenario}: the rebuild failed:\n{explain(result)}")
    return blank - lost, done - blank


def one(lab: dict[str, Any], scenario: str) -> str:
    """Lose the scenario's hosts, rebuild them, return the figure line."""
    victims = _victims(lab, scenario)
    command = "deploys/rebuild_site.py" if scenario == "site" else "deploys/ha.py"
    back = ""
    if scenario == "moved":
        original = address_of(lab, victims[0])
        new = free_address_in_az(lab, original)
        try:
            up_s, rebuild_s = _rebuild(scenario, [victims[0], "--address", new])
        except BaseException:
            # Leave the lab as it began: the host at its topology address, converged.
            lab_cli("recreate", victims[0], "--address", original, timeout=900)
            run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1800)
            raise
    else:
        up_s, rebuild_s = _rebuild(scenario, victims)
    rerun = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1200)
    changed = changed_operations(output_of(rerun)) if rerun.returncode == 0 else {"(rerun failed)": "-"}
    if scenario == "moved":
        back_up_s, back_s = _rebuild(scenario, [victims[0], "--address", original])
        back = f"; back at {original}: blank in {back_up_s:.0f} s, ha.py {back_s:.0f} s"
        victims = [f"{victims[0]} ({original} -> {new})"]
        lab.update(lab_state())
    rto = up_s + rebuild_s
    return (f"{scenario:<5} lost {','.join(victims)}: blank hosts up in {up_s:.0f} s, "
            f"{command.split('/')[-1]} {rebuild_s:.0f} s, RTO {rto:.0f} s (goal <= {GOALS[scenario]} s"
            f"{', MISSED' if rto > GOALS[scenario] else ''}); rerun changed {len(changed)} operation(s){back}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, in this order: {','.join(SCENARIOS)}")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    with locked_lab() as lab:
        for scenario in wanted:
            print(one(lab, scenario), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
