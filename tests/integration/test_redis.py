"""The Redis layer on the lab over real SSH and real Redis/Sentinel: converge, no-op rerun,
auth, binding, file modes, split-brain guard settings, and the HAProxy role check's bytes.

Non-disruptive: holds the lab lock shared (deploys of other layers may run alongside).
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
import redis

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, secrets as secrets_of, ssh
from lab.workload import redis_hosts as redis_addresses, sentinel_primary
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

DATA = ("data1", "data2", "data3")


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest):
    """The lab lock held shared, then the lab (`lab up`) and the converged lab, both under the lock."""
    with lab_lock(exclusive=False):
        yield request.getfixturevalue("converged")


@pytest.fixture(scope="module")
def redis_run(shared, pyinfra_cli) -> subprocess.CompletedProcess[str]:
    return deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=redis")


def test_redis_layer_converges_with_one_primary_and_agreeing_sentinels(shared, redis_run) -> None:
    output = output_of(redis_run)
    assert redis_run.returncode == 0, explain(redis_run)
    lines = {name: report_lines(output).get((name, "redis"), "missing") for name in DATA}
    assert all(line.startswith("OK ") for line in lines.values()), lines
    primaries = [name for name, line in lines.items() if line.startswith("OK primary, 2 replica(s) online")]
    assert len(primaries) == 1, lines
    for name, line in lines.items():
        if name not in primaries:
            assert re.match(rf"OK replica of {primaries[0]} \(link up, lag \d+ B\), sentinels agree: {primaries[0]}$", line), line
    assert redis_addresses(shared)[sentinel_primary(shared)] == primaries[0]


def test_second_run_changes_nothing(shared, redis_run, pyinfra_cli) -> None:
    rerun = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=redis")
    output = output_of(rerun)
    assert rerun.returncode == 0, explain(rerun)
    assert changed_operations(output) == {}, output[-4000:]


def test_redis_and_sentinel_require_their_passwords(shared, redis_run) -> None:
    secrets = secrets_of(shared)
    for address in redis_addresses(shared):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=address, socket_timeout=2).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=address, port=26379, socket_timeout=2).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=address, password="wrong-password-123", socket_timeout=2).ping()
        assert redis.Redis(host=address, password=secrets["redis_password"], socket_timeout=2).ping()
        assert redis.Redis(host=address, port=26379, password=secrets["redis_sentinel_password"], socket_timeout=2).ping()


def test_listens_on_private_address_and_loopback_only(shared, redis_run) -> None:
    for name, address in (("data1", "198.18.1.31"), ("data3", "198.18.3.31")):
        rc, out = ssh(shared, name, "ss -Hltn '( sport = :6379 or sport = :26379 )' | awk '{print $4}' | sort")
        assert rc == 0, out
        assert out.split() == sorted(["127.0.0.1:26379", "127.0.0.1:6379", f"{address}:26379", f"{address}:6379"]), out


def test_secret_files_are_private_and_passwords_stay_off_command_lines(shared, redis_run) -> None:
    secrets = secrets_of(shared)
    rc, out = ssh(shared, "data2", "sudo stat -c '%n %a %U %G' /etc/redis/redis.conf /etc/redis/redis-onlyoffice-ha.conf "
                                   "/etc/redis/sentinel.conf /etc/onlyoffice-ha-redis/redis.pass "
                                   "/etc/onlyoffice-ha-redis/sentinel.pass /usr/local/sbin/ooha-redis-cli")
    assert rc == 0, out
    assert out.split("\n")[:6] == [
        "/etc/redis/redis.conf 640 redis redis",
        "/etc/redis/redis-onlyoffice-ha.conf 640 redis redis",
        "/etc/redis/sentinel.conf 640 redis redis",
        "/etc/onlyoffice-ha-redis/redis.pass 600 root root",
        "/etc/onlyoffice-ha-redis/sentinel.pass 600 root root",
        "/usr/local/sbin/ooha-redis-cli 700 root root",
    ], out
    # A fact's command through the wrapper, while `ps` looks: no password anywhere.
    rc, out = ssh(shared, "data2", "sudo /usr/local/sbin/ooha-redis-cli redis -i 0.2 -r 10 PING >/dev/null & "
                                   "sleep 0.5; ps -eo args; wait")
    assert rc == 0 and "ooha-redis-cli" in out, out
    assert secrets["redis_password"] not in out and secrets["redis_sentinel_password"] not in out
    rc, out = ssh(shared, "data2", "cat /etc/redis/redis-onlyoffice-ha.conf")
    assert rc != 0 and secrets["redis_password"] not in out  # the admin user cannot read it


def test_split_brain_guard_and_sentinel_settings(shared, redis_run) -> None:
    secrets = secrets_of(shared)
    for address in redis_addresses(shared):
        client = redis.Redis(host=address, password=secrets["redis_password"], socket_timeout=2, decode_responses=True)
        assert client.config_get("min-replicas-*") == {"min-replicas-to-write": "1", "min-replicas-max-lag": "5"}
        sentinel = redis.Redis(host=address, port=26379, password=secrets["redis_sentinel_password"], socket_timeout=2,
                               decode_responses=True)
        master = sentinel.sentinel_master("onlyoffice")
        assert (master["quorum"], master["down-after-milliseconds"], master["failover-timeout"]) == (2, 3000, 20000)
        assert sentinel.execute_command("SENTINEL", "CKQUORUM", "onlyoffice").startswith("OK 3 usable Sentinels")


def haproxy_check(address: str, password: str) -> bool:
    """The exact tcp-check sequence documented in ooha/layers/redis.py, byte for byte."""
    steps = [
        (f"AUTH {password}\r\n", re.compile(r"\+OK")),
        ("PING\r\n", re.compile(r"\+PONG")),
        ("INFO replication\r\n", re.compile(r"role:master[\s]+connected_slaves:[1-9]")),
        ("QUIT\r\n", re.compile(r"\+OK")),
    ]
    with socket.create_connection((address, 6379), timeout=3) as conn:
        for send, expect in steps:
            conn.sendall(send.encode())
            received = b""
            while not expect.search(received.decode(errors="replace")):
                try:
                    chunk = conn.recv(4096)
                except socket.timeout:  # HAProxy's `timeout check`: no match in time
                    return False
                if not chunk or len(received) > 65536:
                    return False
                received += chunk
                if received.startswith(b"-"):  # an error reply: the check fails here
                    return False
    return True


def test_haproxy_role_check_passes_on_the_primary_only(shared, redis_run) -> None:
    secrets = secrets_of(shared)
    passing = [a for a in redis_addresses(shared) if haproxy_check(a, secrets["redis_password"])]
    assert passing == [sentinel_primary(shared)]
    assert not haproxy_check(passing[0], "wrong-password-123")
