"""Backup drills on the lab, under the exclusive lab lock, each leaving a healthy cluster (one
leader, two streaming replicas, HAProxy :5432 on ds1 answering):

- point in time: rows written, backup, more rows, note the time, more rows; restore to that
  time: exactly the rows written before it are there;
- total loss: every PostgreSQL host crashes and loses its data directory while a client
  writes; restore to latest: every row acknowledged before the last archived WAL is there;
- S3 unreachable: validation reports it; when S3 returns, archiving catches up by itself.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from lab.client import explain, host_entry, lab_lock, output_of, report_lines, secrets, ssh, wait_for
from lab.workload import DATA_HOSTS, leader_psql, PgWriter, TABLE, wait_healthy
from tests.integration.deploytools import deploy
from tests.integration.test_backup import archive_through_now

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

DATA_DIR = "/var/lib/postgresql/15/onlyoffice"
S3_ADDRESS, S3_PORT = "198.18.20.10", 9000
DRILL_TAG = "ooha-drill-s3"


def ds1_sql(writer: PgWriter, sql: str) -> str:
    """Run SQL on ds1 through HAProxy 127.0.0.1:5432 as the DS role; its output."""
    rc, out = ssh(writer.lab, writer.host, writer._psql(sql, timeout=60), timeout=90)
    assert rc == 0, out
    return out.strip()


def insert(writer: PgWriter, first: int, last: int) -> None:
    ds1_sql(writer, f"insert into {TABLE} (run, id) select '{writer.run}', g from generate_series({first}, {last}) g")


def restore(pyinfra_cli, *data: str) -> subprocess.CompletedProcess[str]:
    args = [item for value in data for item in ("--data", value)]
    return deploy(pyinfra_cli, "deploys/restore.py", *args)


def leave_healthy(lab: dict[str, Any], pyinfra_cli) -> None:
    """Whatever a drill left: if the cluster is not healthy within a minute, it is rebuilt
    from the repository (latest; restore.py unmasks and starts Patroni itself)."""
    try:
        wait_healthy(lab, deadline=60)
    except AssertionError:
        result = restore(pyinfra_cli, "restore_force=true")
        assert result.returncode == 0, explain(result)
        wait_healthy(lab)


def test_point_in_time_restore_keeps_exactly_the_rows_written_before_the_target(
        backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    writer = PgWriter(lab, host="ds1")
    with lab_lock():
        try:
            wait_healthy(lab)
            writer.prepare(secrets(lab)["postgres_ds_password"])
            insert(writer, 1, 50)
            backup = deploy(pyinfra_cli, "deploys/backup.py", "--data", "backup_type=diff")
            assert backup.returncode == 0, explain(backup)
            insert(writer, 51, 100)
            target = ds1_sql(writer, "select to_char(clock_timestamp() at time zone 'UTC', "
                                     "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            # The next rows must commit strictly after the target: wait until the server's clock passed it.
            wait_for("the server clock to pass the target", lambda: ds1_sql(
                writer, f"select clock_timestamp() > '{target}'::timestamptz + interval '200 milliseconds'") == "t", 10, interval=0.2)
            insert(writer, 101, 150)
            archive_through_now(lab)
            assert writer.present() == set(range(1, 151))

            result = restore(pyinfra_cli, f"restore_target_time={target}", "restore_force=true")
            assert result.returncode == 0, explain(result)
            view = wait_healthy(lab)
            present = writer.present()
            assert present == set(range(1, 101)), f"after restore to {target}: {sorted(present)[:5]}..{sorted(present)[-5:]}"
            lines = report_lines(output_of(result))
            assert all(lines[(n, "postgres")].startswith("OK") for n in DATA_HOSTS), lines
            print(f"\nrestored to {target}: rows 1-100 present, 101-150 gone; leader {view['leader']}, "
                  f"timeline {view['members'][0]['timeline']}")
        finally:
            writer.cleanup()
            leave_healthy(lab, pyinfra_cli)


def test_forced_restore_the_repository_cannot_serve_leaves_every_member_running(
        backup_lab: dict[str, Any], pyinfra_cli) -> None:
    """restore_host's repository check fails (target before the oldest backup): no member's
    Patroni is stopped or masked, the cluster keeps its leader and timeline.  (The check's
    OperationError ends the whole run; the other members' gate on restore_host being active
    matters for a failing shell step, such as the restore script, which fails only that host.)"""
    lab = backup_lab
    with lab_lock():
        try:
            before = wait_healthy(lab)
            result = restore(pyinfra_cli, "restore_target_time=2020-01-01T00:00:00Z", "restore_force=true")
            assert result.returncode != 0 and "is before the end of the oldest backup" in output_of(result), \
                explain(result)
            for name in DATA_HOSTS:
                rc, out = ssh(lab, name, "systemctl is-active patroni; systemctl is-enabled patroni")
                assert out.split() == ["active", "enabled"], f"{name}: {out}"
            after = wait_healthy(lab, deadline=30)
            assert (after["leader"], {m["timeline"] for m in after["members"]}) == \
                (before["leader"], {m["timeline"] for m in before["members"]})
        finally:
            for name in DATA_HOSTS:
                ssh(lab, name, "sudo systemctl unmask --runtime patroni.service; sudo systemctl start patroni.service")
            leave_healthy(lab, pyinfra_cli)


def _lose(lab: dict[str, Any], name: str) -> None:
    """Crash a member's PostgreSQL and Patroni (SIGKILL) and delete its data directory."""
    rc, out = ssh(lab, name, "sudo systemctl mask --runtime patroni.service && "
                             "sudo systemctl kill --kill-whom=all -s SIGKILL patroni.service; "
                             "for i in $(seq 20); do pgrep -u postgres -x postgres >/dev/null || break; sleep 0.5; done; "
                             f"sudo find {DATA_DIR} -mindepth 1 -delete && echo lost", timeout=60)
    assert rc == 0 and "lost" in out, out


def test_total_loss_restore_to_latest_keeps_every_row_acknowledged_before_the_last_archived_wal(
        backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    writer = PgWriter(lab, host="ds1")
    with lab_lock():
        try:
            wait_healthy(lab)
            writer.prepare(secrets(lab)["postgres_ds_password"])
            writer.start(max_seconds=240)
            wait_for("20 rows acknowledged", lambda: len(writer.acked()) >= 20, 60)
            switched_at = time.time()
            _, segment = archive_through_now(lab)
            wait_for("10 more rows after the archived segment", lambda: writer.acked_after(switched_at) >= 10, 60)
            for name in DATA_HOSTS:
                _lose(lab, name)
            events = writer.stop()

            result = restore(pyinfra_cli)
            assert result.returncode == 0, explain(result)
            wait_healthy(lab)
            present = writer.present()
            acked = [(i, at) for kind, i, at in events if kind == "ok"]
            safe = {i for i, at in acked if at < switched_at}
            missing = safe - present
            assert safe and not missing, f"rows acknowledged before {segment} was archived are missing: {sorted(missing)}"
            lost = [i for i, _ in acked if i not in present]
            kept = [at for i, at in acked if i in present]
            rpo = max(at for _, at in acked) - max(kept)
            print(f"\ntotal loss: {len(acked)} rows acknowledged, {len(safe)} before {segment} was archived (all "
                  f"present), {len(lost)} lost (not yet archived; acknowledged writes lost: {rpo:.1f} s)")
        finally:
            writer.cleanup()
            leave_healthy(lab, pyinfra_cli)


def _s3_rules(lab: dict[str, Any]) -> list[list[str]]:
    return [["DOCKER-USER", "-s", f"{host_entry(lab, name)['address']}/32", "-d", f"{S3_ADDRESS}/32", "-p", "tcp",
             "--dport", str(S3_PORT), "-m", "comment", "--comment", DRILL_TAG, "-j", "REJECT", "--reject-with", "tcp-reset"]
            for name in DATA_HOSTS]


def _cut_s3(lab: dict[str, Any]) -> None:
    """Data hosts -> S3 refused on this machine's forwarding path (like a firewall change)."""
    for rule in _s3_rules(lab):
        subprocess.run(["iptables", "-I", rule[0], "1", *rule[1:]], check=True, timeout=30)


def _heal_s3(lab: dict[str, Any]) -> None:
    for rule in _s3_rules(lab):
        while subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30).returncode == 0:
            pass


def test_s3_outage_is_reported_and_archiving_catches_up_by_itself(backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    with lab_lock():
        try:
            leader = wait_healthy(lab)["leader"]
            _cut_s3(lab)
            rc, out = leader_psql(lab, leader, "create table if not exists ooha_drill_s3 (at timestamptz default now()); "
                                               "insert into ooha_drill_s3 default values; "
                                               "select pg_walfile_name(pg_switch_wal())")
            assert rc == 0, out
            segment = out.strip().splitlines()[-1]
            # pgBackRest retries a refused connection for minutes: the segment waits, unarchived.
            archived = f"select coalesce(last_archived_wal >= '{segment}', false) from pg_stat_archiver"
            assert leader_psql(lab, leader, archived)[1].strip() == "f"

            down = deploy(pyinfra_cli, "deploys/validate.py", "--data", "layers=backup")
            lines = report_lines(output_of(down))
            assert down.returncode != 0, explain(down)
            for name in DATA_HOSTS:
                assert lines[(name, "backup")].startswith("FAIL") and "repository unreachable" in lines[(name, "backup")], lines
            assert "waiting (archive lag" in lines[(leader, "backup")], lines[(leader, "backup")]
            assert leader_psql(lab, leader, archived)[1].strip() == "f"

            _heal_s3(lab)
            healed_at = time.time()
            wait_for(f"{segment} archived after S3 returned", lambda: leader_psql(lab, leader, archived)[1].strip() == "t", 180)
            caught_up = time.time() - healed_at
            up = deploy(pyinfra_cli, "deploys/validate.py", "--data", "layers=backup")
            assert up.returncode == 0, explain(up)
            print(f"\nS3 outage: validation FAIL on {len(DATA_HOSTS)} hosts; archiving caught up {caught_up:.0f} s "
                  "after S3 returned, no manual step")
        finally:
            _heal_s3(lab)
            leader_psql(lab, wait_healthy(lab)["leader"], "drop table if exists ooha_drill_s3")
            leave_healthy(lab, pyinfra_cli)
