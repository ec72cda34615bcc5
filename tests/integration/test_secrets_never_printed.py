"""`pyinfra --diff` on the lab repairs hand-edited secret-bearing files without printing them.

Comment lines are appended by hand to files the deploy owns and that carry secrets (Patroni's
config: Patroni reloads, never restarts; the Redis settings include: Redis is not restarted;
haproxy.cfg with Redis AUTH as hex: HAProxy reloads; RabbitMQ's AMQP password file on a node
that is not the seed: nothing reads it there), plus the redis-cli wrapper as the control: an
ordinary files.template whose diff pyinfra does print, so `--diff` is shown to be working in the
very run whose output holds no secret.  Then the main job runs with `--diff`; it must succeed,
restore each file byte for byte with its mode and owner, print no value of the lab's secrets
file (nor the hex forms haproxy.cfg uses), and a second run must change nothing.

Non-disruptive: holds the lab lock shared, like the other layer tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ooha.layers.endpoints import redis_auth_hex
from lab.client import changed_operations, explain, lab_lock, output_of, ssh
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

MARK = "# ooha-hand-edit: must be repaired, and never printed"
CONTROL_MARK = "# ooha-control-edit: an ordinary template, its diff is printed"
CONTROL = ("data3", "/usr/local/sbin/ooha-redis-cli")


def _rabbit_non_seed(lab: dict[str, Any]) -> str:
    """The last RabbitMQ node: the seed (the only node that runs rabbitmqctl with the AMQP password
    file) is the group's first (ooha/layers/rabbitmq.py seed_host), so nothing reads the file here."""
    return [h["name"] for h in lab["hosts"] if "rabbitmq" in h["roles"]][-1]


def _edited(lab: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("data2", "/etc/patroni/config.yml"),
        ("data3", "/etc/redis/redis-onlyoffice-ha.conf"),
        ("ds1", "/etc/haproxy/haproxy.cfg"),
        (_rabbit_non_seed(lab), "/etc/rabbitmq/onlyoffice-ha/amqp-password"),
    ]


def _stat(lab: dict[str, Any], host: str, path: str) -> str:
    rc, out = ssh(lab, host, f"sudo stat -c '%a %U %G' {path} && sudo sha256sum {path}")
    assert rc == 0, out
    mode_owner, digest = out.strip().split("\n")
    return f"{mode_owner} {digest.split()[0]}"


def _forbidden(lab: dict[str, Any]) -> dict[str, str]:
    """Every value of the lab's secrets file, and the hex forms of the Redis password."""
    with open(lab["secrets_file"], encoding="utf-8") as handle:
        values = {key: str(value) for key, value in yaml.safe_load(handle).items() if value}
    password = values["redis_password"]
    values["redis AUTH hex (haproxy, RESP)"] = redis_auth_hex(password)
    values["redis AUTH hex (inline)"] = f"AUTH {password}\r\n".encode().hex()
    values["redis password hex"] = password.encode().hex()
    return values


def _leaked(lab: dict[str, Any], output: str) -> list[str]:
    """Names (never values) of the secrets that appear in ``output``."""
    return sorted(name for name, value in _forbidden(lab).items() if value in output)


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest):
    """The lab lock held shared, then the converged lab, both under the lock."""
    with lab_lock(exclusive=False):
        yield request.getfixturevalue("converged")


def test_diff_run_repairs_secret_files_and_prints_no_secret(shared: dict[str, Any], pyinfra_cli) -> None:
    edited = _edited(shared)
    before = {(host, path): _stat(shared, host, path) for host, path in edited + [CONTROL]}
    expected_modes = {
        "/etc/patroni/config.yml": "600 postgres postgres",
        "/etc/redis/redis-onlyoffice-ha.conf": "640 redis redis",
        "/etc/haproxy/haproxy.cfg": "640 root haproxy",
        "/etc/rabbitmq/onlyoffice-ha/amqp-password": "600 root root",
    }
    for (host, path), seen in before.items():
        if path in expected_modes:
            assert seen.startswith(expected_modes[path] + " "), (host, path, seen)

    # `tee -a` as root keeps the file's inode, mode and owner: only the content drifts.
    for host, path in edited:
        rc, out = ssh(shared, host, f"echo '{MARK}' | sudo tee -a {path} >/dev/null")
        assert rc == 0, out
        assert _stat(shared, host, path) != before[(host, path)]
    rc, out = ssh(shared, CONTROL[0], f"echo '{CONTROL_MARK}' | sudo tee -a {CONTROL[1]} >/dev/null")
    assert rc == 0, out

    run = deploy(pyinfra_cli, "deploys/ha.py", "--diff")
    output = output_of(run)
    # Leak checks first, and on booleans/names only: a failure message must not print the output.
    leaked = _leaked(shared, output)
    assert not leaked, f"secret values printed: {leaked}"
    diff_printed = MARK in output
    assert not diff_printed, "a secret file's diff was printed"
    assert run.returncode == 0, explain(run)
    assert CONTROL_MARK in output, "the control's diff is missing: was --diff in effect?\n" + output[-3000:]
    changed = changed_operations(output)
    for name in ("Configure Patroni", "Redis settings this deploy owns (included file)", "HAProxy configuration",
                 "Document Server's AMQP password (read by rabbitmqctl from stdin)"):
        assert any(op == name or op.endswith(f" | {name}") for op in changed), (name, changed)

    for key, seen in before.items():
        assert _stat(shared, *key) == seen, key  # content, mode and owner as before the edit

    rerun = deploy(pyinfra_cli, "deploys/ha.py", "--diff")
    rerun_output = output_of(rerun)
    leaked = _leaked(shared, rerun_output)
    assert not leaked, f"secret values printed: {leaked}"
    assert rerun.returncode == 0, rerun_output[-6000:]
    assert changed_operations(rerun_output) == {}, rerun_output[-6000:]
