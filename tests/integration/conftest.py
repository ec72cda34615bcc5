"""Lab fixtures: bring the lab up once per session (reusing a running one) and SSH into hosts.

SSH here is what pyinfra does: paramiko with the lab key, the lab's known_hosts and
RejectPolicy, so a test can only pass against the host whose key the lab recorded.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import paramiko
import pytest

REPO = Path(__file__).resolve().parents[2]


def lab_cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run `python -m lab ARGS` from the repo root, bounded in time."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=dict(os.environ))


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """`python -m lab up` (a running lab is reused) and the status dict it leaves."""
    up = lab_cli("up")
    if up.returncode != 0:
        pytest.fail(f"python -m lab up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    status = lab_cli("status", "--json", timeout=120)
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def host_entry(lab: dict[str, Any], host: str) -> dict[str, Any]:
    """The status entry of one host by name."""
    return next(h for h in lab["hosts"] if h["name"] == host)


def connect(lab: dict[str, Any], host: str, user: str = "admin", timeout: float = 10) -> paramiko.SSHClient:
    """Open SSH to a lab host with the lab key, the lab known_hosts and RejectPolicy."""
    client = paramiko.SSHClient()
    client.load_host_keys(lab["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    entry = host_entry(lab, host)
    client.connect(entry["address"], username=user, key_filename=entry["ssh_key"], timeout=timeout,
                   banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False)
    return client


def ssh(lab: dict[str, Any], host: str, cmd: str, timeout: float = 60) -> tuple[int, str]:
    """Run cmd on host over SSH as admin; return (exit code, stdout + stderr)."""
    client = connect(lab, host)
    try:
        _, stdout, stderr = client.exec_command(cmd, timeout=timeout)
        out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def reaches(lab: dict[str, Any], src: str, dst_address: str, port: int = 22) -> bool:
    """Whether host src opens a TCP connection to dst_address:port within 3 seconds."""
    rc, _ = ssh(lab, src, f"timeout 3 bash -c '</dev/tcp/{dst_address}/{port}'")
    return rc == 0


@pytest.fixture(scope="session")
def converged(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The main job has converged every layer on the lab once this session; the lab status.

    Drills that break hosts restore them before they end, so later tests can rely on a
    converged lab without re-running the whole job.
    """
    from tests.integration.deploytools import deploy, explain

    result = deploy(pyinfra_cli)
    if result.returncode != 0:
        pytest.fail(f"the main job failed on the lab:\n{explain(result)}")
    return lab


@pytest.fixture(scope="session")
def backup_lab(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The converged lab (the whole main job, backup layer included) for the backup tests.

    The backup layer's report checks need the whole stack (endpoints' report wants a Redis
    primary and RabbitMQ up), so on a fresh lab only the full job converges it.  The job
    is a full all-layer run: the exclusive lab lock is held around it (``converged`` takes
    none; it runs once per session, later uses return at once).
    """
    from benchmarks.redis_failover import lab_lock

    with lab_lock():
        return dict(request.getfixturevalue("converged"))
