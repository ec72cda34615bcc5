"""Time the main job on the lab: a run (cold when the lab is fresh) and a no-op rerun.

    .venv/bin/python benchmarks/deploy_times.py [--runs N]

Prints wall-clock seconds and how many operations changed something in each run, so
a reader can tell a cold first run (many changes) from a warm one (none).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
ROW = re.compile(r"^\s*(?P<op>.+?)\s{2,}\d+\s+(?P<success>\d+|-)\s+(?P<error>\d+|-)\s+(?:\d+|-)\s*$")


def run_once(timeout: float) -> tuple[float, int, int, int]:
    """One `pyinfra -y inventories/lab.py deploys/ha.py`: (seconds, exit code, changed ops, changed op-hosts)."""
    started = time.monotonic()
    result = subprocess.run(
        [PYINFRA, "-y", "inventories/lab.py", "deploys/ha.py"],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYINFRA_PROGRESS": "off"},
    )
    seconds = time.monotonic() - started
    table = (result.stdout + result.stderr).split("--> Results:", 1)[-1]
    ops = hosts = 0
    for line in table.splitlines():
        match = ROW.match(line)
        if match and match["success"] != "-" and match["op"].strip() not in ("Operation", "Grand total"):
            ops += 1
            hosts += int(match["success"])
    return seconds, result.returncode, ops, hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs in a row (default 2: first + no-op rerun)")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    failed = False
    print(f"{'run':<14} {'seconds':>8} {'exit':>5} {'changed ops':>12} {'changed op-hosts':>17}")
    for index in range(args.runs):
        seconds, code, ops, hosts = run_once(args.timeout)
        label = "first" if index == 0 else f"rerun {index}"
        print(f"{label:<14} {seconds:>8.1f} {code:>5} {ops:>12} {hosts:>17}", flush=True)
        failed = failed or code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
