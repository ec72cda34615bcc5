"""PostgreSQL leader loss, measured from the client side.

Each run: a writer on a Document Server host inserts numbered rows through the stable
endpoint (HAProxy 127.0.0.1:5432), one connection per row; the leader's host is stopped
(`python -m lab stop`); once writes succeed again the writer stops, the acknowledged ids are
compared with the table, and the host is started and must rejoin as a streaming replica.
Prints per run the write-unavailability window (last acknowledged write before the stop
to the first after it) and the rows lost (acknowledged but missing), then the median.
Goal: <= 15 s and 0 lost.  Needs a converged lab; takes the lab's exclusive lock:

    .venv/bin/python benchmarks/postgres_failover.py [--runs 3] [--client ds1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from lab.client import lab_cli, locked_lab, secrets, wait_for
from lab.workload import PgWriter, cluster_view, unavailability_window, wait_healthy


def one_run(lab: dict, client: str, number: int) -> tuple[float, int, str]:
    """(window seconds, rows lost, "old -> new") for one leader loss."""
    before = wait_healthy(lab, deadline=240)
    old = before["leader"]
    writer = PgWriter(lab, host=client)
    writer.prepare(secrets(lab)["postgres_ds_password"])
    stopped = False
    try:
        writer.start(max_seconds=300)
        wait_for("rows before the failure", lambda: len(writer.acked()) >= 20, 60)
        stop_at = time.time()
        result = lab_cli("stop", old, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"lab stop {old}: {result.stderr.strip()}")
        stopped = True
        others = tuple(n for n in ("data1", "data2", "data3") if n != old)
        view = wait_for("a new leader", lambda: (v := cluster_view(lab, others)) and v["leader"] not in (None, old) and v, 120)
        wait_for("writes after the failover", lambda: writer.acked_after(stop_at) >= 10 and
                 any(kind == "ok" and at > stop_at for kind, _, at in writer.events()[-5:]), 120)
        events = writer.stop()
        acked = {i for kind, i, _ in events if kind == "ok"}
        lost = len(acked - writer.present())
        window = unavailability_window(events, stop_at)
        return window, lost, f"{old} -> {view['leader']} ({len(acked)} rows acknowledged)"
    finally:
        writer.cleanup()
        if stopped:
            lab_cli("start", old, timeout=300)
            wait_healthy(lab, deadline=240)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", default="ds1", help="Document Server host that runs the writer")
    args = parser.parse_args()
    windows, losses = [], []
    with locked_lab() as lab:
        for number in range(1, args.runs + 1):
            window, lost, what = one_run(lab, args.client, number)
            windows.append(window)
            losses.append(lost)
            print(f"run {number}: leader {what}: write unavailability {window:.1f} s, rows lost {lost}", flush=True)
    print(f"postgres leader loss (stop host), {args.runs} runs: median write unavailability "
          f"{statistics.median(windows):.1f} s (goal <= 15 s), rows lost {sum(losses)} (goal 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
