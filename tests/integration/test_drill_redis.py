"""Redis failure drills on the lab: primary host loss, an AZ cut, a Sentinel down.

Disruptive: each test holds the lab lock exclusively and restores what it broke (start the
host, heal the cut, restart the service) in a ``finally``, so later tests see a healthy lab.
The client loop runs on this machine (redis-py through Sentinel discovery, like Document
Server's ioredis with ``sentinels``); during a cut this machine still reaches every host,
like an operator's console, so the test can look at both sides.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from lab.client import changed_operations, explain, lab_cli, lab_lock, output_of, report_lines, secrets, ssh, wait_for
from lab.workload import primary_loss, redis_hosts, role_of, sentinel_primary, sentinels_primary
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]


@pytest.fixture()
def exclusive(request: pytest.FixtureRequest):
    """The lab lock held exclusively, then the lab (`lab up`) and the converged lab, both under the lock."""
    with lab_lock(exclusive=True):
        yield request.getfixturevalue("converged")


def primaries(state: dict[str, Any]) -> list[str]:
    """Addresses whose Redis says role:master (asked from this machine)."""
    return [a for a in redis_hosts(state) if (role_of(state, a) or {}).get("role") == "master"]


def settled(state: dict[str, Any]) -> str | None:
    """The primary's address once there is exactly one, every replica follows it with its
    link up, and every Sentinel names it; else None."""
    masters = primaries(state)
    if len(masters) != 1 or sentinels_primary(state) != set(masters):
        return None
    for address in redis_hosts(state):
        info = role_of(state, address) or {}
        if address != masters[0] and (info.get("master_host") != masters[0] or info.get("master_link_status") != "up"):
            return None
    return masters[0]


def test_primary_host_loss_promotes_a_replica_and_the_old_primary_rejoins(exclusive, pyinfra_cli) -> None:
    state = exclusive
    wait_for("a settled replication group before the drill", lambda: settled(state), 120, interval=0.2)
    run = primary_loss(state, "drill")  # stops the primary's host, starts it again in its finally
    assert run.new != run.old
    assert run.lost == 0, f"{run.lost} acknowledged writes lost"
    names = redis_hosts(state)
    new = next(a for a, n in names.items() if n == run.new)
    assert wait_for("one primary after the old one rejoined", lambda: settled(state), 120, interval=0.2) == new

    # A rerun of the deploy after the failover changes nothing and keeps the new primary.
    rerun = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=redis")
    output = output_of(rerun)
    assert rerun.returncode == 0, explain(rerun)
    assert changed_operations(output) == {}, output[-4000:]
    assert report_lines(output)[(run.new, "redis")].startswith("OK primary, 2 replica(s) online"), output[-3000:]
    assert report_lines(output)[(run.old, "redis")].startswith(f"OK replica of {run.new} (link up")
    assert sentinel_primary(state) == new


def test_az_cut_majority_promotes_isolated_primary_refuses_writes_then_one_primary(exclusive) -> None:
    state = exclusive
    names = redis_hosts(state)
    old = wait_for("a settled replication group before the drill", lambda: settled(state), 120, interval=0.2)
    az = next(h["az"] for h in state["hosts"] if h["address"] == old)
    majority = [a for a in names if a != old]
    password = secrets(state)["redis_password"]
    isolated = redis.Redis(host=old, password=password, socket_timeout=2, socket_connect_timeout=2)
    marker = f"drill:cut:{int(time.time())}"
    try:
        lab_cli("cut", az, timeout=300, check=True)
        new = wait_for("the majority's Sentinels promote",
                       lambda: next(iter(sentinels_primary(state, majority) - {old}), None) if
                       len(sentinels_primary(state, majority)) == 1 else None,
                       60, interval=0.2)
        majority_client = redis.Redis(host=new, password=password, socket_timeout=2, socket_connect_timeout=2)
        wait_for("the new primary accepts writes",
                 lambda: _writes(majority_client, f"{marker}:majority"),
                 30, interval=0.2)

        def refuses() -> bool:
            try:
                isolated.set(f"{marker}:isolated", "diverged")
            except redis.ResponseError as exc:
                return "NOREPLICAS" in str(exc)
            return False

        wait_for(f"the isolated old primary {names[old]} refuses writes (min-replicas-to-write)",
                 refuses,
                 30, interval=0.2)
        assert (role_of(state, old) or {}).get("role") == "master"  # it still believes it is primary...
    finally:
        lab_cli("heal", az, timeout=300, check=True)
    # ...until the heal: then one primary, the old one a replica of the new, no diverged data.
    assert wait_for("one primary after the heal", lambda: settled(state), 120, interval=0.2) == new
    replica = redis.Redis(host=old, password=password, socket_timeout=2)
    assert wait_for("the majority's write reaches the old primary",
                    lambda: replica.get(f"{marker}:majority") == b"1",
                    30, interval=0.2)
    assert replica.get(f"{marker}:isolated") is None


def _writes(client: redis.Redis, key: str) -> bool:
    try:
        return bool(client.set(key, "1"))
    except redis.RedisError:
        return False


def test_report_fails_on_a_silent_sentinel_and_the_deploy_repairs_it(exclusive, pyinfra_cli) -> None:
    state = exclusive
    primary = wait_for("a settled replication group before the drill", lambda: settled(state), 120, interval=0.2)
    victim = next(n for a, n in redis_hosts(state).items() if a != primary)
    rc, out = ssh(state, victim, "sudo systemctl stop redis-sentinel")
    assert rc == 0, out
    try:
        broken = deploy(pyinfra_cli, "deploys/validate.py", "--data", "layers=redis")
        output = output_of(broken)
        assert broken.returncode != 0, output[-3000:]
        assert report_lines(output)[(victim, "redis")].startswith(f"FAIL Sentinel on {victim} does not answer"), output[-3000:]
        repaired = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=redis")
        output = output_of(repaired)
        assert repaired.returncode == 0, explain(repaired)
        assert "Redis | redis-sentinel running and enabled" in changed_operations(output)
        assert report_lines(output)[(victim, "redis")].startswith("OK")
    finally:
        ssh(state, victim, "sudo systemctl start redis-sentinel")

