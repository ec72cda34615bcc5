"""Drill: one whole AZ is lost (its LB, DS and data hosts come back blank) and the main job
rebuilds it while the other two AZs serve.

The AZ chosen holds both the PostgreSQL leader and the load balancer with the floating
address (arranged first by planned moves: a switchover to the synchronous standby, a
keepalived restart on the other LB), so the drill loses at once the VIP holder, a Document
Server node (with a marker file in its Data volume, backed up) and the PostgreSQL leader. Under a front-door request loop and a PostgreSQL writer on a DS host of
another AZ: the front door keeps answering, writes keep succeeding during the rebuild, no
acknowledged row is lost, the DS node's files come back from the file backup, every report
line is OK afterwards and a rerun changes nothing. Prints the RTO (blank AZ -> main job done).
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import pytest

from lab.client import (changed_operations, explain, host_entry, hosts_in, lab_cli, lab_lock, output_of,
                        report_lines, secrets, ssh, wait_for)
from lab.workload import Loop, PgWriter, cluster_view, healthy, vip_holder, wait_healthy
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

PATRONICTL = "sudo patronictl -c /etc/patroni/config.yml"
MARKER = "/var/www/onlyoffice/Data/ooha-drill-az-marker"


def _in_az(lab: dict[str, Any], names: list[str] | tuple[str, ...], az: str) -> str:
    return next(name for name in names if host_entry(lab, name)["az"] == az)


def _switchover(lab: dict[str, Any], leader: str, candidate: str) -> dict[str, Any]:
    """A planned Patroni switchover to ``candidate`` (the synchronous standby); the settled view."""
    rc, out = ssh(lab, candidate, f"{PATRONICTL} switchover --leader {shlex.quote(leader)} "
                                  f"--candidate {shlex.quote(candidate)} --force", timeout=120)
    assert rc == 0, out
    return wait_for(f"{candidate} leading a healthy cluster",
                    lambda: v if healthy(v := cluster_view(lab)) and v["leader"] == candidate else None, 120, interval=2)


def _leader_and_vip_in_one_az(lab: dict[str, Any]) -> tuple[str, str, str]:
    """Put the PostgreSQL leader and the floating address in one AZ by planned moves; (az, LB, leader).

    In synchronous mode Patroni switches over only to the synchronous standby, so the AZ
    follows the leader: when the leader's AZ has no load balancer, switch over to the sync
    standby first (every other AZ has one); then, when the other LB holds the address,
    restart keepalived there (nopreempt: the address moves to this AZ's LB and stays).
    """
    lb_in = {host_entry(lab, name)["az"]: name for name in hosts_in(lab, "lb")}
    view = wait_healthy(lab)
    if host_entry(lab, view["leader"])["az"] not in lb_in:
        candidate = next(name for name in view["sync_standbys"] if host_entry(lab, name)["az"] in lb_in)
        view = _switchover(lab, view["leader"], candidate)
    leader = view["leader"]
    az = host_entry(lab, leader)["az"]
    holder = wait_for("one LB holding the VIP", lambda: vip_holder(lab), 30, interval=0.5, tolerate=(Exception,))
    if holder != lb_in[az]:
        rc, out = ssh(lab, holder, "sudo systemctl restart keepalived")
        assert rc == 0, out
        wait_for(f"the VIP on {lb_in[az]}", lambda: vip_holder(lab) == lb_in[az], 60, interval=0.5, tolerate=(Exception,))
    return az, lb_in[az], leader


def _backed_up_marker(lab: dict[str, Any], ds: str) -> str:
    """Write a marker into the node's Data volume and take a file backup now; its content."""
    content = f"az drill {time.time():.0f}"
    rc, out = ssh(lab, ds, f"sudo docker exec onlyoffice-documentserver sh -c "
                           f"{shlex.quote(f'echo {shlex.quote(content)} > {MARKER}')}"
                           " && sudo systemctl start ooha-filebackup.service", timeout=300)
    assert rc == 0, out
    return content


def test_lost_az_is_rebuilt_while_the_other_azs_serve(converged: dict[str, Any], pyinfra_cli) -> None:
    lab = converged
    with lab_lock():
        az, holder, data_host = _leader_and_vip_in_one_az(lab)
        ds_host = _in_az(lab, hosts_in(lab, "docs"), az)
        writer_host = next(name for name in hosts_in(lab, "docs") if host_entry(lab, name)["az"] != az)
        marker = _backed_up_marker(lab, ds_host)

        writer = PgWriter(lab, host=writer_host)
        writer.prepare(secrets(lab)["postgres_ds_password"])
        writer.start(max_seconds=1200)
        try:
            wait_for("20 rows acknowledged", lambda: len(writer.acked()) >= 20, 60)
            with Loop(lab, ["/healthcheck"]) as loop:
                lost_at = time.monotonic()
                gone = lab_cli("recreate", "--az", az, timeout=600)
                assert gone.returncode == 0, gone.stdout[-2000:] + gone.stderr[-2000:]
                blank_at, blank_wall = time.monotonic(), time.time()
                ok_before_rebuild = loop.ok
                rebuilt = deploy(pyinfra_cli)
                done_at = time.monotonic()
            events = writer.stop()
        finally:
            writer.cleanup()

        output = output_of(rebuilt)
        assert rebuilt.returncode == 0, explain(rebuilt)
        lines = report_lines(output)
        assert lines and all(line.startswith("OK") for line in lines.values()), lines
        assert loop.ok > ok_before_rebuild, "the front door stopped answering during the rebuild"
        assert loop.gap < 15, f"the front door was silent for {loop.gap:.1f} s: {loop.failures}"
        acked = {i for kind, i, _ in events if kind == "ok"}
        during = sum(1 for kind, _, at in events if kind == "ok" and at > blank_wall)
        assert during > 0, "no write succeeded while the AZ was rebuilt"
        missing = acked - writer.present()
        assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"
        rc, restored = ssh(lab, ds_host, f"sudo docker exec onlyoffice-documentserver cat {MARKER}")
        assert rc == 0 and restored.strip() == marker, restored
        print(f"\nlost {az} ({holder} held the VIP, {data_host} led PostgreSQL, {ds_host}): blank in "
              f"{blank_at - lost_at:.0f} s, main job rebuilt it in {done_at - blank_at:.0f} s "
              f"(RTO {done_at - lost_at:.0f} s); front door {loop.ok} ok / {loop.failed} failed "
              f"(longest gap {loop.gap:.1f} s); {len(acked)} rows acknowledged, {during} during the rebuild, 0 lost")

        rerun = deploy(pyinfra_cli)
        assert rerun.returncode == 0, explain(rerun)
        assert changed_operations(output_of(rerun)) == {}, output_of(rerun)[-4000:]
