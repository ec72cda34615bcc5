"""Backup layer on the lab: pgBackRest into the lab S3 (moto behind TLS), archiving from the
leader, leader-only timers, on-demand backups, the report, and restore.py's refusals.

The lab comes from the ``backup_lab`` fixture (conftest.py: the whole main job, once per
session, under the exclusive lab lock).  Disruptive steps (the switchover) hold the exclusive
lab lock; the helpers here are shared with test_drill_restore.py.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, secrets, ssh, wait_for
from lab.workload import cluster_view, DATA_HOSTS, leader_psql, wait_healthy
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]  # the first test may run the whole main job (backup_lab)


def pgbackrest_info(lab: dict[str, Any], host: str = "data1") -> dict[str, Any]:
    """``pgbackrest info`` as JSON (the stanza's entry) read on ``host``."""
    rc, out = ssh(lab, host, "sudo -u postgres pgbackrest --stanza=onlyoffice --output=json info", timeout=120)
    assert rc == 0, out
    return json.loads(out)[0]


def archive_through_now(lab: dict[str, Any], deadline: float = 120) -> tuple[str, str]:
    """Switch the leader's WAL segment and wait until it is archived: (leader, segment)."""
    view = wait_healthy(lab)
    leader = view["leader"]
    rc, out = leader_psql(lab, leader, "select pg_walfile_name(pg_switch_wal())")
    assert rc == 0, out
    segment = out.strip().splitlines()[-1]
    sql = f"select coalesce(last_archived_wal >= '{segment}', false) from pg_stat_archiver"
    wait_for(f"{segment} archived by {leader}", lambda: leader_psql(lab, leader, sql)[1].strip() == "t", deadline)
    return leader, segment


def test_first_run_converged_and_rerun_changes_nothing(backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    with lab_lock(exclusive=False):
        result = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=backup")
    output = output_of(result)
    assert result.returncode == 0, explain(result)
    assert changed_operations(output) == {}, changed_operations(output)
    lines = report_lines(output)
    for name in DATA_HOSTS:
        assert lines[(name, "backup")].startswith("OK"), lines[(name, "backup")]
    leader = wait_healthy(lab)["leader"]
    assert "last archived WAL" in lines[(leader, "backup")] and "last full" in lines[(leader, "backup")]
    values = secrets(lab)
    for key in ("s3_secret_key", "pgbackrest_cipher_pass"):
        assert values[key] not in output


def test_every_member_has_the_private_config_and_archiving_is_on(backup_lab: dict[str, Any]) -> None:
    lab = backup_lab
    for name in DATA_HOSTS:
        rc, out = ssh(lab, name, "sudo stat -c '%a %U:%G' /etc/pgbackrest/pgbackrest.conf; "
                                 "sudo grep -c -E '^repo1-(cipher-type=aes-256-cbc|s3-uri-style=path|storage-ca-file=)' "
                                 "/etc/pgbackrest/pgbackrest.conf; "
                                 "sudo -u postgres psql -h /var/run/postgresql -XAtqc 'show archive_mode' -c 'show archive_command'")
        assert rc == 0, out
        assert out.splitlines() == ["640 root:postgres", "3", "on", "pgbackrest --stanza=onlyoffice archive-push %p"], out
    info = pgbackrest_info(lab)
    assert info["status"]["code"] == 0 and info["cipher"] == "aes-256-cbc", info["status"]


def test_timer_service_backs_up_on_the_leader_only(backup_lab: dict[str, Any]) -> None:
    lab = backup_lab
    with lab_lock(exclusive=False):
        leader = wait_healthy(lab)["leader"]
        before = {b["label"] for b in pgbackrest_info(lab)["backup"]}
        for name in DATA_HOSTS:
            rc, out = ssh(lab, name, "sudo systemctl start pgbackrest-backup@incr.service && "
                                     "sudo journalctl -u pgbackrest-backup@incr.service -n 3 --no-pager -o cat", timeout=300)
            assert rc == 0, out
            if name != leader:
                assert "not the Patroni leader" in out, out
        new = [b for b in pgbackrest_info(lab)["backup"] if b["label"] not in before]
    assert [b["type"] for b in new] == ["incr"], new
    for name in DATA_HOSTS:
        rc, out = ssh(lab, name, "systemctl is-enabled pgbackrest-full.timer pgbackrest-diff.timer; "
                                 "systemctl is-active pgbackrest-full.timer pgbackrest-diff.timer")
        assert out.split() == ["enabled", "enabled", "active", "active"], out


def test_backup_py_takes_a_differential_and_reports_it(backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    with lab_lock(exclusive=False):
        before = {b["label"] for b in pgbackrest_info(lab)["backup"]}
        result = deploy(pyinfra_cli, "deploys/backup.py", "--data", "backup_type=diff")
    assert result.returncode == 0, explain(result)
    new = [b for b in pgbackrest_info(lab)["backup"] if b["label"] not in before]
    assert [b["type"] for b in new] == ["diff"], new
    line = report_lines(output_of(result))[(wait_healthy(lab)["leader"], "backup")]
    age = re.search(r"last diff (\d+)s ago", line)
    assert line.startswith("OK") and age and int(age[1]) < 60, line
    bad = deploy(pyinfra_cli, "deploys/backup.py", "--data", "backup_type=weekly")
    assert bad.returncode != 0 and "backup_type" in output_of(bad) and "fix:" in output_of(bad)


def test_archiving_follows_the_leader_after_a_switchover(backup_lab: dict[str, Any]) -> None:
    lab = backup_lab
    with lab_lock():
        view = wait_healthy(lab)
        old = view["leader"]
        new = view["sync_standbys"][0]
        rc, out = ssh(lab, old, f"sudo patronictl -c /etc/patroni/config.yml switchover --candidate {shlex.quote(new)} --force",
                      timeout=120)
        assert rc == 0, out
        wait_for(f"{new} to lead", lambda: (v := cluster_view(lab)) and v["leader"] == new, 60)
        leader, segment = archive_through_now(lab)
        assert leader == new
        assert pgbackrest_info(lab, old)["archive"][0]["max"] >= segment
        wait_healthy(lab)


def test_restore_refuses_a_healthy_cluster_and_a_bad_target_before_touching_hosts(
        backup_lab: dict[str, Any], pyinfra_cli) -> None:
    lab = backup_lab
    with lab_lock(exclusive=False):
        before = wait_healthy(lab)
        refused = deploy(pyinfra_cli, "deploys/restore.py")
        bad_time = deploy(pyinfra_cli, "deploys/restore.py", "--data", "restore_target_time=last tuesday",
                          "--data", "restore_force=true")
        after = wait_healthy(lab)
    text = output_of(refused)
    assert refused.returncode != 0 and "restore refused" in text and "restore_force=true" in text, text[-2000:]
    assert "Starting operation" not in text
    text = output_of(bad_time)
    assert bad_time.returncode != 0 and "restore_target_time" in text and "fix:" in text, text[-2000:]
    assert "Starting operation" not in text
    assert (after["leader"], {m["timeline"] for m in after["members"]}) == \
        (before["leader"], {m["timeline"] for m in before["members"]})
