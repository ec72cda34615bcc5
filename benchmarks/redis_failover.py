"""Client-side write unavailability when the Redis primary's host is lost (goal <= 10 s).

    .venv/bin/python benchmarks/redis_failover.py [--runs 3]

(The script takes the exclusive lab lock itself, so plain `.venv/bin/python
benchmarks/redis_failover.py` is enough; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)  Each run: a client on this machine discovers the primary through the
three Sentinels (redis-py, like Document Server's ioredis with ``sentinels``) and SETs
numbered keys about 20 times a second; the primary's host is stopped with
``python -m lab stop``; the window is the longest gap between two acknowledged writes;
every acknowledged key is then read back from the new primary ("writes lost"); the host
is started again and the run ends once it is a replica of the new primary with its link
up.  Prints one line per run, then the median.  Settings that shape the figure:
redis_down_after_ms / redis_failover_timeout_ms in ooha/layers/redis.py.
The client loop and the run are ``lab.workload.Writer`` / ``primary_loss`` (the Redis drill
in tests/integration/test_drill_redis.py runs the same).
"""

from __future__ import annotations

import argparse
import statistics
import sys

from lab.client import lab_lock, lab_state
from lab.workload import primary_loss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    state = lab_state()
    with lab_lock(exclusive=True):
        runs = []
        for index in range(1, args.runs + 1):
            run = primary_loss(state, f"run{index}")
            runs.append(run)
            print(f"run {index}: primary {run.old} stopped -> {run.new} promoted; write unavailability "
                  f"{run.window:.2f} s; writes acknowledged {run.acked}, lost {run.lost}; "
                  f"{run.old} back as replica {run.rejoin_seconds:.1f} s after start", flush=True)
    windows = [r.window for r in runs]
    print(f"median write unavailability over {len(runs)} run(s): {statistics.median(windows):.2f} s "
          f"(goal <= 10 s); writes lost: {sum(r.lost for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
