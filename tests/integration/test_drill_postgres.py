"""Drill: stop the PostgreSQL leader's host while a client on ds1 writes numbered rows through
the stable endpoint (HAProxy 127.0.0.1:5432).  A new leader accepts writes, every
acknowledged row is present, the old leader rejoins as a streaming replica after `start`.
Run by hand under the exclusive lab lock: flock -x /tmp/ooha-lab.lock .venv/bin/pytest ...
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.client import lab_cli, secrets, wait_for
from lab.workload import cluster_view, PgWriter, unavailability_window, wait_healthy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def test_leader_host_loss_keeps_every_acknowledged_row(converged: dict[str, Any]) -> None:
    lab = converged
    before = wait_healthy(lab)
    old = before["leader"]
    writer = PgWriter(lab, host="ds1")
    writer.prepare(secrets(lab)["postgres_ds_password"])
    stopped = False
    try:
        writer.start(max_seconds=400)
        wait_for("20 rows written before the failure", lambda: len(writer.acked()) >= 20, 60)

        stop_at = time.time()
        result = lab_cli("stop", old, timeout=180)
        assert result.returncode == 0, result.stderr
        stopped = True

        others = tuple(n for n in ("data1", "data2", "data3") if n != old)
        view = wait_for("a new leader", lambda: (v := cluster_view(lab, others)) and v["leader"] not in (None, old) and v, 90)
        wait_for("writes accepted after the failover", lambda: writer.acked_after(stop_at + 1) >= 10, 90)
        events = writer.stop()
        acked = {i for kind, i, _ in events if kind == "ok"}
        missing = acked - writer.present()
        assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"
        print(f"\nleader {old} -> {view['leader']}: {len(acked)} rows acknowledged, 0 lost, "
              f"client-side write unavailability {unavailability_window(events, stop_at):.1f} s")

        assert lab_cli("start", old, timeout=300).returncode == 0
        stopped = False
        after = wait_healthy(lab, deadline=180)
        rejoined = next(m for m in after["members"] if m["name"] == old)
        assert after["leader"] != old and rejoined["streaming"], after
    finally:
        writer.cleanup()
        if stopped:
            lab_cli("start", old, timeout=300)
