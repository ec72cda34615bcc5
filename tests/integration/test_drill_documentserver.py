"""Document Server drills on the lab: recreate only on change, the example switch, and the two traps.

Disruptive (containers are stopped, recreated, changed to another version): each test holds
the lab lock exclusively and restores the wanted state in a ``finally`` (the default deploy
of the node it changed), so later tests see a healthy lab.  Run by hand with
``.venv/bin/pytest tests/integration/test_drill_documentserver.py``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, wait_for
from tests.integration.dstools import (
    CONTAINER,
    accepts_editors,
    container_id,
    converge_ds_stack,
    container_logs,
    deploy_ds,
    doc_changes,
    docker,
    editor,
    healthy,
    http,
    inactive,
    inside,
    send_change,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

CONTAINER_OP = "Document Server | Document Server container"


@pytest.fixture(scope="module")
def ds_stack(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The DS stack converged once for the module (every test restores what it changed)."""
    with lab_lock(exclusive=False):
        converge_ds_stack(pyinfra_cli)
    return lab


@pytest.fixture()
def exclusive(ds_stack: dict[str, Any]):
    """The lab lock held exclusively for one drill."""
    with lab_lock(exclusive=True):
        for host in ("ds1", "ds2", "ds3"):
            wait_for(f"{host} healthy before the drill", lambda h=host: healthy(ds_stack, h), 120)
        yield ds_stack


def _container_changes(output: str) -> str | None:
    return next((count for op, count in changed_operations(output).items() if op.startswith(CONTAINER_OP)), None)


def _restore(lab: dict[str, Any], pyinfra_cli, host: str) -> None:
    """The node back to the inventory's wanted state (default data), healthy."""
    result = deploy_ds(pyinfra_cli, "--limit", host)
    assert result.returncode == 0, explain(result)
    wait_for(f"{host} healthy", lambda: healthy(lab, host), 120)


def test_changed_env_recreates_only_that_node_and_a_rerun_does_not(exclusive: dict[str, Any], pyinfra_cli) -> None:
    lab = exclusive
    before = {host: container_id(lab, host) for host in ("ds1", "ds2", "ds3")}
    try:
        result = deploy_ds(pyinfra_cli, "--limit", "ds3", "--data", "ds_jwt_header=AuthorizationX")
        assert result.returncode == 0, explain(result)
        assert _container_changes(output_of(result)) == "1", changed_operations(output_of(result))
        # The old container was drained (nothing open on ds3) and stopped, not killed.
        assert "[ds3]" in output_of(result) and "drain: no editing session left; stopping" in output_of(result), explain(result)
        changed = container_id(lab, "ds3")
        assert changed != before["ds3"]
        assert report_lines(output_of(result))[("ds3", "documentserver")].startswith("OK "), explain(result)
        again = deploy_ds(pyinfra_cli, "--limit", "ds3", "--data", "ds_jwt_header=AuthorizationX")
        assert again.returncode == 0, explain(again)
        assert changed_operations(output_of(again)) == {}, changed_operations(output_of(again))
        assert container_id(lab, "ds3") == changed
    finally:
        _restore(lab, pyinfra_cli, "ds3")
    assert container_id(lab, "ds3") not in (before["ds3"], changed)
    assert {h: container_id(lab, h) for h in ("ds1", "ds2")} == {h: before[h] for h in ("ds1", "ds2")}


def test_a_stopped_container_is_started_not_recreated(exclusive: dict[str, Any], pyinfra_cli) -> None:
    lab = exclusive
    before = container_id(lab, "ds3")
    try:
        rc, out = docker(lab, "ds3", f"stop -t 10 {CONTAINER}")
        assert rc == 0, out
        result = deploy_ds(pyinfra_cli, "--limit", "ds3")
        assert result.returncode == 0, explain(result)
        assert _container_changes(output_of(result)) == "1"
        assert container_id(lab, "ds3") == before
        assert report_lines(output_of(result))[("ds3", "documentserver")].startswith("OK "), explain(result)
    finally:
        docker(lab, "ds3", f"start {CONTAINER}")
        wait_for("ds3 healthy", lambda: healthy(lab, "ds3"), 120)


def test_a_bad_tag_fails_before_the_running_container_is_touched(exclusive: dict[str, Any], pyinfra_cli) -> None:
    lab = exclusive
    before = container_id(lab, "ds3")
    result = deploy_ds(pyinfra_cli, "--limit", "ds3", "--data", "ds_version=0.0.0.404")
    assert result.returncode != 0, "a deploy of a missing tag succeeded"
    assert "docker pull" in output_of(result) or "manifest" in output_of(result), explain(result)
    assert container_id(lab, "ds3") == before
    assert healthy(lab, "ds3")


def test_example_on_survives_a_restart_and_off_says_why(exclusive: dict[str, Any], pyinfra_cli) -> None:
    lab = exclusive
    try:
        result = deploy_ds(pyinfra_cli, "--limit", "ds3", "--data", "ds_example_enabled=true")
        assert result.returncode == 0, explain(result)
        line = report_lines(output_of(result))[("ds3", "documentserver")]
        assert line.startswith("OK ") and line.endswith("example on: /example/ 200"), line
        assert http(lab, "ds3", "/example/").status_code == 200
        rc, out = docker(lab, "ds3", f"restart -t 10 {CONTAINER}")
        assert rc == 0, out
        wait_for("/example/ 200 after docker restart",
                 lambda: (answer := http(lab, "ds3", "/example/")) is not None and answer.status_code == 200, 120)
    finally:
        off = deploy_ds(pyinfra_cli, "--limit", "ds3", "--data", "ds_example_enabled=false")
    assert off.returncode == 0, explain(off)
    line = report_lines(output_of(off))[("ds3", "documentserver")]
    assert line.startswith("OK ") and "example off: /example/ answers 502 (example off:" in line, line
    assert "connect() failed (111: Connection refused)" in line and line.endswith("fix: set ds_example_enabled=true"), line
    assert http(lab, "ds3", "/example/").status_code == 502


def test_stopping_one_node_leaves_the_others_accepting_editors(exclusive: dict[str, Any]) -> None:
    """The SIGTERM trap fires on ds1 (its log says so) but reaches only ds1's own vhost."""
    lab = exclusive
    for host in ("ds2", "ds3"):
        assert accepts_editors(lab, host) is True and inactive(lab, host) is False
    # Control: the probe sees an inactive node (503), and ds1's flag stays on ds1.
    rc, out = inside(lab, "ds1", "curl -s -m 5 -X PUT http://127.0.0.1:8000/internal/cluster/inactive")
    assert rc == 0 and out.strip() == "true", out
    try:
        assert accepts_editors(lab, "ds1") is False and inactive(lab, "ds1") is True
        assert accepts_editors(lab, "ds2") is True and inactive(lab, "ds3") is False
    finally:
        inside(lab, "ds1", "curl -s -m 5 -X DELETE http://127.0.0.1:8000/internal/cluster/inactive")
    assert accepts_editors(lab, "ds1") is True
    stopped_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        rc, out = docker(lab, "ds1", f"stop -t 20 {CONTAINER}")
        assert rc == 0, out
        rc, logs = docker(lab, "ds1", f"logs --since {stopped_at} {CONTAINER} 2>&1")
        assert "SIGTERM: shutting the cluster down (PUT /internal/cluster/inactive" in logs, logs[-2000:]
        # The broadcast is published when the trap fires; give any subscriber time to act on it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for host in ("ds2", "ds3"):
                assert inactive(lab, host) is False, f"{host} went inactive after ds1 stopped"
                assert accepts_editors(lab, host) is True, f"{host} refused a new editor after ds1 stopped"
            time.sleep(1)
    finally:
        docker(lab, "ds1", f"start {CONTAINER}")
        wait_for("ds1 healthy", lambda: healthy(lab, "ds1"), 120)
    assert accepts_editors(lab, "ds1") is True and inactive(lab, "ds1") is False


def _closed(ws: Any, deadline: float = 15) -> bool:
    """Whether the server has closed ``ws`` (reads until it closes or ``deadline`` passes)."""
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ws.recv(timeout=max(0.1, end - time.monotonic()))
    except ConnectionClosed:
        return True
    except TimeoutError:
        return False
    return False


def test_version_change_on_one_node_keeps_the_other_nodes_tables(exclusive: dict[str, Any], pyinfra_cli) -> None:
    """ds1 to 9.3.1.2 drains ds1 (bounded), resets ds1's tables only; ds2's rows and open session survive.

    An editor stays open on ds1 itself: the drain reports it still open after the (small)
    ds_drain_seconds, and the graceful stop closes it.
    """
    lab = exclusive
    key2, key1 = f"doc2-{int(time.time())}", f"doc1-{int(time.time())}"
    with editor(lab, "ds2", key2) as ws2, editor(lab, "ds1", key1) as ws1:
        ids = [send_change(ws2, f"change {n}") for n in range(3)]
        assert ids == [0, 1, 2]
        send_change(ws1, "ds1's own change")
        assert doc_changes(lab, "onlyoffice_ds1", key1) == 1
        try:
            result = deploy_ds(pyinfra_cli, "--limit", "ds1", "--data", "ds_version=9.3.1.2", "--data", "ds_drain_seconds=3")
            assert result.returncode == 0, explain(result)
            output = output_of(result)
            assert "container onlyoffice-documentserver: drain: pre-stop sent" in output, explain(result)
            assert re.search(r"drain: [1-9][0-9]* editing session\(s\) still open after 3 s \(ds_drain_seconds\); "
                             r"stopping anyway", output), explain(result)
            assert _closed(ws1), "the editor on ds1 survived the replacement of its container"
            line = report_lines(output_of(result))[("ds1", "documentserver")]
            assert line.startswith("OK documentserver-ee:9.3.1.2 running, healthcheck true, version 9.3.1.2"), line
            logs = container_logs(lab, "ds1")
            assert "release date changed 2026-02-10 -> 2026-03-17: running removetbl.sql" in logs, logs[-2000:]
            assert doc_changes(lab, "onlyoffice_ds1", key1) == 0, "ds1's tables were not recreated"
            assert doc_changes(lab, "onlyoffice_ds2", key2) == 3, "ds2's rows were lost"
            assert send_change(ws2, "after ds1's upgrade") == 3
            assert doc_changes(lab, "onlyoffice_ds2", key2) == 4
        finally:
            rollback = deploy_ds(pyinfra_cli, "--limit", "ds1")
            assert rollback.returncode == 0, explain(rollback)
    line = report_lines(output_of(rollback))[("ds1", "documentserver")]
    assert line.startswith("OK documentserver-ee:9.3.0.1 running, healthcheck true, version 9.3.0.1"), line
    assert "release date changed 2026-03-17 -> 2026-02-10: running removetbl.sql" in container_logs(lab, "ds1")
    assert doc_changes(lab, "onlyoffice_ds2", key2) == 4
