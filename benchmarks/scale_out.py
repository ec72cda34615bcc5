"""Scale-out (issue 3 point 6): a fourth PostgreSQL member joins as a streaming replica without
disturbing the leader, a rerun changes nothing, and removing it leaves the lab as it was
(Patroni lists data1-3, no replication slot, no container, no host key, nothing in pg_hba or
HAProxy names it).

    .venv/bin/python benchmarks/scale_out.py

(Takes the exclusive lab lock itself; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)  Needs a
converged lab and leaves it converged.  Prints how long data4 took to stream after its Patroni
started, the whole join deploy, the rows written through ds1:5432 during the join (all on
data4), the rerun and the removal.  It was the lab suite's tests/integration/test_scale_out.py
(about 3 min of the fresh-clone CI run); the suite keeps the cheap parts: the inventory check
refusing a fourth voter that gives an AZ 2 of 4 (tests/unit/test_inventory_check.py) and the
Patroni report naming a missing fourth member (tests/unit/test_patroni_layer.py).

data4 goes in az1 with the postgres role only: in etcd, redis or rabbitmq it would give
az1 two of four voters, which the inventory check refuses (losing az1 loses quorum).

While data4 exists every lab command needs the extended topology: a lab container that
is not in the topology is foreign, and `lab up` replaces a lab with a foreign container
(down, then up).  So the removal deletes the container before `lab up` runs with the
default topology, and refuses to run it while the container is still there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import yaml

from lab.client import (changed_operations, explain, locked_lab, output_of, REPO, report_lines, run_pyinfra, secrets,
                        ssh, TARGETS, wait_for)
from lab.workload import cluster_view, DATA_HOSTS, dumps, healthy, leader_psql, PgWriter, TABLE, wait_healthy


class Failed(SystemExit):
    """A check of the benchmark did not hold: the message, exit status 1."""


def require(condition: bool, message: Any) -> None:
    """Stop the benchmark with ``message`` when ``condition`` does not hold (asserts vanish under -O)."""
    if not condition:
        raise Failed(f"scale-out: {message}")


NEW = "data4"
NEW_AZ = "az1"
NEW_ADDRESS = "198.18.1.32"
MAX_LAG_BYTES = 1024 * 1024


# --- the extended lab ---------------------------------------------------------------------


def extended_topology(tmp_path: Path) -> Path:
    """lab/topology.yml plus data4 (az1, postgres only), written under tmp_path."""
    doc = yaml.safe_load((REPO / "lab" / "topology.yml").read_text(encoding="utf-8"))
    require(NEW not in doc["hosts"], "lab/topology.yml already has data4")
    doc["hosts"][NEW] = {"az": NEW_AZ, "addresses": {NEW_AZ: NEW_ADDRESS}, "roles": ["postgres"]}
    path = tmp_path / "topology-scale-out.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def lab_env(topology: Path | None) -> dict[str, str]:
    """The environment for lab commands and deploys: the extended topology, or the default."""
    env = {k: v for k, v in os.environ.items() if k != "OOHA_LAB_TOPOLOGY"}
    if topology is not None:
        env["OOHA_LAB_TOPOLOGY"] = str(topology)
    return env


def lab_run(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """`python -m lab ARGS` with ``env`` (the topology), bounded in time."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def lab_up(env: dict[str, str]) -> dict[str, Any]:
    """`lab up` then `lab status --json` with ``env``; the status dict."""
    up = lab_run(env, "up")
    require(up.returncode == 0, f"python -m lab up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    status = lab_run(env, "status", "--json", timeout=120)
    require(status.returncode == 0, status.stderr)
    return json.loads(status.stdout)


def remove_container(name: str) -> list[str]:
    """Stop Patroni in data4 (console), shut the container down, remove it and its volumes.

    Returns what is left over (empty when the container and its volume are gone).
    """
    cli = docker.from_env(version="auto")
    container_name = f"ooha-{name}"
    try:
        container = cli.containers.get(container_name)
    except docker.errors.NotFound:
        container = None
    if container is not None:
        if container.status == "running":
            # A clean stop: the member key expires, the leader drops its slot.
            container.exec_run(["systemctl", "stop", "patroni.service"], user="root")
            container.stop(timeout=60)
        container.remove(v=True, force=True)
    try:
        cli.volumes.get(f"{container_name}-docker").remove(force=True)
    except docker.errors.NotFound:
        pass
    left = [c.name for c in cli.containers.list(all=True, filters={"name": f"^/{container_name}$"})]
    left += [v.name for v in cli.volumes.list(filters={"name": f"{container_name}-docker"})
             if v.name == f"{container_name}-docker"]
    return left


def remove_host_cert(lab: dict[str, Any], name: str) -> None:
    """The deploy CA issued data4 a certificate on this machine: remove it with the host."""
    hosts_dir = Path(lab["state_dir"]) / "pki" / "hosts"
    for suffix in (".crt", ".key"):
        (hosts_dir / f"{name}{suffix}").unlink(missing_ok=True)


# --- what the leader looks like --------------------------------------------------------------


def leader_identity(lab: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    """Leader name, timeline, PostgreSQL's postmaster start time and Patroni's process start."""
    leader = view["leader"]
    member = next(m for m in view["members"] if m["name"] == leader)
    rc, started = leader_psql(lab, leader, "select pg_postmaster_start_time();")
    require(rc == 0, started)
    rc, patroni = ssh(lab, leader, "systemctl show -p MainPID -p ExecMainStartTimestamp patroni.service")
    require(rc == 0, patroni)
    return {"leader": leader, "timeline": member["timeline"], "postmaster_start": started.strip(),
            "patroni_process": "; ".join(sorted(patroni.strip().splitlines()))}


def slots(lab: dict[str, Any], leader: str) -> list[str]:
    rc, out = leader_psql(lab, leader, "select slot_name from pg_replication_slots order by 1;")
    require(rc == 0, out)
    return out.split()


def join_seconds(lab4: dict[str, Any], leader: str) -> float:
    """From data4's Patroni start to the leader's walsender for data4 (base backup included)."""
    rc, out = ssh(lab4, NEW, "date -d \"$(systemctl show -p ExecMainStartTimestamp --value patroni.service)\" +%s")
    require(rc == 0, out)
    started = float(out.strip())
    rc, out = leader_psql(lab4, leader, "select extract(epoch from backend_start) from pg_stat_replication "
                                        f"where application_name = '{NEW}';")
    require(rc == 0 and bool(out.strip()), out)
    return float(out.split()[0]) - started


def all_ok(lines: dict[tuple[str, str], str]) -> bool:
    return bool(lines) and all(value.startswith("OK") for value in lines.values())


# --- the benchmark ----------------------------------------------------------------------------


def join_and_leave(lab: dict[str, Any], workdir: Path) -> list[str]:
    """Add data4, measure its join, rerun, remove it and check the lab is as before; the figure lines."""
    figures = []
    before = wait_healthy(lab)
    identity = leader_identity(lab, before)
    leader = identity["leader"]
    require(slots(lab, leader) == sorted(n for n in DATA_HOSTS if n != leader), "slots before the benchmark")
    topology = extended_topology(workdir)
    extended = lab_env(topology)
    default = lab_env(None)
    writer = PgWriter(lab, host="ds1")
    try:
        # data4 appears; the lab reuses the running hosts.
        lab4 = lab_up(extended)
        require([h["name"] for h in lab4["hosts"] if h["state"] != "running"] == [], lab4["hosts"])

        # Rows written through ds1's HAProxy :5432 while data4 joins.
        writer.prepare(secrets(lab)["postgres_ds_password"])
        writer.start(max_seconds=1500)
        wait_for("rows written before the join", lambda: len(writer.acked()) >= 10, 60)

        began = time.monotonic()
        joined = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1500, env=extended)
        deploy_seconds = time.monotonic() - began
        output = output_of(joined)
        require(joined.returncode == 0, explain(joined))
        lines = report_lines(output, (*TARGETS, NEW))
        require(all_ok(lines), lines)
        require(lines[(NEW, "postgres")].startswith(f"OK leader {leader}, 3 replicas streaming"), lines)
        restarts = [op for op in changed_operations(output) if "Restart" in op and "chrony" not in op]
        require(restarts == [], f"the join restarted services on the running hosts: {restarts}")

        # data4 streams from the same leader, with a small lag.
        hosts4 = (*DATA_HOSTS, NEW)
        view = wait_for(
            "data4 streaming with a small lag",
            lambda: v if (v := cluster_view(lab4, hosts4)) and healthy(v, members=4) and any(
                m["name"] == NEW and m["streaming"] and m["state"] == "running" and m["lag"] is not None
                and m["lag"] <= MAX_LAG_BYTES for m in v["members"]) else None,
            120,
        )
        member = next(m for m in view["members"] if m["name"] == NEW)
        require(member["self_role"] == "replica" and member["timeline"] == identity["timeline"], dumps(view))
        require(leader_identity(lab4, view) == identity, "the leader was disturbed by the join")
        require(NEW in slots(lab4, leader), "no replication slot for data4")
        join = join_seconds(lab4, leader)

        # Every acknowledged row, written through the endpoint, is on data4.
        events = writer.stop()
        acked = {i for kind, i, _ in events if kind == "ok"}
        failed = sum(1 for kind, _, _ in events if kind == "fail")
        require(len(acked) >= 10, events[-5:])

        def on_data4() -> set[int] | None:
            rc, out = leader_psql(lab4, NEW, f"select id from {TABLE} where run = '{writer.run}';")
            present = {int(x) for x in out.split()} if rc == 0 else set()
            return present if acked <= present else None

        wait_for("the acknowledged rows on data4", on_data4, 60)
        figures.append(f"{NEW} joined as a streaming replica of {leader} {join:.1f} s after its Patroni started "
                       f"(the whole deploy took {deploy_seconds:.0f} s); {len(acked)} rows written through ds1:5432 "
                       f"during the join are on {NEW} ({failed} attempts failed); leader, timeline "
                       f"{identity['timeline']} and start times unchanged")

        # A second run changes nothing.
        began = time.monotonic()
        rerun = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1500, env=extended)
        require(rerun.returncode == 0, output_of(rerun)[-6000:])
        require(changed_operations(output_of(rerun)) == {}, changed_operations(output_of(rerun)))
        figures.append(f"rerun with {NEW}: {time.monotonic() - began:.0f} s, 0 changed")
    finally:
        writer.cleanup()
        left = remove_container(NEW)
        if left:
            # `lab up` with the default topology would take these for a foreign lab and
            # replace the whole lab: leave that to a person.
            raise Failed(f"could not remove {', '.join(left)}: remove it by hand before any "
                         f"`python -m lab` command (or use OOHA_LAB_TOPOLOGY={topology})")
        remove_host_cert(lab, NEW)
        lab_up(default)
        # pg_hba (Patroni) and HAProxy drop data4.
        began = time.monotonic()
        restored = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1500, env=default)
        removal_seconds = time.monotonic() - began

    output = output_of(restored)
    require(restored.returncode == 0, explain(restored))
    require(all_ok(report_lines(output)), report_lines(output))
    view = wait_for("Patroni listing exactly data1-3",
                    lambda: v if (v := cluster_view(lab)) and sorted(m["name"] for m in v["members"]) == list(DATA_HOSTS)
                    and healthy(v) else None, 60)
    require(view["leader"] == leader, dumps(view))
    wait_for("the leader to drop data4's replication slot", lambda: NEW not in slots(lab, view["leader"]), 60)
    for name in DATA_HOSTS:
        rc, hba = ssh(lab, name, "sudo cat /var/lib/postgresql/15/onlyoffice/pg_hba.conf")
        require(rc == 0 and NEW_ADDRESS not in hba, hba)
    for name in ("ds1", "ds2", "ds3"):
        rc, cfg = ssh(lab, name, "sudo cat /etc/haproxy/haproxy.cfg")
        require(rc == 0 and NEW_ADDRESS not in cfg and NEW not in cfg, cfg)
    state = json.loads((Path(lab["state_dir"]) / "state.json").read_text(encoding="utf-8"))
    require(sorted(h["name"] for h in state["hosts"]) == sorted(h["name"] for h in lab["hosts"]), state["hosts"])
    require(NEW_ADDRESS not in Path(lab["known_hosts"]).read_text(encoding="utf-8"), "data4 still in known_hosts")
    figures.append(f"{NEW} removed: the main job dropped it from pg_hba and HAProxy in {removal_seconds:.0f} s; "
                   f"Patroni lists data1-3, {leader} still leads, no slot, no container, no host key")
    return figures


def main() -> int:
    with locked_lab() as lab, tempfile.TemporaryDirectory(prefix="ooha-scale-out-") as workdir:
        for line in join_and_leave(lab, Path(workdir)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
