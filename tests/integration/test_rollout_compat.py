"""The rollout's compatibility gate on the lab (ooha/rollout/live/compat.py + gates.compat_gate).

The good newer release (9.3.1.2) passes; the deliberately broken one (9.3.2.9, lab/registry.py:
/healthcheck true for 20 s, then false for ever) is refused with the defect named, although a
one-shot probe would pass it. Afterwards no scratch container, database, vhost, Redis key or
file is left, and the live Document Server containers were never touched.

The gate runs as the driver runs it: inside the pyinfra CLI at deploy-file load time with every
inventory host connected (a probe deploy file written to tmp_path, queuing no operation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lab.client import explain, lab_lock, ssh
from lab.registry import DS_BROKEN
from tests.integration.dstools import DOCS, container_id, healthy, leader

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

GOOD = "9.3.1.2"
BROKEN = next(iter(DS_BROKEN))
HOST = "ds1"
DATA = ("data1", "data2", "data3")

PROBE = '''
"""Runs the compat gate once per CLI run for each tag in $OOHA_COMPAT_TAGS on $OOHA_COMPAT_HOST."""
import json
import os

from pyinfra import inventory, state

if getattr(state, "_ooha_compat_probe", None) is None:
    state._ooha_compat_probe = True
    from ooha.rollout.gates import compat_gate
    from ooha.rollout.live.compat import run_compat
    from ooha.rollout.release import ImageRef

    ds = inventory.get_host(os.environ["OOHA_COMPAT_HOST"])
    groups = [list(inventory.get_group(name)) for name in ("postgres", "rabbitmq", "redis")]
    results = []
    for tag in os.environ["OOHA_COMPAT_TAGS"].split(","):
        target = ImageRef(str(ds.data.get("ds_image")), tag)
        obs, detail = run_compat(ds, *groups, target, watch_seconds=int(os.environ["OOHA_COMPAT_WATCH"]))
        gate = compat_gate(obs, target, ds.name)
        results.append({"tag": tag, "ok": gate.ok, "lines": gate.lines(), "detail": detail,
                        "healthcheck": obs.healthcheck, "version": obs.version, "websocket": obs.websocket_opened,
                        "tables": list(obs.tables), "jwt_from_env": obs.jwt_secret_from_env,
                        "leftovers": list(obs.leftovers)})
    with open(os.environ["OOHA_COMPAT_OUT"], "w") as fh:
        json.dump(results, fh)
'''


@pytest.fixture(scope="module")
def lab_ready(request: pytest.FixtureRequest) -> Any:
    """The converged lab, then the lab lock held exclusively (the gate runs a container on a DS host)."""
    with lab_lock():
        state = dict(request.getfixturevalue("converged"))
        yield state


def scratch_objects(lab: dict[str, Any]) -> list[str]:
    """Every compat scratch object anywhere in the lab (not only one run's), looked for independently."""
    found: list[str] = []
    for ds in DOCS:
        rc, out = ssh(lab, ds, "sudo docker ps -a --filter name=ooha-compat- --format '{{.Names}}'; "
                               "sudo ls /run/ooha-compat 2>/dev/null; true")
        assert rc == 0, out
        found += [f"{ds}: {line}" for line in out.split() if line.strip()]
    primary = leader(lab)
    rc, out = ssh(lab, primary, "sudo -u postgres psql -h /var/run/postgresql -XAtc "
                                "\"select datname from pg_database where datname like 'ooha\\_compat\\_%'\"")
    assert rc == 0, out
    found += [f"database {line}" for line in out.split() if line.strip()]
    rc, out = ssh(lab, DATA[0], "sudo timeout 30 rabbitmqctl -q list_vhosts name")
    assert rc == 0, out
    found += [f"vhost {line}" for line in out.split() if line.startswith("ooha_compat_")]
    for data in DATA:
        rc, role = ssh(lab, data, "sudo /usr/local/sbin/ooha-redis-cli redis role | head -n 1")
        if rc == 0 and role.strip() == "master":
            rc, keys = ssh(lab, data, "sudo /usr/local/sbin/ooha-redis-cli redis --scan --pattern 'ooha:compat:*'; "
                                      "sudo /usr/local/sbin/ooha-redis-cli redis --scan --pattern '*ooha-compat-*'")
            assert rc == 0, keys
            found += [f"Redis key {key}" for key in keys.split() if key.strip()]
            break
    else:
        raise AssertionError("no Redis primary found")
    return found


def test_compat_gate_passes_the_good_release_and_refuses_the_broken_one(lab_ready: dict[str, Any], pyinfra_cli,
                                                                        tmp_path: Path) -> None:
    lab = lab_ready
    assert scratch_objects(lab) == [], "scratch objects before the test: an earlier run left them"
    live_before = {ds: container_id(lab, ds) for ds in DOCS}
    probe, out = tmp_path / "compat_probe.py", tmp_path / "compat.json"
    probe.write_text(PROBE)

    t0 = time.monotonic()
    result = pyinfra_cli("-y", "inventories/lab.py", str(probe), timeout=600, env={
        "OOHA_COMPAT_HOST": HOST, "OOHA_COMPAT_TAGS": f"{GOOD},{BROKEN}", "OOHA_COMPAT_WATCH": "30",
        "OOHA_COMPAT_OUT": str(out)})
    elapsed = time.monotonic() - t0
    assert result.returncode == 0 and out.exists(), explain(result)
    good, broken = json.loads(out.read_text())
    print(f"\ncompat gate on {HOST}: {GOOD} {'passed' if good['ok'] else 'REFUSED'}, {BROKEN} "
          f"{'passed' if broken['ok'] else 'refused'}; both in {elapsed:.0f} s\n  {good['detail']}\n  {broken['detail']}")

    assert good["ok"], good
    assert good["healthcheck"] == "true" and good["version"] == GOOD and good["websocket"], good
    assert {"doc_changes", "task_result"} <= set(good["tables"]) and good["jwt_from_env"], good

    assert not broken["ok"], broken
    problems = [line for line in broken["lines"] if ": compat: " in line]
    assert len(problems) == 1 and "/healthcheck answered 'false" in problems[0], problems
    assert "healthcheck-decay" in problems[0], "the refusal names the defect (DocService's log line)"
    # Everything else about the broken build holds: only its health betrays it.
    assert broken["version"] == BROKEN and broken["websocket"] and broken["jwt_from_env"], broken
    assert {"doc_changes", "task_result"} <= set(broken["tables"]), broken

    assert good["leftovers"] == [] and broken["leftovers"] == []
    assert scratch_objects(lab) == []
    assert {ds: container_id(lab, ds) for ds in DOCS} == live_before, "a live node's container was replaced"
    assert all(healthy(lab, ds) for ds in DOCS)
