"""Drill: a Document Server host (and an LB) lost and recreated blank is rebuilt by the main job alone (issue 10 item 1).

A marker file is written into ds2's ``onlyoffice-data`` volume and backed up; ds2 is then
replaced by a blank host (same name and addresses, new host keys: ``python -m lab recreate``),
while a client loop reads through the front door.  ONE run of the main job must bring it
back: the documentserver layer finds the host blank (no container, no Data volume) and
restores the newest snapshot before the container starts, so the marker and the node's own
``.private/ds_release_date`` come back; the container is healthy; no front-door request
fails during the loss and the rebuild; a second run changes nothing.  Prints the RTO
(recreate start -> node healthy).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from lab.client import changed_operations, explain, lab_cli, lab_lock, output_of, report_lines, ssh, wait_for
from lab.workload import MASTER, Loop, get, key_for, node_healthy, sentinel_client, vip_holder
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

NODE = "ds2"
VOLUME_DIR = "/var/lib/docker/volumes/onlyoffice-data/_data"


def recreate_blank(node: str) -> None:
    """``python -m lab recreate NODE`` (blank host, same name/addresses, new host keys)."""
    lab_cli("recreate", node, timeout=600, check=True)


def test_blank_ds_host_is_rebuilt_with_its_files_by_the_main_job(converged: dict[str, Any], pyinfra_cli) -> None:
    lab = converged
    marker = f"{VOLUME_DIR}/ooha-rebuild-marker-{uuid.uuid4().hex[:12]}"
    content = f"rebuild marker {uuid.uuid4().hex}"
    with lab_lock():
        rc, out = ssh(lab, NODE, f"printf '%s' '{content}' | sudo tee {marker} >/dev/null && sudo chmod 640 {marker} && "
                                 f"sudo cat {VOLUME_DIR}/.private/ds_release_date", timeout=60)
        assert rc == 0, out
        release_date = out.strip()
        rc, out = ssh(lab, NODE, "sudo systemctl start ooha-filebackup.service", timeout=300)
        assert rc == 0, out
        nodes = ["ds1", "ds2", "ds3"]
        moved_key = key_for(NODE, nodes, "rebuild")
        assert get(lab, f"/healthcheck?shardkey={moved_key}", timeout=10).text.strip() == "true"
        with Loop(lab, ["/healthcheck", f"/healthcheck?shardkey={moved_key}"], timeout=10.0) as loop:
            wait_for("front-door answers before the loss", lambda: loop.ok >= 10, 30, interval=0.2)
            started = time.monotonic()
            recreate_blank(NODE)
            rc, out = ssh(lab, NODE, "command -v docker || echo no-docker", timeout=60)
            assert "no-docker" in out, f"{NODE} is not blank: {out}"
            blank_at = time.monotonic()
            run = deploy(pyinfra_cli)
            job_seconds = time.monotonic() - blank_at
            assert run.returncode == 0, explain(run)
            wait_for(f"{NODE} healthy", lambda: node_healthy(lab, NODE), 180, interval=1)
            rto = time.monotonic() - started
            answered = loop.ok
            wait_for("front-door answers after the rebuild", lambda: loop.ok >= answered + 10, 30, interval=0.2)
        output = output_of(run)
        assert f"{NODE}" in output and "restoring snapshot" in output, explain(run)
        rc, out = ssh(lab, NODE, f"sudo cat {marker}; echo; sudo stat -c '%a' {marker}; "
                                 f"sudo cat {VOLUME_DIR}/.private/ds_release_date", timeout=60)
        assert rc == 0 and out.split("\n")[:3] == [content, "640", release_date], out
        lines = report_lines(output)
        assert lines[(NODE, "documentserver")].startswith("OK "), lines
        assert lines[(NODE, "filebackup")].startswith("OK "), lines
        assert "validation: 41/41 checks OK" in output, explain(run)
        print(f"\nDS host {NODE} recreated blank and rebuilt by one main-job run: RTO {rto:.0f} s "
              f"(recreate -> healthy; main job {job_seconds:.0f} s); front door {loop.ok} OK / {loop.failed} failed "
              f"({loop.answered_false} answered false), longest gap {loop.gap:.1f} s")
        assert loop.failed == 0, loop.failures
        # The rebuilt host is converged: a rerun on it changes nothing (the other hosts were not
        # touched by the rebuild; a whole-lab rerun takes ~7 min here).
        rerun = deploy(pyinfra_cli, "deploys/ha.py", "--limit", NODE)
        assert rerun.returncode == 0, explain(rerun)
        assert changed_operations(output_of(rerun)) == {}, explain(rerun)
        ssh(lab, NODE, f"sudo rm -f {marker}")


def test_a_restarted_ds_host_is_never_restored_over(converged: dict[str, Any], pyinfra_cli) -> None:
    """A stopped and started host keeps its container and volume: nothing is restored, a file written since stays."""
    lab = converged
    keep = f"{VOLUME_DIR}/ooha-not-in-any-snapshot-{uuid.uuid4().hex[:8]}"
    with lab_lock():
        try:
            rc, out = ssh(lab, NODE, f"echo kept | sudo tee {keep} >/dev/null")
            assert rc == 0, out
            lab_cli("stop", NODE, timeout=300, check=True)
            lab_cli("start", NODE, timeout=300, check=True)
            wait_for(f"{NODE} healthy after the restart", lambda: node_healthy(lab, NODE), 180, interval=1)
            run = deploy(pyinfra_cli, "deploys/ha.py", "--limit", NODE, "--data", "layers=documentserver")
            assert run.returncode == 0, explain(run)
            assert "restoring snapshot" not in output_of(run)
            assert changed_operations(output_of(run)) == {}, explain(run)
            rc, out = ssh(lab, NODE, f"sudo cat {keep}")
            assert out.strip() == "kept", out
        finally:
            ssh(lab, NODE, f"sudo rm -f {keep}")


def test_blank_lb_joins_as_backup_and_the_shard_table_stays(converged: dict[str, Any], pyinfra_cli) -> None:
    """The LB NOT holding the VIP is recreated blank: the main job rebuilds it; the VIP stays where it is
    (state BACKUP + nopreempt) and a document's shard-table entry (in Redis) is unchanged."""
    lab = converged
    with lab_lock():
        holder = wait_for("one LB holding the VIP", lambda: vip_holder(lab), 30, interval=0.5, tolerate=(Exception,))
        other = next(name for name in ("lb1", "lb2") if name != holder)
        key = key_for("ds1", ["ds1", "ds2", "ds3"], "lbrebuild")
        assert get(lab, f"/healthcheck?shardkey={key}", timeout=10).text.strip() == "true"
        table = sentinel_client(lab).master_for(MASTER)
        entry = table.get(f"ooha:shard:{key}")
        assert entry, "the front door stored no shard-table entry"
        with Loop(lab, ["/healthcheck", f"/healthcheck?shardkey={key}"], timeout=10.0) as loop:
            wait_for("front-door answers before the loss", lambda: loop.ok >= 10, 30, interval=0.2)
            started = time.monotonic()
            lab_cli("recreate", other, timeout=600, check=True)
            run = deploy(pyinfra_cli)
            assert run.returncode == 0, explain(run)
            rto = time.monotonic() - started
        assert vip_holder(lab) == holder, "the rebuilt LB took the VIP"
        assert table.get(f"ooha:shard:{key}") == entry
        lines = report_lines(output_of(run))
        assert lines[(other, "loadbalancer")].startswith("OK "), lines
        print(f"\nLB {other} recreated blank and rebuilt by one main-job run: RTO {rto:.0f} s; VIP stayed on {holder}; "
              f"front door {loop.ok} OK / {loop.failed} failed")
        assert loop.failed == 0, loop.failures
        rerun = deploy(pyinfra_cli, "deploys/ha.py", "--limit", other)
        assert rerun.returncode == 0 and changed_operations(output_of(rerun)) == {}, explain(rerun)
