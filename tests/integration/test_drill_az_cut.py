"""Drill: cut the PostgreSQL leader's AZ off.  The majority side elects a leader and accepts
writes (a client in another AZ writes through its HAProxy), the cut-off old leader is
demoted and refuses writes; after heal there is one leader, the old one streams from it on
the same timeline, and its rows equal the leader's (pg_rewind, no diverged data).
Run by hand under the exclusive lab lock: flock -x /tmp/ooha-lab.lock .venv/bin/pytest ...
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.client import host_entry, lab_cli, secrets, ssh, wait_for
from lab.workload import cluster_view, leader_psql, PgWriter, TABLE, unavailability_window, wait_healthy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

DS_IN = {"az1": "ds1", "az2": "ds2", "az3": "ds3"}


def test_cut_leader_az_majority_writes_minority_refuses_no_divergence(converged: dict[str, Any]) -> None:
    lab = converged
    before = wait_healthy(lab)
    old = before["leader"]
    cut_az = host_entry(lab, old)["az"]
    client_host = next(ds for az, ds in DS_IN.items() if az != cut_az)
    majority = tuple(n for n in ("data1", "data2", "data3") if n != old)
    writer = PgWriter(lab, host=client_host)
    writer.prepare(secrets(lab)["postgres_ds_password"])
    cut = False
    try:
        writer.start(max_seconds=400)
        wait_for("20 rows written before the cut", lambda: len(writer.acked()) >= 20, 60)

        cut_at = time.time()
        assert lab_cli("cut", cut_az, timeout=120).returncode == 0
        cut = True

        view = wait_for("a leader on the majority side",
                        lambda: (v := cluster_view(lab, majority)) and v["leader"] in majority and v, 90)
        wait_for("writes accepted on the majority side", lambda: writer.acked_after(cut_at + 1) >= 10, 90)
        # The cut-off old leader lost its etcd quorum: Patroni demotes it, writes are refused.
        wait_for(f"{old} demoted", lambda: leader_psql(lab, old, "select pg_is_in_recovery()")[1].strip() == "t", 60)
        rc, out = leader_psql(lab, old, f"insert into {TABLE} (run, id) values ('{writer.run}-minority', 1)")
        assert rc != 0 and "read-only" in out, f"the cut-off old leader accepted a write: {out}"

        assert lab_cli("heal", cut_az, timeout=120).returncode == 0
        cut = False
        events = writer.stop()
        after = wait_healthy(lab, deadline=180)
        assert len(after["primaries"]) == 1 and after["leader"] == view["leader"], after
        rejoined = next(m for m in after["members"] if m["name"] == old)
        leader = next(m for m in after["members"] if m["name"] == after["leader"])
        assert rejoined["streaming"] and rejoined["timeline"] == leader["timeline"], after

        # Same timeline *history* (branch points), not only the same number: a timeline
        # forked on both sides would show equal numbers with different branch points.
        history = f"sudo sh -c 'cat /var/lib/postgresql/15/onlyoffice/pg_wal/{leader['timeline']:08X}.history'"
        assert ssh(lab, old, history)[1] == ssh(lab, after["leader"], history)[1], "timeline histories differ"

        acked = {i for kind, i, _ in events if kind == "ok"}
        assert not acked - writer.present(), "acknowledged rows lost"
        query = f"select count(*), coalesce(sum(id), 0) from {TABLE} where run like '{writer.run}%'"
        on_leader = leader_psql(lab, after["leader"], query)[1].strip()
        wait_for(f"{old} holding exactly the leader's rows",
                 lambda: leader_psql(lab, old, query)[1].strip() == on_leader, 60)
        print(f"\nAZ {cut_az} cut: leader {old} -> {after['leader']}, {len(acked)} rows acknowledged, 0 lost, "
              f"client-side write unavailability {unavailability_window(events, cut_at):.1f} s")
    finally:
        writer.cleanup()
        if cut:
            lab_cli("heal", cut_az, timeout=120)
