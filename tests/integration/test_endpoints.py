"""The endpoints on a Document Server host follow the data tier's leaders.

Through HAProxy on ds1: :5432 reaches the Patroni leader (not in recovery) and :6379
the Redis primary (ROLE master); after a switchover (patronictl) or a Sentinel
failover they follow within a bounded time.  A broken configuration is refused before
it goes live.  Tests of a data layer that is still a placeholder skip, saying so.
"""

from __future__ import annotations

import importlib
import shlex
import time
from typing import Any

import pytest

from ooha.facts.haproxy import parse_stats_csv
from lab.client import connect, lab_lock, output_of, secrets, ssh, wait_for
from lab.workload import cluster_view
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

FOLLOW_DEADLINE = 60
"""Seconds allowed for an endpoint to reach the new leader (HAProxy needs ~2 s after the service)."""


def placeholder(module: str) -> bool:
    """True while a layer module is still the skeleton's placeholder."""
    return "Placeholder" in (importlib.import_module(module).__doc__ or "")


def ssh_stdin(lab: dict[str, Any], host: str, cmd: str, stdin: str, timeout: float = 60) -> tuple[int, str]:
    """Run cmd on host with ``stdin`` (secrets go this way, never on a command line)."""
    client = connect(lab, host)
    try:
        channel_in, stdout, stderr = client.exec_command(cmd, timeout=timeout)
        channel_in.write(stdin)
        channel_in.channel.shutdown_write()
        out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def psql_ds1(lab: dict[str, Any], sql: str, port: int = 5432) -> tuple[int, str]:
    cmd = ("read -r PGPASSWORD; export PGPASSWORD; psql -h 127.0.0.1 -p %d -U onlyoffice -d onlyoffice "
           "-X -A -t -v ON_ERROR_STOP=1 -c %s" % (port, shlex.quote(sql)))
    return ssh_stdin(lab, "ds1", cmd, secrets(lab)["postgres_ds_password"] + "\n")


def redis_ds1(lab: dict[str, Any], *args: str) -> tuple[int, str]:
    cmd = "read -r REDISCLI_AUTH; export REDISCLI_AUTH; redis-cli -h 127.0.0.1 -p 6379 " + " ".join(shlex.quote(a) for a in args)
    return ssh_stdin(lab, "ds1", cmd, secrets(lab)["redis_password"] + "\n")


def primary_server(lab: dict[str, Any], proxy: str) -> str | None:
    """The one server HAProxy on ds1 has UP in ``proxy`` (None unless exactly one)."""
    rc, out = ssh(lab, "ds1", "curl -fsS 'http://127.0.0.1:8404/stats;csv'")
    servers = parse_stats_csv(out.splitlines()).get(proxy, {}) if rc == 0 else {}
    up = [name for name, status in servers.items() if status == "UP"]
    return up[0] if len(up) == 1 else None


def test_config_is_private_and_valid(converged: dict[str, Any]) -> None:
    rc, out = ssh(converged, "ds1", "sudo stat -c '%a %U %G' /etc/haproxy/haproxy.cfg && sudo haproxy -c -q -f /etc/haproxy/haproxy.cfg && echo valid")
    assert rc == 0 and out.split() == ["640", "root", "haproxy", "valid"], out


def test_broken_config_never_goes_live(converged: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock(exclusive=False):
        _, before = ssh(converged, "ds1", "sudo sha256sum /etc/haproxy/haproxy.cfg")
        broken = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=endpoints", "--limit", "ds1",
                        "--data", "endpoint_check_timing=inter bogus")
        assert broken.returncode != 0, output_of(broken)[-3000:]
        assert "invalid HAProxy configuration" in output_of(broken)
        _, after = ssh(converged, "ds1", "sudo sha256sum /etc/haproxy/haproxy.cfg; systemctl is-active haproxy")
        assert after.split()[0] == before.split()[0] and after.split()[-1] == "active", after
        repaired = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=endpoints", "--limit", "ds1")
        assert repaired.returncode == 0, output_of(repaired)[-3000:]


@pytest.mark.skipif(placeholder("ooha.layers.postgres"), reason="the PostgreSQL layer is still a placeholder")
def test_pg_endpoint_follows_a_switchover(converged: dict[str, Any]) -> None:
    with lab_lock():
        rc, out = psql_ds1(converged, "select pg_is_in_recovery()")
        assert rc == 0 and out.strip() == "f", out
        rc, out = psql_ds1(converged, "select pg_is_in_recovery()", port=5433)
        assert rc == 0 and out.strip() == "t", out
        leader = wait_for("one pg primary",
                          lambda: primary_server(converged, "pg-primary"),
                          30, interval=2.0, tolerate=(Exception,))
        # With synchronous_mode Patroni accepts a switchover only to the synchronous standby
        # (to any other member it answers and then does nothing): ask which member that is.
        view = cluster_view(converged)
        assert view is not None and view["leader"] == leader, view
        candidate = next(m["name"] for m in view["members"] if m["role"] == "sync_standby")
        rc, out = ssh(converged, leader, f"sudo patronictl -c /etc/patroni/config.yml switchover --candidate {candidate} --force")
        assert rc == 0, out
        started = time.monotonic()
        wait_for(f"HAProxy pg-primary -> {candidate}",
                 lambda: primary_server(converged, "pg-primary") == candidate,
                 FOLLOW_DEADLINE, interval=0.5, tolerate=(Exception,))
        wait_for("writable through :5432",
                 lambda: psql_ds1(converged, "select pg_is_in_recovery()")[1].strip() == "f",
                 FOLLOW_DEADLINE, interval=0.5, tolerate=(Exception,))
        print(f"pg endpoint followed the switchover in {time.monotonic() - started:.1f} s")


@pytest.mark.skipif(placeholder("ooha.layers.redis"), reason="the Redis layer is still a placeholder")
def test_redis_endpoint_follows_a_sentinel_failover(converged: dict[str, Any]) -> None:
    with lab_lock():
        rc, out = redis_ds1(converged, "ROLE")
        assert rc == 0 and out.split()[0] == "master", out
        old = wait_for("one redis primary",
                       lambda: primary_server(converged, "redis-primary"),
                       30, interval=2.0, tolerate=(Exception,))
        cmd = "read -r REDISCLI_AUTH; export REDISCLI_AUTH; redis-cli -p 26379 SENTINEL FAILOVER onlyoffice"
        rc, out = ssh_stdin(converged, old, cmd, secrets(converged)["redis_sentinel_password"] + "\n")
        assert rc == 0 and "OK" in out, out
        started = time.monotonic()
        new = wait_for("HAProxy redis-primary on a new server",
                       lambda: (lambda s: s if s and s != old else None)(primary_server(converged, "redis-primary")),
                       FOLLOW_DEADLINE, interval=0.5, tolerate=(Exception,))
        wait_for("writable through :6379",
                 lambda: redis_ds1(converged, "SET", "ooha:endpoint", new)[1].strip() == "OK",
                 FOLLOW_DEADLINE, interval=0.5, tolerate=(Exception,))
        print(f"redis endpoint followed the failover to {new} in {time.monotonic() - started:.1f} s")
