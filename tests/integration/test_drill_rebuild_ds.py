"""Drill: a Document Server host that was only stopped and started is never restored over.

The documentserver layer restores the Data volume from the newest file-backup snapshot only on
a BLANK host (no container, no Data volume).  Here ds2 is stopped and started (`python -m lab
stop/start`): it keeps its container and volume, so the main job (documentserver layer, ds2
only) restores nothing, changes nothing, and a file written since the last snapshot stays.

A DS host recreated blank (its marker file, mode and ``.private/ds_release_date`` restored from
the snapshot, the front door answering throughout) and an LB recreated blank (joins as BACKUP,
the VIP and a shard-table entry unchanged) are proven together in
tests/integration/test_drill_lost_az.py, which loses both at once with the rest of their AZ;
the single-host RTOs are timed by benchmarks/dr_rto.py (`--scenarios ds,lb`, in `make bench`).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from lab.client import changed_operations, explain, lab_cli, lab_lock, output_of, ssh, wait_for
from lab.workload import node_healthy
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

NODE = "ds2"
VOLUME_DIR = "/var/lib/docker/volumes/onlyoffice-data/_data"


def test_a_restarted_ds_host_is_never_restored_over(converged: dict[str, Any], pyinfra_cli) -> None:
    """A stopped and started host keeps its container and volume: nothing is restored, a file written since stays."""
    lab = converged
    keep = f"{VOLUME_DIR}/ooha-not-in-any-snapshot-{uuid.uuid4().hex[:8]}"
    with lab_lock():
        try:
            # A snapshot to restore exists (the layer would find one), and the file is newer than it.
            rc, out = ssh(lab, NODE, "sudo systemctl start ooha-filebackup.service", timeout=300)
            assert rc == 0, out
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

