"""Disaster recovery: the RTO of each scenario, blank host(s) -> healthy and back in every quorum.

    .venv/bin/python benchmarks/dr_rto.py [--scenarios ds,lb,data,az,site]

(Takes the exclusive lab lock itself; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)
Scenarios, each on the converged lab, each ending converged:
- ds:   a Document Server host recreated blank (``python -m lab recreate ds2``), then the main job;
- lb:   the load balancer holding the floating address recreated blank, then the main job;
- data: the PostgreSQL leader's data host recreated blank, then the main job;
- az:   every host of the VIP holder's AZ recreated blank, then the main job;
- site: every host recreated blank, then ``deploys/rebuild_site.py`` (PostgreSQL from pgBackRest).
RTO = from the moment the host(s) are gone until the command that rebuilds them has exited 0
with every report line OK (every check waits for its quorum: etcd members, Patroni streaming,
Sentinels agreeing, RabbitMQ nodes, the VIP). Also printed: how long the blank hosts took to
come up (the lab's part, a VM replacement in production) and whether a second run of the main
job changed nothing. Goals: host <= 3 min, AZ <= 10 min, site <= 15 min.
The drills with clients running and data checks are tests/integration/test_drill_rebuild_*.py,
test_drill_lost_az.py and test_drill_site.py; this script only times the rebuilds.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lab.client import (changed_operations, explain, host_entry, lab_cli, locked_lab, output_of,
                        report_lines, run_pyinfra, TARGETS, wait_for)
from lab.workload import cluster_view, healthy, vip_holder

SCENARIOS = ("ds", "lb", "data", "az", "site")
GOALS = {"ds": 180, "lb": 180, "data": 180, "az": 600, "site": 900}


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
    if scenario == "az":
        az = host_entry(lab, holder)["az"]
        return [name for name in TARGETS if host_entry(lab, name)["az"] == az]
    return list(TARGETS)


def one(lab: dict[str, Any], scenario: str) -> str:
    """Lose the scenario's hosts, rebuild them, return the figure line."""
    victims = _victims(lab, scenario)
    command = "deploys/rebuild_site.py" if scenario == "site" else "deploys/ha.py"
    lost = time.monotonic()
    lab_cli("recreate", *victims, timeout=900, check=True)
    blank = time.monotonic()
    result = run_pyinfra("-y", "inventories/lab.py", command, timeout=1800)
    done = time.monotonic()
    lines = report_lines(output_of(result))
    if result.returncode != 0 or not lines or not all(line.startswith("OK") for line in lines.values()):
        raise SystemExit(f"{scenario}: the rebuild failed:\n{explain(result)}")
    rerun = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1200)
    changed = changed_operations(output_of(rerun)) if rerun.returncode == 0 else {"(rerun failed)": "-"}
    rto = done - lost
    return (f"{scenario:<5} lost {','.join(victims)}: blank hosts up in {blank - lost:.0f} s, "
            f"{command.split('/')[-1]} {done - blank:.0f} s, RTO {rto:.0f} s (goal <= {GOALS[scenario]} s"
            f"{', MISSED' if rto > GOALS[scenario] else ''}); rerun changed {len(changed)} operation(s)")


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
