"""File backups (restic to the lab S3) on the DS and LB hosts, and the restore path.

A marker written into ds1's ``onlyoffice-data`` volume is backed up by the systemd
service, deleted, restored by ``deploys/restore_files.py`` and comes back with the same
content; the repository objects in S3 never hold it in clear (restic encrypts).  The
timer is enabled on every host, a rerun changes nothing, and bad inputs stop before any
host is touched.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from lab.services import s3_client
from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, secrets, ssh
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

HOSTS = ("lb1", "lb2", "ds1", "ds2", "ds3")
VOLUME_DIR = "/var/lib/docker/volumes/onlyoffice-data/_data"


def filebackup_run(pyinfra_cli, *extra: str):
    return deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=filebackup", *extra)


@pytest.fixture(scope="module")
def backed_up(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The filebackup layer converged on the DS and LB hosts (ds1's Data volume exists first)."""
    rc, out = ssh(lab, "ds1", "command -v docker >/dev/null || exit 0; sudo docker volume create onlyoffice-data")
    assert rc == 0, out
    with lab_lock(exclusive=False):
        result = filebackup_run(pyinfra_cli)
    assert result.returncode == 0, explain(result)
    lines = report_lines(output_of(result))
    for name in HOSTS:
        assert lines.get((name, "filebackup"), "").startswith("OK last snapshot"), lines
    return lab


@pytest.mark.parametrize("name", HOSTS)
def test_timer_enabled_and_secrets_private(backed_up: dict[str, Any], name: str) -> None:
    rc, out = ssh(backed_up, name, "systemctl is-enabled ooha-filebackup.timer; systemctl is-active ooha-filebackup.timer; "
                                   "sudo stat -c '%a %U' /etc/ooha-filebackup/env /etc/ooha-filebackup/password")
    assert rc == 0 and out.split() == ["enabled", "active", "600", "root", "600", "root"], out


def test_marker_survives_backup_delete_restore(backed_up: dict[str, Any], pyinfra_cli) -> None:
    marker = f"{VOLUME_DIR}/ooha-test-marker-{uuid.uuid4().hex[:12]}"
    content = f"ooha marker {uuid.uuid4().hex}"
    try:
        rc, out = ssh(backed_up, "ds1", f"printf '%s' '{content}' | sudo tee {marker} >/dev/null && sudo chmod 640 {marker}")
        assert rc == 0, out
        rc, out = ssh(backed_up, "ds1", "sudo systemctl start ooha-filebackup.service", timeout=300)
        assert rc == 0, out
        rc, out = ssh(backed_up, "ds1", f"sudo rm {marker} && ! sudo test -e {marker}")
        assert rc == 0, out
        with lab_lock(exclusive=False):
            restored = deploy(pyinfra_cli, "deploys/restore_files.py", "--data", "restore_host=ds1")
        assert restored.returncode == 0, explain(restored)
        rc, out = ssh(backed_up, "ds1", f"sudo cat {marker}; echo; sudo stat -c '%a' {marker}")
        assert rc == 0 and out.split("\n")[:2] == [content, "640"], out
        # The repository in S3 holds the marker only encrypted.
        s3 = s3_client("198.18.20.10", secrets(backed_up))
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="ooha-backups", Prefix="files/ds1/")
                for o in page.get("Contents", [])]
        assert "files/ds1/config" in keys and any(k.startswith("files/ds1/data/") for k in keys), keys
        for key in keys:
            assert content.encode() not in s3.get_object(Bucket="ooha-backups", Key=key)["Body"].read(), key
    finally:
        ssh(backed_up, "ds1", f"sudo rm -f {marker}")


def test_restore_of_one_path_only(backed_up: dict[str, Any], pyinfra_cli) -> None:
    """restore_paths limits what is written: a file outside it is not brought back."""
    kept = f"{VOLUME_DIR}/ooha-test-kept-{uuid.uuid4().hex[:8]}"
    conf = f"/etc/onlyoffice-ha/ooha-test-{uuid.uuid4().hex[:8]}"
    try:
        rc, out = ssh(backed_up, "ds1", f"sudo mkdir -p /etc/onlyoffice-ha && echo a | sudo tee {kept} {conf} >/dev/null && "
                                        "sudo systemctl start ooha-filebackup.service && "
                                        f"sudo rm {kept} {conf}", timeout=300)
        assert rc == 0, out
        with lab_lock(exclusive=False):
            restored = deploy(pyinfra_cli, "deploys/restore_files.py", "--data", "restore_host=ds1",
                              "--data", f"restore_paths={conf}")
        assert restored.returncode == 0, explain(restored)
        rc, out = ssh(backed_up, "ds1", f"sudo test -e {conf} && ! sudo test -e {kept} && echo only-conf")
        assert rc == 0 and "only-conf" in out, out
    finally:
        ssh(backed_up, "ds1", f"sudo rm -f {kept} {conf}")


def test_rerun_changes_nothing(backed_up: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock(exclusive=False):
        result = filebackup_run(pyinfra_cli)
    assert result.returncode == 0, explain(result)
    assert changed_operations(output_of(result)) == {}


def test_bad_inputs_stop_before_any_host_is_touched(backed_up: dict[str, Any], pyinfra_cli) -> None:
    _, env_before = ssh(backed_up, "ds1", "sudo sha256sum /etc/ooha-filebackup/env")
    bad = filebackup_run(pyinfra_cli, "--data", "filebackup_repository_prefix=/tmp/repo")
    output = output_of(bad)
    assert bad.returncode != 0 and "filebackup_repository_prefix: '/tmp/repo' is not s3:" in output and "fix: " in output, output[-3000:]
    assert "Starting operation" not in output, output[-3000:]
    _, env_after = ssh(backed_up, "ds1", "sudo sha256sum /etc/ooha-filebackup/env")
    assert env_after == env_before
    wrong = deploy(pyinfra_cli, "deploys/restore_files.py", "--data", "restore_host=data1")
    output = output_of(wrong)
    assert wrong.returncode != 0 and "restore_host: data1 is not a host with file backups" in output, output[-3000:]
    assert "Starting operation" not in output, output[-3000:]
