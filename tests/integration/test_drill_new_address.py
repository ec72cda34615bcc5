"""Drill (issue 10, deliverable 1): a data host is replaced by a blank one at a NEW address
(`python -m lab recreate HOST --address A`: the lab's inventory gives the new address), and the
main job alone converges it into every quorum.

The host chosen at run time is a data host that is neither the PostgreSQL leader nor the Redis
primary.  With a PostgreSQL writer running through a DS host's endpoint: the main job exits 0
with every report line OK; the member is at the new address in every quorum (etcd member list,
patronictl list, every Sentinel's replicas and Sentinels, RabbitMQ cluster_status on every node,
the survivors' Erlang host table) and nothing anywhere names the old address (etcd, Patroni,
Sentinels, /etc of every host); no acknowledged row is lost; a second run changes nothing.
The surviving RabbitMQ nodes are never restarted (same main PID before and after: a peer's new
address reaches their Erlang VM live, not by a restart while the cluster is one node short).
Then the host is put back at its topology address the same way (recreate + main job), also in
the finally, so the lab ends as it began.  That run is WITHOUT ``-y`` (the plan confirmed by Enter on
stdin): the replacement decisions pyinfra defers at plan time (the blank node's RabbitMQ join,
a Sentinel reset) are taken when they execute, and converge the same.  Both rebuild times are
printed.

Not checked for the old address: /etc/default/etcd of the surviving members, whose
ETCD_INITIAL_CLUSTER the etcd layer keeps as it is once a member has data (etcd ignores it;
rewriting it would restart a member).

Disruptive: holds the lab lock exclusively.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import subprocess
import time
from typing import Any

import pytest
import redis

from lab.client import (PYINFRA, REPO, address_of, changed_operations, explain, hosts_in, lab_cli, lab_lock, lab_state,
                        output_of, report_lines, secrets, ssh, wait_for)
from lab.workload import MASTER, SENTINEL_PORT, PgWriter, redis_hosts, sentinels_primary, wait_healthy
from ooha.facts.etcd import etcdctl
from ooha.facts.rabbitmq import parse_cluster_status
from ooha.layers.rabbitmq import RESOLVER_TABLE, parse_resolver_table
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(2400)]

PATRONICTL = "sudo patronictl -c /etc/patroni/config.yml"
ETC_SKIPPED = ("/etc/default/etcd",)
"""Kept as it is on members with data (see the module note)."""


def _new_address(lab: dict[str, Any], original: str) -> str:
    """A free address of the host's AZ subnet (.99 unless taken, then upwards)."""
    used = {a for h in lab["hosts"] for a in (h.get("addresses") or {}).values()}
    base = ipaddress.ip_address(original)
    candidate = ipaddress.ip_address(int(base) & ~0xFF | 99)
    while str(candidate) in used:
        candidate += 1
    return str(candidate)


def _victim(lab: dict[str, Any]) -> str:
    """A data host that leads nothing: not the Patroni leader, not the Redis primary (last first)."""
    leader = wait_healthy(lab)["leader"]
    primary = wait_for("one primary named by the Sentinels",
                       lambda: next(iter(p)) if len(p := sentinels_primary(lab)) == 1 else None, 60, interval=0.5)
    names = redis_hosts(lab)
    busy = {leader, names.get(primary)}
    return next(h for h in reversed(hosts_in(lab, "postgres")) if h not in busy)


def _etcd_peer_urls(lab: dict[str, Any], via: str) -> dict[str, str]:
    """{member name: peer URLs} from ``via``'s etcd (simple format: id, status, name, peers, clients, learner)."""
    rc, out = ssh(lab, via, f"sudo sh -c {shlex.quote(etcdctl(address_of(lab, via), 2379, 'member', 'list'))}")
    assert rc == 0, out
    return {p[2]: p[3] for p in (line.split(", ") for line in out.splitlines()) if len(p) >= 4}


def _patroni_hosts(lab: dict[str, Any], via: str) -> dict[str, str]:
    """{member: host} from ``patronictl list -f json``."""
    import json

    rc, out = ssh(lab, via, f"{PATRONICTL} list -f json")
    assert rc == 0, out
    return {m["Member"]: str(m["Host"]).rsplit(":", 1)[0] if str(m["Host"]).count(":") == 1 else str(m["Host"])
            for m in json.loads(out[out.index("["):])}


def _sentinel_memory(lab: dict[str, Any]) -> dict[str, set[str]]:
    """{sentinel address: every address it remembers (replicas, Sentinels, the primary)}."""
    pw = secrets(lab)["redis_sentinel_password"]
    out = {}
    for address in redis_hosts(lab):
        client = redis.Redis(host=address, port=SENTINEL_PORT, password=pw, socket_timeout=2, socket_connect_timeout=2,
                             decode_responses=True)
        seen = {r["ip"] for r in client.sentinel_slaves(MASTER)} | {s["ip"] for s in client.sentinel_sentinels(MASTER)}
        seen.add(client.sentinel_get_master_addr_by_name(MASTER)[0])
        out[address] = seen
    return out


def _sentinels_know_exactly(lab: dict[str, Any]) -> bool:
    """Every Sentinel remembers exactly the three live addresses (the others and the primary)."""
    live = set(redis_hosts(lab))
    return all(seen | {me} == live for me, seen in _sentinel_memory(lab).items())


def _rabbit(lab: dict[str, Any], host: str) -> dict[str, Any] | None:
    rc, out = ssh(lab, host, "sudo timeout 30 rabbitmqctl cluster_status --formatter json")
    return parse_cluster_status(out.splitlines()) if rc == 0 else None


def _etc_naming(lab: dict[str, Any], address: str) -> dict[str, list[str]]:
    """{host: files under /etc that name ``address``} over every target host."""
    found = {}
    for entry in lab["hosts"]:
        if "services" in entry["roles"]:
            continue
        rc, out = ssh(lab, entry["name"], f"sudo grep -rIlwF {shlex.quote(address)} /etc 2>/dev/null || true")
        files = [f for f in out.split() if f not in ETC_SKIPPED]
        if files:
            found[entry["name"]] = files
    return found


def _checks_all_ok(run) -> None:
    assert run.returncode == 0, explain(run)
    lines = report_lines(output_of(run))
    assert lines and all(line.startswith("OK") for line in lines.values()), explain(run)
    match = re.search(r"validation: (\d+)/(\d+) checks OK", output_of(run))
    assert match and match[1] == match[2], explain(run)


def _rabbit_pids(lab: dict[str, Any], hosts: list[str]) -> dict[str, str]:
    """{host: rabbitmq-server's main PID}: a restart changes it."""
    return {h: ssh(lab, h, "systemctl show -p MainPID --value rabbitmq-server")[1].strip() for h in hosts}


def _main_job_confirmed() -> subprocess.CompletedProcess[str]:
    """The main job without ``-y``: pyinfra plans (deferring what it decides at execute time),
    asks, and the Enter that confirms comes on stdin."""
    return subprocess.run([PYINFRA, "inventories/lab.py", "deploys/ha.py"], cwd=REPO, input="\n",
                          capture_output=True, text=True, timeout=1200, env={**os.environ, "PYINFRA_PROGRESS": "off"})


def _move(pyinfra_cli, victim: str, address: str, confirm: bool = False) -> tuple[dict[str, Any], Any, float]:
    """Recreate ``victim`` blank at ``address`` and run the main job (with -y, or confirmed on
    stdin); (new lab state, run, rebuild s)."""
    lab_cli("recreate", victim, "--address", address, timeout=600, check=True)
    lab = lab_state()
    assert address_of(lab, victim) == address
    rc, out = ssh(lab, victim, "test -e /var/lib/etcd/onlyoffice/member || test -e /var/lib/postgresql "
                               "|| test -e /var/lib/redis || test -e /var/lib/rabbitmq/mnesia; echo $?")
    assert out.strip().endswith("1"), f"{victim} is not blank: {out}"
    started = time.monotonic()
    run = _main_job_confirmed() if confirm else deploy(pyinfra_cli)
    return lab, run, time.monotonic() - started


def test_a_data_host_replaced_at_a_new_address_converges_with_the_main_job(converged, pyinfra_cli) -> None:
    with lab_lock(exclusive=True):
        lab = lab_state()
        victim = _victim(lab)
        original = address_of(lab, victim)
        new = _new_address(lab, original)
        survivors = [h for h in hosts_in(lab, "postgres") if h != victim]
        writer = PgWriter(lab, host=hosts_in(lab, "docs")[0])
        writer.prepare(secrets(lab)["postgres_ds_password"])
        writer.start(max_seconds=1500)
        moved = back = False
        try:
            wait_for("20 rows acknowledged", lambda: len(writer.acked()) >= 20, 60)
            pids = _rabbit_pids(lab, survivors)
            moved = True
            lab, run, forward_s = _move(pyinfra_cli, victim, new)
            _checks_all_ok(run)
            assert _rabbit_pids(lab, survivors) == pids, "a surviving RabbitMQ node was restarted"

            # Every quorum has the member at the new address, none at the old one.
            for via in hosts_in(lab, "etcd"):
                urls = _etcd_peer_urls(lab, via)
                assert urls.get(victim) == f"https://{new}:2380" and len(urls) == 3, (via, urls)
                assert not any(original in u for u in urls.values()), (via, urls)
            patroni = wait_for("patronictl lists the member at its new address",
                               lambda: p if (p := _patroni_hosts(lab, survivors[0])).get(victim) == new else None, 120)
            assert original not in patroni.values() and len(patroni) == 3, patroni
            assert wait_for("every Sentinel remembers exactly the live addresses",
                            lambda: _sentinels_know_exactly(lab), 60, interval=1), _sentinel_memory(lab)
            wanted = sorted(f"rabbit@{h}" for h in hosts_in(lab, "rabbitmq"))
            for host in hosts_in(lab, "rabbitmq"):
                status = _rabbit(lab, host)
                assert status and status["members"] == wanted and status["running_nodes"] == wanted, (host, status)
                assert status["partitions"] == {}, (host, status)
                rc, out = ssh(lab, host, f"sudo rabbitmqctl eval {shlex.quote(RESOLVER_TABLE)}")
                assert (parse_resolver_table(out.splitlines()) or {}).get(victim) == new, (host, out)
            assert _etc_naming(lab, original) == {}

            # Writes: none acknowledged lost.
            events = writer.stop()
            acked = {i for kind, i, _ in events if kind == "ok"}
            missing = acked - writer.present()
            assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"

            rerun = deploy(pyinfra_cli)
            assert rerun.returncode == 0, explain(rerun)
            assert changed_operations(output_of(rerun)) == {}, output_of(rerun)[-4000:]

            pids = _rabbit_pids(lab, survivors)
            lab, back_run, back_s = _move(pyinfra_cli, victim, original, confirm=True)
            back = True
            _checks_all_ok(back_run)
            assert _rabbit_pids(lab, survivors) == pids, "a surviving RabbitMQ node was restarted"
            assert _etc_naming(lab, new) == {}
            print(f"\n{victim} replaced blank at a new address {original} -> {new}: main job rebuilt it in "
                  f"{forward_s:.0f} s, every check OK, {len(acked)} rows acknowledged, 0 lost, rerun 0 changed; "
                  f"back at {original}: main job (without -y) {back_s:.0f} s, every check OK")
        finally:
            writer.stop()
            writer.cleanup()
            if moved and not back:
                # Leave the lab as it began: the host at its topology address, converged.
                lab_cli("recreate", victim, "--address", original, timeout=600)
                deploy(pyinfra_cli)
