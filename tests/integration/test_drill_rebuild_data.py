"""Drill (issue 10 item 1, data host): the data host that is the PostgreSQL leader is lost and
comes back BLANK (`python -m lab recreate HOST`: same name and address, new host keys, no data),
and the main job alone rebuilds it.

etcd: the cluster still lists the lost member; the main job removes it and adds the blank one
through the surviving quorum, which starts with ``existing`` state (ooha/layers/etcd.py
``join_plan``).  Patroni: the blank member re-clones itself from the new leader by base backup.
A writer on ds1 writes numbered rows through HAProxy 127.0.0.1:5432 from before the loss to
the end: every acknowledged row must be present.  Then a second run changes nothing.
Prints the RTO: blank host -> main job done (report OK) and the member streaming.

Disruptive: run it by hand under the exclusive lab lock:
flock -x /tmp/ooha-lab.lock .venv/bin/pytest -m lab tests/integration/test_drill_rebuild_data.py -s
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from lab.client import changed_operations, explain, lab_cli, lab_lock, output_of, run_pyinfra, secrets, ssh, wait_for
from lab.workload import DATA_HOSTS, PgWriter, cluster_view, healthy, unavailability_window, wait_healthy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

ETCD_MEMBERS = (
    "sudo ETCDCTL_API=3 etcdctl --endpoints=https://{address}:2379 --cacert=/etc/etcd/pki/ca.crt "
    "--cert=/etc/etcd/pki/host.crt --key=/etc/etcd/pki/host.key --dial-timeout=3s --command-timeout=5s "
    "-w json {what}"
)
REPORT_ALL_OK = re.compile(r"^validation: (\d+)/\1 checks OK", re.M)


def main_job(timeout: float = 1200):
    return run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=timeout)


def etcd_healthy(lab: dict[str, Any], via: str) -> list[str]:
    """Names of the etcd members, when every member of the list is healthy and started (else [])."""
    address = next(h["address"] for h in lab["hosts"] if h["name"] == via)
    rc, out = ssh(lab, via, ETCD_MEMBERS.format(address=address, what="member list"), timeout=30)
    if rc != 0:
        return []
    members = json.loads(out)["members"]
    rc, out = ssh(lab, via, ETCD_MEMBERS.format(address=address, what="endpoint health --cluster"), timeout=30)
    health = json.loads(out) if rc == 0 else []
    if len(health) != len(members) or not all(e.get("health") for e in health):
        return []
    names = [m.get("name") or "" for m in members]
    return sorted(names) if all(names) else []


def test_blank_leader_data_host_is_rebuilt_by_the_main_job(converged: dict[str, Any]) -> None:
    lab = converged
    with lab_lock():
        before = wait_healthy(lab)
        lost = before["leader"]
        survivor = next(n for n in DATA_HOSTS if n != lost)
        writer = PgWriter(lab, host="ds1")
        writer.prepare(secrets(lab)["postgres_ds_password"])
        rebuilt = False
        try:
            writer.start(max_seconds=1200)
            wait_for("20 rows written before the loss", lambda: len(writer.acked()) >= 20, 60)

            lost_at = time.time()
            recreate = lab_cli("recreate", lost, timeout=600)
            assert recreate.returncode == 0, recreate.stderr
            blank_at = time.time()
            rc, out = ssh(lab, lost, "test -e /var/lib/etcd/onlyoffice/member || test -e /var/lib/postgresql/15/onlyoffice "
                                     "|| echo blank")
            assert out.strip() == "blank", f"{lost} is not blank after recreate: {out}"
            wait_for("writes accepted after the failover", lambda: writer.acked_after(blank_at) >= 10, 120)

            first = main_job()
            job_done = time.time()
            assert first.returncode == 0, explain(first)
            assert REPORT_ALL_OK.search(output_of(first)), explain(first)
            view = wait_for(f"{lost} streaming", lambda: v if healthy(v := cluster_view(lab)) else None, 120)
            streaming_at = time.time()
            member = next(m for m in view["members"] if m["name"] == lost)
            assert member["streaming"] and view["leader"] != lost and view["sync_standbys"], view
            assert etcd_healthy(lab, survivor) == sorted(DATA_HOSTS)
            assert etcd_healthy(lab, lost) == sorted(DATA_HOSTS)

            second = main_job()
            assert second.returncode == 0, explain(second)
            assert changed_operations(output_of(second)) == {}, explain(second)

            events = writer.stop()
            acked = {i for kind, i, _ in events if kind == "ok"}
            missing = acked - writer.present()
            assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"
            rebuilt = True
            print(f"\nlost {lost} (PostgreSQL leader -> {view['leader']}), recreated blank in {blank_at - lost_at:.0f} s; "
                  f"main job {job_done - blank_at:.0f} s; RTO blank -> job done and {lost} streaming "
                  f"{max(job_done, streaming_at) - blank_at:.0f} s; {len(acked)} rows acknowledged, 0 lost, "
                  f"write unavailability {unavailability_window(events, lost_at):.1f} s; rerun changed nothing")
        finally:
            writer.cleanup()
            if not rebuilt:
                # Leave the lab converged for the next test: the host exists (recreate is
                # idempotent), the main job rebuilds it.
                lab_cli("up", timeout=900)
                main_job()
