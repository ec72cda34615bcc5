"""Drill: a Document Server container that stays unhealthy is healed, and a hopeless one is given up on (issue 10 item 4).

The self-healing settings of one node are shortened for the drill (heal after 10 s, start
grace 5 s, 2 restarts per 10 min, checks every 5 s, 5 s stop grace) through the main job's
own keys, then:

1. transient break: the node's DocService is frozen (``kill -STOP`` inside the container, so
   /healthcheck stops answering while the LB, PostgreSQL, Redis and RabbitMQ are fine): the
   timer restarts the container within its bound, the restart is counted, the node is healthy
   again (a restart gives it a new DocService);
2. persistent break: the node's own database refuses it (``REVOKE CONNECT`` on
   ``onlyoffice_ds3``: its dependencies stay UP in HAProxy, only this node is sick): after a
   reset of the counters, 2 restarts, then it gives up, stops the container, the report line FAILs with "self-healing gave
   up after 2 restarts at ...", and a rerun of the main job leaves it stopped and changes
   nothing;
3. repair (GRANT CONNECT) and reset (``systemctl start ooha-ds-heal-reset``): healthy again.

The lab is restored in a finally: grants, container running, default settings.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, ssh, wait_for
from lab.workload import cluster_view, get, leader_psql, node_healthy
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

NODE = "ds3"
DATABASE = "onlyoffice_ds3"
C = "onlyoffice-documentserver"
DRILL = ("--data", "ds_heal_after_seconds=10", "--data", "ds_heal_start_grace_seconds=5",
         "--data", "ds_heal_max_restarts=2", "--data", "ds_heal_window_seconds=600",
         "--data", "ds_heal_interval_seconds=5", "--data", "ds_stop_grace_seconds=5")


def ds_run(pyinfra_cli, *extra: str):
    return deploy(pyinfra_cli, "deploys/ha.py", "--limit", NODE, "--data", "layers=documentserver", *extra)


def heal_state(lab: dict[str, Any]) -> dict[str, Any]:
    rc, out = ssh(lab, NODE, "sudo cat /var/lib/ooha-ds-heal/state 2>/dev/null || echo '{}'")
    return json.loads(out.strip().splitlines()[-1] or "{}")


def container_status(lab: dict[str, Any]) -> str:
    rc, out = ssh(lab, NODE, f"sudo docker inspect -f '{{{{.State.Status}}}}' {C}")
    return out.strip()


def psql_leader(lab: dict[str, Any], sql: str) -> str:
    view = wait_for("a PostgreSQL leader", lambda: cluster_view(lab), 60, interval=2)
    rc, out = leader_psql(lab, view["leader"], sql)
    assert rc == 0, out
    return out


def test_unhealthy_node_is_restarted_then_given_up_on(converged: dict[str, Any], pyinfra_cli) -> None:
    lab = converged
    with lab_lock():
        try:
            setup = ds_run(pyinfra_cli, *DRILL)
            assert setup.returncode == 0, explain(setup)
            rc, out = ssh(lab, NODE, "sudo systemctl start ooha-ds-heal-reset && systemctl is-active ooha-ds-heal.timer")
            assert rc == 0 and out.strip() == "active", out
            assert node_healthy(lab, NODE)

            # 1. transient: DocService frozen -> /healthcheck stops answering -> one restart heals it.
            rc, out = ssh(lab, NODE, f"sudo docker exec {C} sh -c 'kill -STOP $(supervisorctl pid ds:docservice)'")
            assert rc == 0, out
            broken = time.monotonic()
            wait_for(f"{NODE} /healthcheck not answering", lambda: not node_healthy(lab, NODE), 30, interval=1)
            state = wait_for("the heal to restart the container", lambda: (s := heal_state(lab)).get("total_restarts") == 1 and s,
                             120, interval=2)
            wait_for(f"{NODE} healthy after the restart", lambda: node_healthy(lab, NODE), 120, interval=1)
            healed = time.monotonic() - broken
            assert not state.get("gave_up_at"), state
            assert get(lab, "/healthcheck", timeout=10).text.strip() == "true"
            print(f"\nfrozen DocService on {NODE}: restarted by ooha-ds-heal and healthy again {healed:.0f} s after the break "
                  f"(heal after 10 s + 5 s checks + restart)")
            rc, out = ssh(lab, NODE, "sudo systemctl start ooha-ds-heal-reset")  # the next phase counts from 0
            assert rc == 0 and heal_state(lab).get("restarts") == [], out

            # 2. persistent: the node's own database refuses it; dependencies stay UP -> 2 restarts, then give up.
            psql_leader(lab, f'REVOKE CONNECT ON DATABASE "{DATABASE}" FROM PUBLIC, onlyoffice')
            broken = time.monotonic()
            state = wait_for("the heal to give up", lambda: (s := heal_state(lab)).get("gave_up_at") and s, 420, interval=3)
            gave_up = time.monotonic() - broken
            assert state["gave_up_restarts"] == 2 and state["total_restarts"] == 2, state
            wait_for("the container stopped", lambda: container_status(lab) == "exited", 60, interval=2)
            print(f"revoked database on {NODE}: gave up after {state['gave_up_restarts']} restarts, {gave_up:.0f} s after the break")
            time.sleep(12)  # several more timer runs: nothing restarts it
            assert container_status(lab) == "exited" and heal_state(lab)["total_restarts"] == 2
            assert get(lab, "/healthcheck", timeout=10).text.strip() == "true"  # the other nodes serve

            # The report says so; a rerun of the main job keeps it stopped and changes nothing.
            rerun = ds_run(pyinfra_cli, *DRILL)
            output = output_of(rerun)
            line = report_lines(output).get((NODE, "documentserver"), "")
            assert rerun.returncode != 0 and line.startswith("FAIL self-healing gave up after 2 restarts at "), explain(rerun)
            assert "ooha-ds-heal-reset" in line and "ds_heal_reset=true" in line, line
            assert changed_operations(output) == {}, explain(rerun)
            assert container_status(lab) == "exited"

            # 3. repair, reset: healthy again, the state forgotten.
            psql_leader(lab, f'GRANT CONNECT ON DATABASE "{DATABASE}" TO PUBLIC, onlyoffice')
            rc, out = ssh(lab, NODE, "sudo systemctl start ooha-ds-heal-reset")
            assert rc == 0, out
            wait_for(f"{NODE} healthy after the reset", lambda: node_healthy(lab, NODE), 180, interval=1)
            state = heal_state(lab)
            assert not state.get("gave_up_at") and state.get("restarts") == [], state
        finally:
            psql_leader(lab, f'GRANT CONNECT ON DATABASE "{DATABASE}" TO PUBLIC, onlyoffice')
            ssh(lab, NODE, f"sudo docker exec {C} sh -c 'kill -CONT $(supervisorctl pid ds:docservice)' 2>/dev/null; "
                           "sudo systemctl start ooha-ds-heal-reset")
            restored = ds_run(pyinfra_cli)
            assert restored.returncode == 0, explain(restored)
            wait_for(f"{NODE} healthy", lambda: node_healthy(lab, NODE), 180, interval=1)
