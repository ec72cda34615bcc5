"""Drill (issue 10): the data host holding the Redis primary is lost and comes back BLANK
(same name and address, new host keys: `python -m lab recreate`); the main job alone
rebuilds it into Redis/Sentinel and the RabbitMQ cluster.

While it runs, a Redis writer (lab/workload.py, Sentinel discovery) keeps writing: no
acknowledged write may be lost.  After the main job: exit 0 and every report check OK,
the rebuilt host a replica of the new primary, every Sentinel listing exactly the live
replicas and the two other Sentinels (no ghost of the old identity), RabbitMQ 3/3 running
without partition and the old node forgotten by a survivor; a second run changes nothing.
The RTO (blank host -> main job done, every check OK) is printed.

Disruptive: holds the lab lock exclusively; the finally runs the main job again if the
host was recreated and the lab is not converged, so later tests see a healthy lab.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import redis

from lab.client import changed_operations, explain, lab_cli, lab_lock, output_of, secrets, ssh, wait_for
from lab.workload import MASTER, SENTINEL_PORT, Writer, redis_hosts, role_of, sentinels_primary
from ooha.facts.rabbitmq import parse_cluster_status
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

REBUILD_DEADLINE = 900  # seconds the main job may take to rebuild the host (bounded by deploy() too)


def _sentinel(state: dict[str, Any], address: str) -> redis.Redis:
    return redis.Redis(host=address, port=SENTINEL_PORT, password=secrets(state)["redis_sentinel_password"],
                       socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def settled(state: dict[str, Any]) -> str | None:
    """The primary's address when exactly one Redis is primary, every other follows it with its
    link up and every answering Sentinel names it; else None."""
    infos = {a: role_of(state, a) or {} for a in redis_hosts(state)}
    masters = [a for a, i in infos.items() if i.get("role") == "master"]
    if len(masters) != 1 or sentinels_primary(state) != set(masters):
        return None
    if any(a != masters[0] and (i.get("master_host") != masters[0] or i.get("master_link_status") != "up")
           for a, i in infos.items()):
        return None
    return masters[0]


def sentinel_memory(state: dict[str, Any]) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """What each Sentinel remembers: ``{address: {"replicas": [(ip, port)], "sentinels": [(ip, port)]}}``."""
    out = {}
    for address in redis_hosts(state):
        client = _sentinel(state, address)
        out[address] = {
            "replicas": sorted((r["ip"], int(r["port"])) for r in client.sentinel_slaves(MASTER)),
            "sentinels": sorted((s["ip"], int(s["port"])) for s in client.sentinel_sentinels(MASTER)),
        }
    return out


def no_ghosts(state: dict[str, Any], primary: str) -> bool:
    addresses = list(redis_hosts(state))
    memory = sentinel_memory(state)
    return all(
        view["replicas"] == sorted((a, 6379) for a in addresses if a != primary)
        and view["sentinels"] == sorted((a, SENTINEL_PORT) for a in addresses if a != address)
        for address, view in memory.items()
    )


def rabbit_status(state: dict[str, Any], host: str) -> dict[str, Any] | None:
    rc, out = ssh(state, host, "sudo timeout 30 rabbitmqctl cluster_status --formatter json")
    return parse_cluster_status(out.splitlines()) if rc == 0 else None


def forgotten_count(state: dict[str, Any], survivors: list[str], victim: str) -> int:
    """How many times the survivors' RabbitMQ logs say they removed ``rabbit@victim`` from the cluster."""
    total = 0
    for host in survivors:
        _, out = ssh(state, host, f"sudo sh -c 'cat /var/log/rabbitmq/rabbit@{host}.log* 2>/dev/null' "
                                  f"| grep -c 'Removing node rabbit@{victim} from cluster' || true")
        total += int((out.strip().splitlines() or ["0"])[-1] or 0)
    return total


def checks_ok(output: str) -> tuple[int, int]:
    match = re.search(r"validation: (\d+)/(\d+) checks OK", output)
    assert match, output[-3000:]
    return int(match[1]), int(match[2])


def test_blank_redis_primary_host_is_rebuilt_by_the_main_job(converged, pyinfra_cli) -> None:
    state = converged
    with lab_lock(exclusive=True):
        names = redis_hosts(state)
        old = wait_for("a settled replication group before the drill", lambda: settled(state), 120, interval=0.5)
        victim = names[old]
        others = [a for a in names if a != old]
        survivors = [names[a] for a in others]
        forgotten_before = forgotten_count(state, survivors, victim)
        writer = Writer(state, f"drill:rebuild:{int(time.time())}").start()
        recreated = converged_again = False
        try:
            wait_for("writes before the loss", lambda: len(writer.acked) >= 20, 30, interval=0.2)
            lost_at = time.monotonic()
            lab_cli("recreate", victim, timeout=600, check=True)
            recreated = True
            blank_at = time.monotonic()
            new = wait_for("the surviving Sentinels promote a replica",
                           lambda: next(iter(sentinels_primary(state, others) - {old}), None)
                           if len(sentinels_primary(state, others)) == 1 else None,
                           60, interval=0.2)
            rc, out = ssh(state, victim, "test -e /var/lib/redis || test -e /var/lib/rabbitmq/mnesia; echo $?")
            assert out.strip().endswith("1"), f"{victim} is not blank: {out}"

            run = deploy(pyinfra_cli)
            rto = time.monotonic() - blank_at
            output = output_of(run)
            assert run.returncode == 0, explain(run)
            ok, total = checks_ok(output)
            assert ok == total, explain(run)
            converged_again = True

            # Redis: the rebuilt host follows the NEW primary; no Sentinel remembers a ghost.
            assert wait_for("one primary, the rebuilt host following it", lambda: settled(state), 60, interval=0.5) == new
            info = role_of(state, old) or {}
            assert info.get("role") == "slave" and info.get("master_host") == new, info
            assert wait_for("every Sentinel lists exactly the live replicas and Sentinels",
                            lambda: no_ghosts(state, new), 60, interval=1), json.dumps(sentinel_memory(state))

            # RabbitMQ: 3/3 running, no partition, the old identity forgotten by a survivor.
            wanted = sorted(f"rabbit@{h}" for h in [victim, *survivors])
            for host in [victim, *survivors]:
                status = rabbit_status(state, host)
                assert status and status["members"] == wanted and status["running_nodes"] == wanted, (host, status)
                assert status["partitions"] == {}, (host, status)
            assert forgotten_count(state, survivors, victim) > forgotten_before

            # Writes: none acknowledged was lost through the failover and the rebuild.
            writer.stop()
            assert writer.acked_since(lost_at) > 0
            lost = writer.lost()
            assert lost == [], f"{len(lost)} acknowledged writes lost"

            # A second run changes nothing.
            rerun = deploy(pyinfra_cli)
            assert rerun.returncode == 0, explain(rerun)
            assert changed_operations(output_of(rerun)) == {}, output_of(rerun)[-4000:]
            print(f"\nRTO {victim} (Redis primary) blank -> rebuilt, every check OK: {rto:.0f} s "
                  f"(main job; failover to {names[new]}; {len(writer.acked)} writes acknowledged, 0 lost; "
                  f"longest write gap {writer.longest_gap(after=lost_at):.1f} s)")
        finally:
            writer.stop()
            if recreated and not converged_again:
                deploy(pyinfra_cli)  # leave the lab converged for the next tests
