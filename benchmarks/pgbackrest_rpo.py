"""RPO of a total loss of the PostgreSQL hosts, restored from the pgBackRest repository.

Each run: a writer on a Document Server host inserts numbered rows through HAProxy
(127.0.0.1:5432), one acknowledged commit at a time; after a random 20-70 s every
PostgreSQL member is crashed (SIGKILL) and its data directory deleted; deploys/restore.py
rebuilds the cluster to the latest archived state.  Prints per run the rows lost and the
RPO: seconds between the last acknowledged write that survived and the last acknowledged
write before the loss.  WAL is archived at the latest after ``archive_timeout`` (30 s in
the lab), so the goal is RPO <= 60 s.  Leaves a healthy cluster; takes the lab's lock:

    .venv/bin/python benchmarks/pgbackrest_rpo.py [--runs 2] [--client ds1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from lab.client import explain, locked_lab, run_pyinfra, secrets, ssh, wait_for
from lab.workload import DATA_HOSTS, PgWriter, wait_healthy

DATA_DIR = "/var/lib/postgresql/15/onlyoffice"


def lose_everything(lab: dict) -> None:
    """Crash every member (Patroni and PostgreSQL, SIGKILL) and delete its data directory."""
    for name in DATA_HOSTS:
        rc, out = ssh(lab, name, "sudo systemctl mask --runtime patroni.service && "
                                 "sudo systemctl kill --kill-whom=all -s SIGKILL patroni.service; "
                                 "for i in $(seq 20); do pgrep -u postgres -x postgres >/dev/null || break; sleep 0.5; done; "
                                 f"sudo find {DATA_DIR} -mindepth 1 -delete", timeout=60)
        if rc != 0:
            raise RuntimeError(f"{name}: {out}")


def one_run(lab: dict, client: str) -> tuple[float, int, int, float]:
    """(RPO seconds, rows lost, rows acknowledged, restore seconds) for one total loss."""
    wait_healthy(lab, deadline=300)
    writer = PgWriter(lab, host=client)
    writer.prepare(secrets(lab)["postgres_ds_password"])
    try:
        writer.start(max_seconds=200)
        wait_for("rows before the loss", lambda: len(writer.acked()) >= 20, 60)
        time.sleep(random.uniform(20, 70))  # the loss comes at a random point of the archive_timeout cycle
        lose_everything(lab)
        events = writer.stop()
        start = time.monotonic()
        result = run_pyinfra("-y", "inventories/lab.py", "deploys/restore.py", timeout=3600)
        restore = time.monotonic() - start
        if result.returncode != 0:
            raise RuntimeError(f"restore.py failed:\n{explain(result)}")
        wait_healthy(lab, deadline=600)
        present = writer.present()
        acked = [(i, at) for kind, i, at in events if kind == "ok"]
        kept = [at for i, at in acked if i in present]
        lost = [i for i, _ in acked if i not in present]
        last_acked = max(at for _, at in acked)
        rpo = last_acked - max(kept) if kept else float("inf")
        return rpo, len(lost), len(acked), restore
    finally:
        writer.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--client", default="ds1")
    args = parser.parse_args()
    rpos = []
    with locked_lab() as lab:
        try:
            for number in range(1, args.runs + 1):
                rpo, lost, acked, restore = one_run(lab, args.client)
                rpos.append(rpo)
                print(f"run {number}: {acked} rows acknowledged, {lost} lost, RPO {rpo:.1f} s, "
                      f"restore {restore:.0f} s", flush=True)
        finally:
            for name in DATA_HOSTS:
                ssh(lab, name, "sudo systemctl unmask --runtime patroni.service")
            try:
                wait_healthy(lab, deadline=120)
            except AssertionError:
                run_pyinfra("-y", "inventories/lab.py", "deploys/restore.py", "--data", "restore_force=true", timeout=3600)
                wait_healthy(lab, deadline=600)
    print(f"total loss of the PostgreSQL hosts, {args.runs} runs: RPO median {statistics.median(rpos):.1f} s, "
          f"max {max(rpos):.1f} s (goal <= 60 s, archive_timeout 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
