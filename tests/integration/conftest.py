"""Lab fixtures: bring the lab up once per session (reusing a running one), converge it.

Everything that talks to the lab (status, SSH with the lab key + known_hosts + RejectPolicy,
secrets, the lab lock, polling) is lab/client.py, shared with the benchmarks; the fixtures
here are thin wrappers over it.  Test modules import the helpers from lab.client directly.
"""
from __future__ import annotations

from typing import Any

import pytest

from lab.client import explain, lab_cli, lab_lock, lab_state


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` run after every other test: they replace the whole lab (a site
    rebuilt from backups), which the other tests must not see half-way."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """`python -m lab up` (a running lab is reused) and the status dict it leaves."""
    up = lab_cli("up")
    if up.returncode != 0:
        pytest.fail(f"python -m lab up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    return lab_state()


@pytest.fixture(scope="session")
def converge_runs(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The session's first converge of the main job and the rerun right after it.

    On a fresh lab (CI) the first run is cold: every package, cluster and file is new.
    A second run straight after it must change nothing (issue 9: a rerun after a cold
    run once changed the RabbitMQ /etc/hosts lines, which a later, warm rerun hid);
    test_base asserts it on the rerun kept here.
    """
    from tests.integration.deploytools import deploy

    first = deploy(pyinfra_cli)
    if first.returncode != 0:
        pytest.fail(f"the main job failed on the lab:\n{explain(first)}")
    return {"first": first, "rerun": deploy(pyinfra_cli)}


@pytest.fixture(scope="session")
def converged(lab: dict[str, Any], converge_runs: dict[str, Any]) -> dict[str, Any]:
    """The main job has converged every layer on the lab once this session; the lab status.

    Drills that break hosts restore them before they end, so later tests can rely on a
    converged lab without re-running the whole job.
    """
    return lab


@pytest.fixture(scope="session")
def backup_lab(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The converged lab (the whole main job, backup layer included) for the backup tests.

    The backup layer's report checks need the whole stack (endpoints' report wants a Redis
    primary and RabbitMQ up), so on a fresh lab only the full job converges it.  The job
    is a full all-layer run: the exclusive lab lock is held around it (``converged`` takes
    none; it runs once per session, later uses return at once).
    """
    with lab_lock():
        return dict(request.getfixturevalue("converged"))
