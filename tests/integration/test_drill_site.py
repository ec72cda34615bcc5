"""Drill: the whole site is lost (every host blank, S3 intact) and rebuilt by one command.

    python -m lab recreate HOST...          # all eight hosts come back blank
    pyinfra -y inventories/lab.py deploys/rebuild_site.py

A writer adds rows through ds1's PostgreSQL endpoint until just before the loss; a WAL
segment is archived part-way. After the rebuild every row acknowledged before that archived
segment is present (RPO bounded by archive_timeout: the seconds of acknowledged writes lost
are printed), the front door answers through the floating address, the report is all OK,
and a rerun of the main job changes nothing. Before the loss, rebuild_site refuses the live
site (it is not blank) without touching it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from lab.client import (changed_operations, explain, lab_cli, lab_lock, output_of, report_lines, secrets,
                        TARGETS, wait_for)
from lab.workload import PgWriter, get, wait_healthy
from tests.integration.deploytools import deploy
from tests.integration.test_backup import archive_through_now

pytestmark = [pytest.mark.lab, pytest.mark.last, pytest.mark.timeout(2400)]


def _front_door_healthy(lab: dict[str, Any]) -> bool:
    try:
        answer = get(lab, "/healthcheck", timeout=5)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and answer.text.strip() == "true"


def test_lost_site_is_rebuilt_from_the_inventory_and_s3(converged: dict[str, Any], pyinfra_cli) -> None:
    lab = converged
    writer = PgWriter(lab, host="ds1")
    with lab_lock():
        refused = deploy(pyinfra_cli, "deploys/rebuild_site.py")
        output = output_of(refused)
        assert refused.returncode != 0, output[-3000:]
        assert "the site is not blank" in output and "fix:" in output, output[-3000:]
        assert "Starting operation" not in output, output[-3000:]

        wait_healthy(lab)
        writer.prepare(secrets(lab)["postgres_ds_password"])
        writer.start(max_seconds=300)
        wait_for("20 rows acknowledged", lambda: len(writer.acked()) >= 20, 60)
        switched_at = time.time()
        _, segment = archive_through_now(lab)
        wait_for("10 more rows after the archived segment", lambda: writer.acked_after(switched_at) >= 10, 60)
        events = writer.stop()

        lost_at = time.monotonic()
        gone = lab_cli("recreate", *TARGETS, timeout=900)
        assert gone.returncode == 0, gone.stdout[-2000:] + gone.stderr[-2000:]
        blank_at = time.monotonic()
        rebuilt = deploy(pyinfra_cli, "deploys/rebuild_site.py")
        done_at = time.monotonic()
        output = output_of(rebuilt)
        assert rebuilt.returncode == 0, explain(rebuilt)
        lines = report_lines(output)
        assert lines and all(line.startswith("OK") for line in lines.values()), lines
        wait_for("the front door answers true", lambda: _front_door_healthy(lab), 120)

        writer.prepare(secrets(lab)["postgres_ds_password"])
        present = writer.present()
        acked = [(i, at) for kind, i, at in events if kind == "ok"]
        safe = {i for i, at in acked if at < switched_at}
        missing = safe - present
        assert safe and not missing, f"rows acknowledged before {segment} was archived are missing: {sorted(missing)}"
        kept = [at for i, at in acked if i in present]
        rpo = max(at for _, at in acked) - max(kept)
        print(f"\nsite loss: hosts blank in {blank_at - lost_at:.0f} s, rebuild_site {done_at - blank_at:.0f} s "
              f"(RTO {done_at - lost_at:.0f} s); {len(acked)} rows acknowledged, "
              f"{sum(1 for i, _ in acked if i not in present)} lost, acknowledged writes lost: {rpo:.1f} s")

        rerun = deploy(pyinfra_cli)
        assert rerun.returncode == 0, explain(rerun)
        assert changed_operations(output_of(rerun)) == {}, output_of(rerun)[-4000:]
