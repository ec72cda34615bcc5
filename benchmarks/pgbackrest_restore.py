"""pgBackRest backup and restore times for a generated dataset.

A pgbench database (``ooha_bench``, ``--scale`` 68 is about 1 GB) is made on the leader,
then a full backup is taken through deploys/backup.py and the whole cluster is rebuilt
with deploys/restore.py (latest, forced).  Prints the dataset size, the backup time, the
restore time (restore.py from start to one leader and streaming replicas, replicas'
re-clone included) and whether every pgbench row came back.  Goal: restore of 1 GB
<= 5 min on the lab.  The bench database is dropped at the end and the cluster is left
healthy.  Needs a converged lab (backup layer); takes the lab's exclusive lock:

    .venv/bin/python benchmarks/pgbackrest_restore.py [--scale 68]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from lab.client import explain, locked_lab, run_pyinfra, ssh
from lab.workload import wait_healthy

DB = "ooha_bench"


def as_postgres(sql: str, database: str = "postgres") -> str:
    return (f"echo {json.dumps(sql)} | sudo -u postgres psql -h /var/run/postgresql -d {database} "
            "-XAtq -v ON_ERROR_STOP=1")


def on_leader(lab: dict, command: str, timeout: float = 3600) -> str:
    leader = wait_healthy(lab, deadline=300)["leader"]
    rc, out = ssh(lab, leader, command, timeout=timeout)
    if rc != 0:
        raise RuntimeError(f"{leader}: {command[:80]}...: {out[-1000:]}")
    return out.strip()


def timed(what: str, *args: str) -> float:
    start = time.monotonic()
    result = run_pyinfra("-y", "inventories/lab.py", *args, timeout=3600)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{explain(result)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=68, help="pgbench scale (68 is about 1 GB)")
    args = parser.parse_args()
    with locked_lab() as lab:
        try:
            on_leader(lab, as_postgres(f"drop database if exists {DB}") + " && " + as_postgres(f"create database {DB}"))
            start = time.monotonic()
            on_leader(lab, f"sudo -u postgres /usr/lib/postgresql/15/bin/pgbench -h /var/run/postgresql -i -q "
                           f"-s {args.scale} {DB} 2>&1 | tail -n 2")
            generate = time.monotonic() - start
            size = int(on_leader(lab, as_postgres(f"select pg_database_size('{DB}')")))
            rows = int(on_leader(lab, as_postgres("select count(*) from pgbench_accounts", DB)))
            print(f"dataset: pgbench scale {args.scale}, {size / 2**30:.2f} GiB, {rows} accounts "
                  f"(generated in {generate:.0f} s)", flush=True)

            backup = timed("backup.py", "deploys/backup.py", "--data", "backup_type=full")
            info = json.loads(on_leader(lab, "sudo -u postgres pgbackrest --stanza=onlyoffice --output=json info"))[0]
            last = info["backup"][-1]
            print(f"full backup (deploys/backup.py): {backup:.0f} s; pgBackRest {last['timestamp']['stop'] - last['timestamp']['start']} s, "
                  f"{last['info']['size'] / 2**30:.2f} GiB -> {last['info']['repository']['delta'] / 2**20:.0f} MiB in the repository",
                  flush=True)

            restore = timed("restore.py", "deploys/restore.py", "--data", "restore_force=true")
            wait_healthy(lab, deadline=600)
            back = int(on_leader(lab, as_postgres("select count(*) from pgbench_accounts", DB)))
            print(f"restore (deploys/restore.py, latest, to one leader + 2 streaming replicas): {restore:.0f} s "
                  f"(goal <= 300 s for 1 GB); pgbench_accounts {back}/{rows} rows", flush=True)
            return 0 if back == rows else 1
        finally:
            try:
                on_leader(lab, as_postgres(f"drop database if exists {DB}"))
            finally:
                wait_healthy(lab, deadline=600)


if __name__ == "__main__":
    sys.exit(main())
