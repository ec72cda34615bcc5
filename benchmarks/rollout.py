"""A full-length Document Server rollout and rollback on the lab, measured from outside.

`deploys/patch.py` from the deployed tag to the newer one with production settings (soak
`--soak` s, default 60; drain bound `--drain` s, default 120), then `deploys/rollback.py`,
while this machine runs idempotent GETs through the front door and editors come and go on
every node (each session held `--hold` s, shorter than the drain bound).  Prints per job the
total time, the per-node phase times the driver printed, the failed requests and the editing
sessions cut; the goal is 0 failed and 0 cut.  Needs a converged lab; takes the exclusive lock:

    .venv/bin/python benchmarks/rollout.py [--soak 60] [--drain 120] [--hold 20]
"""

from __future__ import annotations

import argparse
import sys
import time

from lab.client import PyinfraRun, lab_lock, lab_state
from lab.registry import DS_VERSIONS
from lab.workload import Loop, SessionChurn

PATHS = ["/healthcheck", "/healthcheck?shardkey=rollout-bench-doc"]


def measured(lab: dict, label: str, args: list[str], hold: float) -> bool:
    """Run one rollout job under load; print its figures; True when it ended 0 with 0 failed/cut."""
    started = time.monotonic()
    with Loop(lab, PATHS, timeout=10.0) as loop, SessionChurn(lab, hold=hold, every=2.0) as churn:
        run = PyinfraRun("-y", "inventories/lab.py", *args)
        code = run.wait(3600)
    took = time.monotonic() - started
    print(f"{label}: exit {code} in {took:.0f} s; {loop.failed} failed of {loop.ok + loop.failed} GETs through the front door; "
          f"{churn.summary()}")
    for line in run.lines:
        if line.startswith(("rollout ", "phase times", "sessions ended")) or " FAILED" in line:
            print(f"    {line}")
    return code == 0 and loop.failed == 0 and churn.cut == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soak", type=int, default=60)
    parser.add_argument("--drain", type=int, default=120)
    parser.add_argument("--hold", type=float, default=20.0)
    args = parser.parse_args()
    deployed, newer = DS_VERSIONS[0][0], DS_VERSIONS[1][0]
    common = ["--data", f"rollout_soak_seconds={args.soak}", "--data", f"ds_drain_seconds={args.drain}"]
    with lab_lock():
        lab = lab_state()
        ok = measured(lab, f"patch {deployed} -> {newer}", ["deploys/patch.py", "--data", f"ds_version={newer}", *common], args.hold)
        ok = measured(lab, f"rollback {newer} -> {deployed}", ["deploys/rollback.py", *common], args.hold) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
