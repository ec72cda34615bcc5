"""Drill: one whole AZ is lost (its LB, DS and data hosts come back blank, the data host at a NEW
address) and the main job rebuilds it while the other two AZs serve; then the data host is put
back at its topology address the same way.

One drill restores the lab once for what used to be five (the single-host rebuilds of a DS
host, an LB, the Redis primary's host and a data host at a new address are all parts of it).
The AZ chosen holds at once, arranged first by planned moves, the PostgreSQL leader (a
switchover to the synchronous standby), the load balancer with the floating address (a
keepalived restart on the other LB) and the Redis primary (a Sentinel failover with the other
replica's replica-priority at 0 for that moment).  So the drill loses the VIP holder, a
Document Server node (a marker file in its Data volume, backed up), the PostgreSQL leader, the
Redis primary, an etcd member and a RabbitMQ node; the data host comes back blank at a new
address of its AZ (`python -m lab recreate HOST --address A`), the LB and the DS host at
their own.

Under a front-door request loop, a PostgreSQL writer on a DS host of another AZ and a Redis
writer with Sentinel discovery, ONE main-job run must give:
- exit 0, every report line and check OK; the front door kept answering (gap < 15 s); writes
  succeeded during the rebuild and no acknowledged PostgreSQL row or Redis write is lost;
- DS: the marker (mode 640) and the node's own ``.private/ds_release_date`` restored from the
  file backup ("restoring snapshot");
- LB: the rebuilt LB joins as BACKUP (nopreempt: the VIP stays on the survivor); a document's
  shard-table entry (in Redis) outlived the Redis primary's loss (it may name another node: the
  new Sentinel address recreates every DS container one at a time, and a document whose node is
  down moves on, by design);
- Redis/Sentinel: the surviving Sentinels promoted a replica, the rebuilt host follows it,
  every Sentinel lists exactly the live replicas and Sentinels (no ghost of the old identity
  or address);
- RabbitMQ: 3/3 running, no partition, the old node forgotten by a survivor, every node's
  Erlang host table has the new address, the survivors' rabbitmq-server never restarted;
- the new address everywhere: etcd member list, patronictl list; no file under /etc of any
  host names the old address;
- a rerun changes nothing.
Then the data host is recreated blank at its topology address and the main job is run
WITHOUT ``-y`` (the plan confirmed by Enter on stdin: the decisions pyinfra defers at plan time
are taken when they execute): every check OK, survivors' RabbitMQ not restarted, nothing under
/etc names the temporary address.  The finally puts the host back if the drill stopped
half-way.  Prints the RTO and both rebuild times.

Not checked for the old address: /etc/default/etcd of the surviving members, whose
ETCD_INITIAL_CLUSTER the etcd layer keeps as it is once a member has data (etcd ignores it;
rewriting it would restart a member).

The RTO of each single-host loss (DS host, LB, PostgreSQL leader's host, Redis primary's
host, a data host replaced at a new address) is timed by benchmarks/dr_rto.py (`make bench`).
Disruptive: holds the lab lock exclusively.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from typing import Any

import pytest
import redis

from lab.client import (free_address_in_az, PYINFRA, REPO, address_of, changed_operations, explain, host_entry, hosts_in, lab_cli,
                        lab_lock, lab_state, output_of, report_lines, secrets, ssh, wait_for)
from lab.workload import (MASTER, SENTINEL_PORT, Loop, PgWriter, Writer, cluster_view, direct, get, healthy, key_for,
                          redis_hosts, role_of, sentinel_client, sentinels_primary, vip_holder, wait_healthy)
from ooha.facts.etcd import etcdctl
from ooha.facts.rabbitmq import parse_cluster_status
from ooha.layers.rabbitmq import RESOLVER_TABLE, parse_resolver_table
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(2700)]

PATRONICTL = "sudo patronictl -c /etc/patroni/config.yml"
MARKER = "/var/www/onlyoffice/Data/ooha-drill-az-marker"
VOLUME_DIR = "/var/lib/docker/volumes/onlyoffice-data/_data"
MARKER_ON_HOST = f"{VOLUME_DIR}/ooha-drill-az-marker"
RELEASE_DATE = f"{VOLUME_DIR}/.private/ds_release_date"
ETC_SKIPPED = ("/etc/default/etcd",)
"""Kept as it is on members with data (see the module note)."""


# --- arranging the AZ -------------------------------------------------------------------------


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


def _redis_primary_to(lab: dict[str, Any], wanted: str) -> None:
    """Make the Redis at ``wanted`` (an address) the primary by a Sentinel failover.

    Sentinel picks the replica to promote itself; the other replica is made unpromotable for
    that moment (replica-priority 0), then given its own priority back, also in its redis.conf
    (Sentinel's failover rewrites the replicas' config files).
    """
    if wait_for("a settled replication group", lambda: settled(lab), 120, interval=0.5) == wanted:
        return
    others = [a for a in redis_hosts(lab) if a != wanted and (role_of(lab, a) or {}).get("role") != "master"]
    kept = {a: direct(lab, a).config_get("replica-priority")["replica-priority"] for a in others}
    try:
        for address in others:
            direct(lab, address).config_set("replica-priority", 0)
        sentinel = redis.Redis(host=wanted, port=SENTINEL_PORT, password=secrets(lab)["redis_sentinel_password"],
                               socket_timeout=5, socket_connect_timeout=2)
        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        wait_for(f"the Redis at {wanted} primary, the others following it",
                 lambda: settled(lab) == wanted, 90, interval=0.5, tolerate=(redis.RedisError,))
    finally:
        for address, priority in kept.items():
            client = direct(lab, address)
            client.config_set("replica-priority", priority)
            client.config_rewrite()


def _backed_up_marker(lab: dict[str, Any], ds: str) -> tuple[str, str]:
    """Write a marker (mode 640) into the node's Data volume and take a file backup now;
    (its content, the node's ds_release_date)."""
    content = f"az drill {time.time():.0f}"
    rc, out = ssh(lab, ds, f"sudo docker exec onlyoffice-documentserver sh -c "
                           f"{shlex.quote(f'printf %s {shlex.quote(content)} > {MARKER} && chmod 640 {MARKER}')}"
                           f" && sudo cat {RELEASE_DATE} && sudo systemctl start ooha-filebackup.service", timeout=300)
    assert rc == 0, out
    return content, out.strip().splitlines()[0]


# --- what the quorums remember ----------------------------------------------------------------


def _etcd_peer_urls(lab: dict[str, Any], via: str) -> dict[str, str]:
    """{member name: peer URLs} from ``via``'s etcd (simple format: id, status, name, peers, clients, learner)."""
    rc, out = ssh(lab, via, f"sudo sh -c {shlex.quote(etcdctl(address_of(lab, via), 2379, 'member', 'list'))}")
    assert rc == 0, out
    return {p[2]: p[3] for p in (line.split(", ") for line in out.splitlines()) if len(p) >= 4}


def _patroni_hosts(lab: dict[str, Any], via: str) -> dict[str, str]:
    """{member: host} from ``patronictl list -f json``."""
    rc, out = ssh(lab, via, f"{PATRONICTL} list -f json")
    assert rc == 0, out
    return {m["Member"]: str(m["Host"]).rsplit(":", 1)[0] if str(m["Host"]).count(":") == 1 else str(m["Host"])
            for m in json.loads(out[out.index("["):])}


def _sentinel(state: dict[str, Any], address: str) -> redis.Redis:
    return redis.Redis(host=address, port=SENTINEL_PORT, password=secrets(state)["redis_sentinel_password"],
                       socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


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
    """Every Sentinel lists exactly the live replicas and the two other Sentinels (no old identity or address)."""
    addresses = list(redis_hosts(state))
    return all(
        view["replicas"] == sorted((a, 6379) for a in addresses if a != primary)
        and view["sentinels"] == sorted((a, SENTINEL_PORT) for a in addresses if a != address)
        for address, view in sentinel_memory(state).items()
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


def _rabbit_pids(lab: dict[str, Any], hosts: list[str]) -> dict[str, str]:
    """{host: rabbitmq-server's main PID}: a restart changes it."""
    return {h: ssh(lab, h, "systemctl show -p MainPID --value rabbitmq-server")[1].strip() for h in hosts}


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


def _checks_all_ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, explain(run)
    lines = report_lines(output_of(run))
    assert lines and all(line.startswith("OK") for line in lines.values()), explain(run)
    match = re.search(r"validation: (\d+)/(\d+) checks OK", output_of(run))
    assert match and match[1] == match[2], explain(run)


def _main_job_confirmed() -> subprocess.CompletedProcess[str]:
    """The main job without ``-y``: pyinfra plans (deferring what it decides at execute time),
    asks, and the Enter that confirms comes on stdin."""
    return subprocess.run([PYINFRA, "inventories/lab.py", "deploys/ha.py"], cwd=REPO, input="\n",
                          capture_output=True, text=True, timeout=1200, env={**os.environ, "PYINFRA_PROGRESS": "off"})


def _assert_blank(lab: dict[str, Any], host: str) -> None:
    rc, out = ssh(lab, host, "test -e /var/lib/etcd/onlyoffice/member || test -e /var/lib/postgresql "
                             "|| test -e /var/lib/redis || test -e /var/lib/rabbitmq/mnesia; echo $?")
    assert out.strip().endswith("1"), f"{host} is not blank: {out}"


# --- the drill --------------------------------------------------------------------------------


def test_lost_az_is_rebuilt_while_the_other_azs_serve(converged: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock():
        began = time.monotonic()
        lab = lab_state()
        az, holder, data_host = _leader_and_vip_in_one_az(lab)
        original = address_of(lab, data_host)
        _redis_primary_to(lab, original)
        ds_host = _in_az(lab, hosts_in(lab, "docs"), az)
        survivor_lb = next(name for name in hosts_in(lab, "lb") if name != holder)
        survivors = [h for h in hosts_in(lab, "postgres") if h != data_host]
        writer_host = next(name for name in hosts_in(lab, "docs") if host_entry(lab, name)["az"] != az)
        marker, release_date = _backed_up_marker(lab, ds_host)
        new = free_address_in_az(lab, original)

        # A document's shard-table entry (the front door writes it to Redis) must outlive the loss.
        key = key_for(writer_host, hosts_in(lab, "docs"), "azdrill")
        assert get(lab, f"/healthcheck?shardkey={key}", timeout=10).text.strip() == "true"
        entry = sentinel_client(lab).master_for(MASTER).get(f"ooha:shard:{key}")
        assert entry, "the front door stored no shard-table entry"

        forgotten_before = forgotten_count(lab, survivors, data_host)
        pids = _rabbit_pids(lab, survivors)
        arranged_s = time.monotonic() - began
        others = [a for a in redis_hosts(lab) if a != original]
        pg = PgWriter(lab, host=writer_host)
        pg.prepare(secrets(lab)["postgres_ds_password"])
        pg.start(max_seconds=1500)
        kv = Writer(lab, f"drill:az:{int(time.time())}").start()
        gone = moved = back = False
        try:
            try:
                wait_for("20 rows acknowledged", lambda: len(pg.acked()) >= 20, 60)
                wait_for("20 Redis writes acknowledged", lambda: len(kv.acked) >= 20, 30, interval=0.2)
                with Loop(lab, ["/healthcheck", f"/healthcheck?shardkey={key}"]) as loop:
                    lost_at = time.monotonic()
                    gone = True
                    lab_cli("recreate", holder, ds_host, timeout=600, check=True)
                    moved = True
                    lab_cli("recreate", data_host, "--address", new, timeout=600, check=True)
                    blank_at, blank_wall = time.monotonic(), time.time()
                    lab = lab_state()
                    assert address_of(lab, data_host) == new
                    _assert_blank(lab, data_host)
                    promoted = wait_for("the surviving Sentinels promote a replica",
                                        lambda: next(iter(p - {original}), None)
                                        if len(p := sentinels_primary(lab, others)) == 1 else None, 60, interval=0.2)
                    ok_before_rebuild = loop.ok
                    rebuilt = deploy(pyinfra_cli)
                    done_at = time.monotonic()
                kv.stop()
                events = pg.stop()
            finally:
                kv.stop()
                pg.cleanup()

            output = output_of(rebuilt)
            _checks_all_ok(rebuilt)
            assert _rabbit_pids(lab, survivors) == pids, "a surviving RabbitMQ node was restarted"

            # Clients: the front door answered throughout, writes went on, nothing acknowledged is lost.
            assert loop.ok > ok_before_rebuild, "the front door stopped answering during the rebuild"
            assert loop.gap < 15, f"the front door was silent for {loop.gap:.1f} s: {loop.failures}"
            acked = {i for kind, i, _ in events if kind == "ok"}
            during = sum(1 for kind, _, at in events if kind == "ok" and at > blank_wall)
            assert during > 0, "no write succeeded while the AZ was rebuilt"
            missing = acked - pg.present()
            assert not missing, f"acknowledged rows lost: {sorted(missing)[:20]}"
            assert kv.acked_since(lost_at) > 0, "no Redis write succeeded after the loss"
            kv_lost = kv.lost()
            assert kv_lost == [], f"{len(kv_lost)} acknowledged Redis writes lost"

            # DS: the node's files came back from the file backup.
            assert "restoring snapshot" in output, explain(rebuilt)
            rc, restored = ssh(lab, ds_host, f"sudo cat {MARKER_ON_HOST}; echo; sudo stat -c '%a' {MARKER_ON_HOST}; "
                                             f"sudo cat {RELEASE_DATE}")
            assert rc == 0 and restored.split("\n")[:3] == [marker, "640", release_date], restored

            # LB: the rebuilt one is BACKUP (nopreempt).  The shard table outlived the Redis
            # primary's loss: the document still has an entry, and the front door serves it.  (Its
            # node may have changed: the new Sentinel address recreates every DS container one at a
            # time, and a document whose node is down moves to its next node, by design.)
            assert vip_holder(lab) == survivor_lb, "the rebuilt LB took the VIP back"
            kept = sentinel_client(lab).master_for(MASTER).get(f"ooha:shard:{key}")
            assert kept and kept.decode() in hosts_in(lab, "docs"), (entry, kept)
            assert get(lab, f"/healthcheck?shardkey={key}", timeout=10).text.strip() == "true"

            # Redis/Sentinel: the rebuilt host follows the promoted primary; no ghost anywhere.
            assert wait_for("one primary, the rebuilt host following it", lambda: settled(lab), 60, interval=0.5) == promoted
            info = role_of(lab, new) or {}
            assert info.get("role") == "slave" and info.get("master_host") == promoted, info
            assert wait_for("every Sentinel lists exactly the live replicas and Sentinels",
                            lambda: no_ghosts(lab, promoted), 60, interval=1), json.dumps(sentinel_memory(lab))

            # RabbitMQ: 3/3 running, no partition, the old identity forgotten, the new address in every host table.
            wanted = sorted(f"rabbit@{h}" for h in hosts_in(lab, "rabbitmq"))
            for host in hosts_in(lab, "rabbitmq"):
                status = rabbit_status(lab, host)
                assert status and status["members"] == wanted and status["running_nodes"] == wanted, (host, status)
                assert status["partitions"] == {}, (host, status)
                rc, out = ssh(lab, host, f"sudo rabbitmqctl eval {shlex.quote(RESOLVER_TABLE)}")
                assert (parse_resolver_table(out.splitlines()) or {}).get(data_host) == new, (host, out)
            assert forgotten_count(lab, survivors, data_host) > forgotten_before

            # etcd and Patroni have the member at the new address; nothing under /etc names the old one.
            for via in hosts_in(lab, "etcd"):
                urls = _etcd_peer_urls(lab, via)
                assert urls.get(data_host) == f"https://{new}:2380" and len(urls) == 3, (via, urls)
                assert not any(original in u for u in urls.values()), (via, urls)
            patroni = wait_for("patronictl lists the member at its new address",
                               lambda: p if (p := _patroni_hosts(lab, survivors[0])).get(data_host) == new else None, 120)
            assert original not in patroni.values() and len(patroni) == 3, patroni
            assert _etc_naming(lab, original) == {}

            checked_s = time.monotonic() - done_at
            rerun_at = time.monotonic()
            rerun = deploy(pyinfra_cli)
            rerun_s = time.monotonic() - rerun_at
            assert rerun.returncode == 0, explain(rerun)
            assert changed_operations(output_of(rerun)) == {}, output_of(rerun)[-4000:]
            print(f"\nlost {az} ({holder} held the VIP, {data_host} led PostgreSQL and Redis, {ds_host}); "
                  f"{data_host} back blank at {new}: blank in {blank_at - lost_at:.0f} s, main job rebuilt it in "
                  f"{done_at - blank_at:.0f} s (RTO {done_at - lost_at:.0f} s), every check OK; front door "
                  f"{loop.ok} ok / {loop.failed} failed (longest gap {loop.gap:.1f} s); {len(acked)} rows acknowledged, "
                  f"{during} during the rebuild, 0 lost; {len(kv.acked)} Redis writes, 0 lost (longest gap "
                  f"{kv.longest_gap(after=lost_at):.1f} s); rerun 0 changed ({rerun_s:.0f} s); arranging the AZ took "
                  f"{arranged_s:.0f} s, the checks {checked_s:.0f} s")

            # Back at the topology address: a blank host again, the main job confirmed on stdin.
            pids = _rabbit_pids(lab, survivors)
            lab_cli("recreate", data_host, "--address", original, timeout=600, check=True)
            lab = lab_state()
            assert address_of(lab, data_host) == original
            _assert_blank(lab, data_host)
            started = time.monotonic()
            back_run = _main_job_confirmed()
            back_s = time.monotonic() - started
            _checks_all_ok(back_run)
            assert _rabbit_pids(lab, survivors) == pids, "a surviving RabbitMQ node was restarted"
            assert _etc_naming(lab, new) == {}
            back = True  # only now: a failed check above leaves the clean-up below to converge the lab
            print(f"{data_host} back at {original}: main job (without -y) {back_s:.0f} s, every check OK")
        finally:
            if gone and not back:
                # Leave the lab as it began: every host at its topology address, converged.
                if moved:
                    lab_cli("recreate", data_host, "--address", original, timeout=600)
                deploy(pyinfra_cli)
