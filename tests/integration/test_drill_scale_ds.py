"""Scale drill (issue 11, deliverable 4): a Document Server node retired and joined again on the lab.

Under idempotent GETs through the front door and editors coming and going (sessions held 8 s,
``ds_drain_seconds`` 30 s), one exclusive hold of the lab:

1. ds3 dropped from the inventory WITHOUT the scale-in: the main job refuses, naming ds3 and the
   command; nothing changes (both LBs still route to ds3);
2. ``deploys/scale.py --data ds_retire=ds3`` with 3 editing sessions held open on ds3 (15 s): the
   drain waits for them (none cut), out of both LBs, THEN its container stops;
   the ledger drops its row and records the scale-in; a rerun does nothing; the main job on ds3
   while it is still in the inventory refuses (it would start the container again);
3. ds3 removed from the inventory (a copy of inventories/lab.py without it) and the main job:
   both LBs' tables list ds1 and ds2 only;
4. ``deploys/scale.py --data ds_join=ds3`` with the lab inventory: ds3 stays ``out`` in the
   node states until its health gate passed (sampled during the run), then active;
5. the lab as before: 3 nodes active and in both tables, containers running, a main-job rerun
   changes nothing.
0 failed GETs and 0 editing sessions cut throughout; figures printed.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab.client import PyinfraRun, changed_operations, lab_lock, output_of, run_pyinfra, ssh
from lab.workload import MASTER, Loop, SessionChurn, hold_sessions_on, sentinel_client
from ooha.rollout import scale

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

INVENTORY = "inventories/lab.py"
NODE = "ds3"
KEY = "ooha:nodestate"
FAST = ("--data", "ds_drain_seconds=30")
"""Session hold (8 s) < drain bound (30 s): no session may be cut."""
PATHS = ["/healthcheck", "/healthcheck?shardkey=scale-drill-doc"]


def inventory_without(tmp_path: Path, node: str) -> str:
    """inventories/lab.py with ``node`` removed from every group (what an operator's edit does)."""
    path = tmp_path / f"lab_without_{node}.py"
    path.write_text(
        "from inventories.labstate import load_lab_groups\n"
        "from ooha.preflight import check_inventory_groups\n\n"
        "_groups = load_lab_groups()\n"
        f"all = ([h for h in _groups['all'][0] if h[0] != {node!r}], _groups['all'][1])  # noqa: A001\n"
        "for _role in ('lb', 'docs', 'postgres', 'etcd', 'redis', 'rabbitmq'):\n"
        f"    globals()[_role] = [n for n in _groups[_role] if n != {node!r}]\n"
        "check_inventory_groups(globals(), source=__file__)\n", encoding="utf-8")
    return str(path)


def states(lab: dict[str, Any]) -> dict[str, str]:
    raw = sentinel_client(lab).master_for(MASTER).hgetall(KEY)
    return {k.decode(): v.decode() for k, v in raw.items()}


def lb_table(lab: dict[str, Any], lb: str) -> list[str] | None:
    code, out = ssh(lab, lb, "sudo cat /etc/nginx/onlyoffice-ha/ooha_shard.lua")
    assert code == 0, out
    return scale.lua_nodes(out.splitlines())


def running(lab: dict[str, Any], node: str) -> str:
    code, out = ssh(lab, node, "sudo docker inspect -f '{{.State.Running}}' onlyoffice-documentserver")
    return out.strip() if code == 0 else "absent"


def ops_sql(lab: dict[str, Any], sql: str) -> str:
    from tests.integration.dstools import leader

    code, out = ssh(lab, leader(lab), f"echo {sql!r} | sudo -u postgres psql -h /var/run/postgresql -d ooha_ops -XAtq")
    assert code == 0, out
    return out.strip()


HELD = 3
HOLD_S = 15.0
"""Editing sessions opened on ds3 right before the scale-in, each held 15 s (< the 30 s bound):
the drain must wait for them and none may be cut."""


@pytest.fixture(scope="module")
def scale_lab(request: pytest.FixtureRequest) -> Any:
    with lab_lock():
        lab = dict(request.getfixturevalue("converged"))
        try:
            yield lab
        finally:
            # Put the lab back for the tests after this one: the node running and active, and in
            # both LBs' tables (a main job is refused while a table and the inventory disagree).
            # ds_join of the node also supersedes an unfinished scale-in of it.
            lbs = [h["name"] for h in lab["hosts"] if "lb" in (h.get("roles") or [])]
            if (running(lab, NODE) != "true" or states(lab).get(NODE, "active") != "active"
                    or any(NODE not in (lb_table(lab, lb) or []) for lb in lbs)):
                run_pyinfra("-y", INVENTORY, "deploys/scale.py", "--data", f"ds_join={NODE}", *FAST, timeout=1200)


def test_a_node_retired_and_joined_again_under_load(scale_lab: dict[str, Any], tmp_path: Path) -> None:
    lab = scale_lab
    lbs = [h["name"] for h in lab["hosts"] if "lb" in (h.get("roles") or [])]
    without = inventory_without(tmp_path, NODE)
    figures: list[str] = []
    assert {lb: lb_table(lab, lb) for lb in lbs} == {lb: ["ds1", "ds2", "ds3"] for lb in lbs}
    with Loop(lab, PATHS, timeout=10.0) as loop, SessionChurn(lab) as churn:
        # 1. removed from the inventory without the scale-in: refused, nothing changes
        t0 = time.monotonic()
        refused = run_pyinfra("-y", without, "deploys/ha.py", "--data", "layers=loadbalancer", timeout=600)
        text = output_of(refused)
        assert refused.returncode != 0, text[-3000:]
        assert f"{NODE} is in the load balancers' table but no longer in the inventory" in text, text[-3000:]
        assert f"deploys/scale.py --data ds_retire={NODE}" in text
        assert all(lb_table(lab, lb) == ["ds1", "ds2", "ds3"] for lb in lbs)
        figures.append(f"refusal of the unprepared removal: {time.monotonic() - t0:.0f} s")

        # 2. scale-in with editing sessions open on it: drain, out of both LBs, then the container stops
        held = hold_sessions_on(lab, NODE, HELD, HOLD_S, nodes=["ds1", "ds2", "ds3"], prefix="scale-held")
        t0 = time.monotonic()
        retire = run_pyinfra("-y", INVENTORY, "deploys/scale.py", "--data", f"ds_retire={NODE}", *FAST, timeout=900)
        text = output_of(retire)
        held.join(HOLD_S + 15)
        figures.append(f"sessions held on {NODE} across its drain: {held.opened} opened ({held.on_node} on {NODE}), "
                       f"{held.ended} ended on their own, {len(held.cut)} cut")
        assert held.on_node == HELD and held.ended == HELD and not held.cut, held
        waited = re.search(r"drain: OK 0 editing sessions left after (\d+) s", text)
        assert waited and int(waited.group(1)) >= 5, text[-3000:]  # the drain waited for them
        assert retire.returncode == 0, text[-4000:]
        figures.append(f"scale-in of {NODE}: {time.monotonic() - t0:.0f} s")
        figures += [line.strip() for line in text.splitlines() if line.startswith(("scale-in ", "phase times", "sessions ended"))]
        assert states(lab).get(NODE) == "out"
        assert running(lab, NODE) == "false"
        assert "sessions ended by the drain bound: 0" in text
        assert ops_sql(lab, f"SELECT count(*) FROM node_release WHERE node = '{NODE}'") == "0"
        assert ops_sql(lab, "SELECT kind || '|' || status FROM rollout ORDER BY started DESC LIMIT 1") == "scale-in|done"
        again = run_pyinfra("-y", INVENTORY, "deploys/scale.py", "--data", f"ds_retire={NODE}", *FAST, timeout=600)
        assert again.returncode == 0 and "nothing to do" in output_of(again), output_of(again)[-2000:]
        # still in the inventory: the main job would start its container again; it refuses
        stale = run_pyinfra("-y", INVENTORY, "deploys/ha.py", "--limit", NODE, "--data", "layers=documentserver", timeout=600)
        assert stale.returncode != 0 and f"{NODE}: retired by scale-in" in output_of(stale), output_of(stale)[-3000:]
        assert running(lab, NODE) == "false"

        # 3. the inventory without it: the main job takes it out of both tables
        t0 = time.monotonic()
        removed = run_pyinfra("-y", without, "deploys/ha.py", timeout=1200)
        assert removed.returncode == 0, output_of(removed)[-4000:]
        figures.append(f"main job without {NODE}: {time.monotonic() - t0:.0f} s")
        assert {lb: lb_table(lab, lb) for lb in lbs} == {lb: ["ds1", "ds2"] for lb in lbs}

        # 4. scale-out: announced out, main job, health gate, THEN active
        samples: list[tuple[float, str]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append((time.monotonic(), states(lab).get(NODE, "active")))
                except Exception:
                    pass
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        join = PyinfraRun("-y", INVENTORY, "deploys/scale.py", "--data", f"ds_join={NODE}", *FAST)
        join.wait_line(r"join: start", 300)
        sampler.start()
        join.wait_line(r"health: OK", 900)
        gated = time.monotonic()
        code = join.wait(600)
        stop.set()
        sampler.join(timeout=10)
        assert code == 0, join.output[-4000:]
        figures.append(f"scale-out of {NODE}: {time.monotonic() - t0:.0f} s (health gate passed after {gated - t0:.0f} s)")
        figures += [line.strip() for line in join.lines if line.startswith(("scale-out ", "phase times"))]
    before_gate = [s for t, s in samples if t < gated - 1]
    assert before_gate and set(before_gate) == {"out"}, samples
    # What the state is for: no new document went to the joining node before its gate passed.
    early = [at - t0 for at, node in churn.opened_at if node == NODE and t0 <= at < gated - 1]
    assert not early, f"sessions opened on {NODE} before its health gate, at {early} s into the join"
    opened_during = sum(1 for at, _ in churn.opened_at if t0 <= at < gated - 1)
    assert opened_during >= 5, f"only {opened_during} sessions opened during the join: the check above saw nothing"
    figures.append(f"{NODE} node state sampled {len(before_gate)} times before its health gate: always out; "
                   f"{opened_during} documents opened meanwhile, none on {NODE}")
    figures.append(f"front door: {loop.failed} failed of {loop.ok + loop.failed} GETs; {churn.summary()}")
    print("\n" + "\n".join(figures))
    assert loop.failed == 0, loop.failures
    assert churn.cut == 0 and churn.failed_open == 0, churn.failures

    # 5. the lab as before
    assert {n: states(lab).get(n, "active") for n in ("ds1", "ds2", "ds3")} == {n: "active" for n in ("ds1", "ds2", "ds3")}
    assert {lb: lb_table(lab, lb) for lb in lbs} == {lb: ["ds1", "ds2", "ds3"] for lb in lbs}
    assert running(lab, NODE) == "true"
    assert NODE in ops_sql(lab, "SELECT string_agg(node, ',' ORDER BY node) FROM node_release").split(',')
    rerun = run_pyinfra("-y", INVENTORY, "deploys/ha.py", timeout=1200)
    assert rerun.returncode == 0, output_of(rerun)[-4000:]
    assert changed_operations(output_of(rerun)) == {}, changed_operations(output_of(rerun))
