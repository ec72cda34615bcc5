"""Time file backups and restores on the lab (restic to the lab S3), and the Docker config restart.

    .venv/bin/python benchmarks/filebackup_times.py [--runs 3] [--host ds1]

Prints, as medians over --runs:
* a backup (``systemctl start ooha-filebackup.service``: backup + retention) of HOST;
* a restore of HOST's latest snapshot (``deploys/restore_files.py``, including pyinfra's
  connect and plan);
* the size of HOST's backup set and of its repository in S3.
Needs the filebackup layer deployed (``--data layers=filebackup``).  Reads and rewrites only
HOST's own files (a restore writes the same bytes back).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from inventories.labstate import load_lab_state
from lab.client import run_pyinfra, ssh


def timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--host", default="ds1")
    args = parser.parse_args()
    state = load_lab_state()

    def backup() -> None:
        rc, out = ssh(state, args.host, "sudo systemctl start ooha-filebackup.service", timeout=600)
        if rc != 0:
            raise SystemExit(f"backup failed on {args.host}: {out[-500:]}")

    def restore() -> None:
        result = run_pyinfra("-y", "inventories/lab.py", "deploys/restore_files.py", "--data", f"restore_host={args.host}",
                             timeout=600)
        if result.returncode != 0:
            raise SystemExit(f"restore failed: {(result.stdout + result.stderr)[-800:]}")

    backups = [timed(backup) for _ in range(args.runs)]
    restores = [timed(restore) for _ in range(args.runs)]
    _, stats = ssh(state, args.host, "sudo ooha-filebackup restic stats --json latest --host " + args.host, timeout=600)
    _, raw = ssh(state, args.host, "sudo ooha-filebackup restic stats --json --mode raw-data", timeout=600)
    set_bytes = json.loads(stats.strip().splitlines()[-1]).get("total_size", 0) if "{" in stats else 0
    repo_bytes = json.loads(raw.strip().splitlines()[-1]).get("total_size", 0) if "{" in raw else 0
    print(f"file backup on {args.host} (restic 0.14 -> lab S3), {args.runs} runs each:")
    print(f"  backup + retention (systemctl start ooha-filebackup.service): median {statistics.median(backups):.1f} s "
          f"(min {min(backups):.1f}, max {max(backups):.1f})")
    print(f"  restore latest into place (deploys/restore_files.py, incl. pyinfra connect): median {statistics.median(restores):.1f} s "
          f"(min {min(restores):.1f}, max {max(restores):.1f})")
    print(f"  backup set {set_bytes / 1024:.1f} KiB; repository data {repo_bytes / 1024:.1f} KiB (deduplicated and encrypted; restic 0.14 does not compress)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
