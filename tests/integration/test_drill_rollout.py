"""Rollout drills (issue 11): deploys/patch.py and deploys/rollback.py under load, on the lab.

One module, one exclusive hold of the lab, state restored once at the end (every node back on
the deployed tag, the node table cleared, no lock left):
- a patch 9.3.0.1 -> 9.3.1.2 under idempotent GETs through the front door and editors coming and
  going on every node; a second patch started while the first holds the lock is refused; the
  first is interrupted (Ctrl-C) between waves and the same command resumes it; 0 failed
  requests, 0 sessions cut (ds_drain_seconds longer than the sessions); every node on 9.3.1.2,
  the ledger says so; a rerun does nothing; then the rollback to the ledger's previous release
  (compat gate skipped: that image ran healthy here), 0 failed, 0 cut;
- the broken build (lab registry 9.3.2.9, /healthcheck decays to false 20 s after start): the
  compatibility gate refuses it with no live node touched; with the gate forced off, the
  canary's soak fails, the canary is put back on its previous image automatically, the other
  nodes never change, 0 failed requests.
Shorter soaks than production (15 s) keep the suite's time; benchmarks/rollout.py runs the
full-length rollout and prints its figures.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from lab.client import PyinfraRun, hosts_in, output_of, run_pyinfra, ssh
from lab.registry import DS_BROKEN, DS_VERSIONS
from lab.workload import Loop, SessionChurn
from tests.integration.deploytools import drill_lab
from tests.integration.dstools import container_id, leader

pytestmark = [pytest.mark.lab, pytest.mark.timeout(2400)]

INVENTORY = "inventories/lab.py"
DEPLOYED, NEWER = DS_VERSIONS[0][0], DS_VERSIONS[1][0]
BROKEN = next(iter(DS_BROKEN))
FAST = ("--data", "rollout_soak_seconds=15", "--data", "ds_drain_seconds=30", "--data", "rollout_compat_watch_seconds=30")
"""Session hold (8 s) < drain bound (30 s): no session may be cut."""
PATHS = ["/healthcheck", "/healthcheck?shardkey=rollout-drill-doc"]
"""Idempotent GETs through the front door: one without a shard key, one for a document."""


def image_version(lab: dict[str, Any], node: str) -> str:
    code, out = ssh(lab, node, "sudo docker inspect -f '{{.Config.Image}}' onlyoffice-documentserver")
    assert code == 0, out
    return out.strip().rsplit(":", 1)[-1].split("@")[0]


def ops_sql(lab: dict[str, Any], sql: str) -> str:
    code, out = ssh(lab, leader(lab), f"echo {sql!r} | sudo -u postgres psql -h /var/run/postgresql -d ooha_ops -XAtq")
    assert code == 0, out
    return out.strip()


def restore(lab: dict[str, Any]) -> None:
    """Every node back on the deployed tag and active; no lock; the table of node states empty."""
    result = run_pyinfra("-y", INVENTORY, "deploys/ha.py", "--data", "layers=documentserver",
                         "--data", "ds_release_change=drill-restore", timeout=900)
    assert result.returncode == 0, output_of(result)[-3000:]
    code, out = ssh(lab, "data1", "sudo ooha-redis-cli DEL ooha:nodestate >/dev/null 2>&1 || true")
    ops_sql(lab, "DELETE FROM rollout_lock")


@pytest.fixture(scope="module")
def rollout_lab(request: pytest.FixtureRequest) -> Any:
    with drill_lab(request, restore) as lab:
        yield lab


def patch(*extra: str) -> PyinfraRun:
    return PyinfraRun("-y", INVENTORY, "deploys/patch.py", *FAST, *extra)


def test_patch_and_rollback_under_load_fail_no_request_and_cut_no_session(rollout_lab: dict[str, Any]) -> None:
    lab = rollout_lab
    nodes = hosts_in(lab, "docs")
    with Loop(lab, PATHS, timeout=10.0) as loop, \
            SessionChurn(lab) as churn:
        first = patch("--data", f"ds_version={NEWER}")
        first.wait_line(r"wave 1/3 .* soak: start", 600)
        second = run_pyinfra("-y", INVENTORY, "deploys/patch.py", *FAST, "--data", f"ds_version={NEWER}", timeout=300)
        assert second.returncode != 0 and "rollout lock held by" in output_of(second), output_of(second)[-2000:]
        first.wait_line(r"wave 2/3 .* drain: start", 600)
        first.interrupt()
        assert first.wait(600) == 130, first.output[-3000:]
        assert "interrupted; rerun the same command" in first.output
        resumed = patch("--data", f"ds_version={NEWER}")
        assert resumed.wait(1500) == 0, resumed.output[-4000:]
        assert "resuming rollout" in resumed.output
        patched = resumed.output
    print(f"\npatch {DEPLOYED} -> {NEWER} (interrupted once, resumed): {loop.failed} failed of {loop.ok + loop.failed} "
          f"GETs; {churn.summary()}")
    print("\n".join(line for line in patched.splitlines() if line.startswith(("rollout ", "phase times", "sessions ended"))))
    assert loop.failed == 0, loop.failures
    assert churn.cut == 0 and churn.failed_open == 0, churn.failures
    assert {image_version(lab, n) for n in nodes} == {NEWER}
    ledger = ops_sql(lab, "SELECT node, current->>'version', previous->>'version' FROM node_release ORDER BY node")
    assert ledger.splitlines() == [f"{n}|{NEWER}|{DEPLOYED}" for n in sorted(nodes)], ledger

    again = run_pyinfra("-y", INVENTORY, "deploys/patch.py", *FAST, "--data", f"ds_version={NEWER}", timeout=300)
    assert again.returncode == 0 and "nothing to do" in output_of(again), output_of(again)[-2000:]

    with Loop(lab, PATHS, timeout=10.0) as loop, \
            SessionChurn(lab) as churn:
        back = PyinfraRun("-y", INVENTORY, "deploys/rollback.py", *FAST)
        assert back.wait(1500) == 0, back.output[-4000:]
    print(f"\nrollback {NEWER} -> {DEPLOYED}: {loop.failed} failed of {loop.ok + loop.failed} GETs; {churn.summary()}")
    print("\n".join(line for line in back.lines if line.startswith(("rollout ", "phase times", "sessions ended"))))
    assert "compat gate skipped" in back.output
    assert loop.failed == 0, loop.failures
    assert churn.cut == 0 and churn.failed_open == 0, churn.failures
    assert {image_version(lab, n) for n in nodes} == {DEPLOYED}
    records = ops_sql(lab, "SELECT kind, status FROM rollout ORDER BY started")
    assert records.splitlines()[-2:] == ["patch|done", "rollback|done"], records


def test_the_broken_build_is_refused_by_compat_and_without_it_the_canary_is_reverted(rollout_lab: dict[str, Any]) -> None:
    lab = rollout_lab
    nodes = hosts_in(lab, "docs")
    before = {n: container_id(lab, n) for n in nodes}
    refused = run_pyinfra("-y", INVENTORY, "deploys/patch.py", *FAST, "--data", f"ds_version={BROKEN}", timeout=900)
    text = output_of(refused)
    assert refused.returncode == 1 and re.search(r"compat: FAILED.*healthcheck", text), text[-3000:]
    assert {n: container_id(lab, n) for n in nodes} == before, "the compat gate touched a live node"

    with Loop(lab, PATHS, timeout=10.0) as loop:
        forced = PyinfraRun("-y", INVENTORY, "deploys/patch.py", *FAST, "--data", f"ds_version={BROKEN}",
                            "--data", "rollout_compat=false")
        code = forced.wait(1500)
    print(f"\nbroken build with the compat gate off: exit {code}, {loop.failed} failed of {loop.ok + loop.failed} GETs")
    print("\n".join(line for line in forced.lines if line.startswith(("rollout ", "phase times"))))
    assert code == 1, forced.output[-4000:]
    canary = re.search(r"canary (\S+)\)", forced.output)
    assert canary, forced.output[-3000:]
    assert re.search(r"rollout \S+ aborted", forced.output), forced.output[-3000:]
    assert image_version(lab, canary.group(1)) == DEPLOYED
    others = [n for n in nodes if n != canary.group(1)]
    assert {n: container_id(lab, n) for n in others} == {n: before[n] for n in others}, "a node after the canary changed"
    assert loop.failed == 0, loop.failures
