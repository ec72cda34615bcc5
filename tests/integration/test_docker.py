"""The Docker engine layer on the lab's Document Server hosts.

After ``--data layers=docker`` converges: the engine answers on every DS host, its bridge
is the configured ``docker_bip`` (never 172.17.0.1/16), daemon.json has log rotation and
live-restore, root pulls the Document Server image from the lab's private registry (its
TLS from the lab CA, its login from the secrets file) while an engine without that login
is refused, a rerun changes nothing, a daemon.json change restarts dockerd without
stopping a running container, and a bad input stops the run before any host is touched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, ssh, wait_for
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

DS_HOSTS = ("ds1", "ds2", "ds3")
BIP = "198.19.0.1/24"
IMAGE = "198.18.20.10:5000/onlyoffice/documentserver-ee:9.3.0.1"
PROBE = "ooha-test-liverestore"


def docker_run(pyinfra_cli, *extra: str):
    return deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=docker", *extra)


@pytest.fixture(scope="module")
def docker_lab(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The docker layer (and base) converged on the lab; the first run's output is checked here."""
    with lab_lock(exclusive=False):
        result = docker_run(pyinfra_cli)
    assert result.returncode == 0, explain(result)
    lines = report_lines(output_of(result))
    for name in DS_HOSTS:
        assert lines.get((name, "docker"), "").startswith("OK "), lines
    return lab


@pytest.mark.parametrize("name", DS_HOSTS)
def test_engine_bridge_and_daemon_config(docker_lab: dict[str, Any], name: str) -> None:
    rc, out = ssh(docker_lab, name, "sudo docker info --format '{{json .}}'")
    assert rc == 0, out
    info = json.loads(out)
    assert info["ServerVersion"] and info["LiveRestoreEnabled"] is True and info["LoggingDriver"] == "json-file"
    rc, out = ssh(docker_lab, name, "ip -4 -o addr show dev docker0")
    assert rc == 0 and f"inet {BIP} " in out and "172.17." not in out, out
    rc, out = ssh(docker_lab, name, "sudo docker network inspect bridge --format '{{json .IPAM.Config}}'")
    assert rc == 0 and json.loads(out) == [{"Subnet": "198.19.0.0/24", "Gateway": "198.19.0.1"}], out
    rc, out = ssh(docker_lab, name, "sudo cat /etc/docker/daemon.json")
    daemon = json.loads(out)
    assert daemon["log-driver"] == "json-file" and daemon["log-opts"] == {"max-size": "50m", "max-file": "5"}
    assert daemon["live-restore"] is True
    assert daemon["default-address-pools"] == [{"base": "198.19.128.0/17", "size": 24}]


@pytest.mark.parametrize("name", DS_HOSTS)
def test_pulls_from_the_private_registry_only_with_the_login(docker_lab: dict[str, Any], name: str) -> None:
    rc, out = ssh(docker_lab, name, f"sudo timeout 300 docker pull -q {IMAGE}", timeout=320)
    assert rc == 0 and IMAGE in out, out
    # The same pull with an empty client config (no login, same engine and CA) is refused:
    # the pull above worked because of the layer's login, not because the registry is open.
    rc, out = ssh(docker_lab, name, f"d=$(mktemp -d); sudo DOCKER_CONFIG=$d timeout 60 docker pull -q {IMAGE}; r=$?; rm -rf $d; exit $r")
    assert rc != 0 and ("no basic auth credentials" in out or "unauthorized" in out.lower()), out
    rc, out = ssh(docker_lab, name, "sudo stat -c '%a %U' /root/.docker/onlyoffice-ha-registry-password /root/.docker/config.json")
    assert rc == 0 and out.split() == ["600", "root", "600", "root"], out


def test_rerun_changes_nothing(docker_lab: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock(exclusive=False):
        result = docker_run(pyinfra_cli)
    assert result.returncode == 0, explain(result)
    assert changed_operations(output_of(result)) == {}


def _probe_state(lab: dict[str, Any]) -> tuple[str, str]:
    rc, out = ssh(lab, "ds1", f"sudo docker inspect -f '{{{{.State.StartedAt}}}} {{{{.State.Running}}}}' {PROBE}")
    assert rc == 0, out
    started, running = out.split()
    return started, running


def _running_containers(lab: dict[str, Any]) -> set[str]:
    """{"<name> <StartedAt>"} of every running container on ds1."""
    rc, out = ssh(lab, "ds1", "sudo docker ps -q | xargs -r sudo docker inspect -f '{{.Name}} {{.State.StartedAt}}'")
    assert rc == 0, out
    return set(out.split("\n")) - {""}


def _dockerd_started(lab: dict[str, Any]) -> str:
    return ssh(lab, "ds1", "systemctl show -p ExecMainStartTimestampMonotonic --value docker")[1].strip()


def test_config_change_restarts_dockerd_and_keeps_containers(docker_lab: dict[str, Any], pyinfra_cli) -> None:
    """live-restore: a daemon.json change restarts dockerd; a running container is not stopped."""
    with lab_lock():
        try:
            rc, out = ssh(docker_lab, "ds1", f"sudo docker rm -f {PROBE} >/dev/null 2>&1; "
                          f"sudo docker run -d --name {PROBE} --entrypoint sleep {IMAGE} 900")
            assert rc == 0, out
            before, running = _probe_state(docker_lab)
            assert running == "true"
            others_before = _running_containers(docker_lab)
            daemon_before = _dockerd_started(docker_lab)
            changed = docker_run(pyinfra_cli, "--limit", "ds1", "--data", "docker_log_max_file=4")
            assert changed.returncode == 0, explain(changed)
            ops = changed_operations(output_of(changed))
            assert "Docker engine | Docker daemon.json" in ops and "Docker engine | Restart Docker if daemon.json changed" in ops, ops
            assert _dockerd_started(docker_lab) != daemon_before
            wait_for("the probe container still running, never restarted",
                     lambda: _probe_state(docker_lab) == (before, "true"),
                     30, interval=2.0, tolerate=(Exception,))
            # Every other running container (the Document Server one, when deployed) too, and
            # its published port still answers (docker-proxy survives: KillMode=process).
            assert _running_containers(docker_lab) == others_before
            if any(name.endswith("onlyoffice-documentserver") for name in others_before):
                rc, out = ssh(docker_lab, "ds1", "curl -s -o /dev/null -m 10 -w '%{http_code}' http://198.18.1.21/healthcheck")
                assert out.strip() not in ("", "000"), out
        finally:
            ssh(docker_lab, "ds1", f"sudo docker rm -f {PROBE}")
            restored = docker_run(pyinfra_cli, "--limit", "ds1")
        assert restored.returncode == 0, explain(restored)
        rc, out = ssh(docker_lab, "ds1", "sudo jq -r '.\"log-opts\".\"max-file\"' /etc/docker/daemon.json")
        assert out.strip() == "5", out


@pytest.mark.parametrize("bip, phrase", [("", "docker_bip: not set"), ("198.19.0.0/24", "is not a gateway address")])
def test_bad_bip_stops_before_any_host_is_touched(docker_lab: dict[str, Any], pyinfra_cli, bip: str, phrase: str) -> None:
    _, daemon_before = ssh(docker_lab, "ds1", "sudo sha256sum /etc/docker/daemon.json")
    result = docker_run(pyinfra_cli, "--data", f"docker_bip={bip}")
    output = output_of(result)
    assert result.returncode != 0, output[-3000:]
    # Refused by the preflight (ooha/preflight.py), before pyinfra connects to any host.
    assert "no host was contacted" in output and phrase in output and "fix: " in output, output[-3000:]
    assert "Connecting to hosts" not in output, output[-3000:]
    assert any(f"{name}: docker_bip: " in output for name in DS_HOSTS), output[-3000:]
    assert "Beginning operation run" not in output and "Starting operation" not in output, output[-3000:]
    _, daemon_after = ssh(docker_lab, "ds1", "sudo sha256sum /etc/docker/daemon.json")
    assert daemon_after == daemon_before


def test_docker_repository_source_plans_key_entry_and_docker_ce(docker_lab: dict[str, Any], pyinfra_cli) -> None:
    """download.docker.com is unreachable from the lab: the "docker" source is planned (--dry), not run.

    The plan against the real host fetches the key into /etc/apt/keyrings/docker.asc, writes
    the deb822 entry and installs docker-ce; daemon.json and the login stay as they are.
    """
    # No -y: with it pyinfra skips change detection, and a dry run would show no plan.
    result = pyinfra_cli("inventories/lab.py", "deploys/ha.py", "--dry", "--data", "layers=docker",
                         "--data", "docker_source=docker", "--limit", "ds1", timeout=300)
    output = output_of(result)
    assert result.returncode == 0, output[-3000:]
    planned = {line.split("|", 1)[1].split("  ")[0].strip(): line for line in output.splitlines() if line.strip().startswith("Docker engine |")}
    for op in ("Docker's apt signing key", "Docker's apt repository", "Install the Docker engine"):
        assert "1 (ds1)" in planned[op], planned
    for op in ("Docker daemon.json", "Restart Docker if daemon.json changed", "Log in to 198.18.20.10:5000"):
        assert "(ds1)" not in planned[op], planned


def test_lost_login_is_restored_without_printing_credentials(docker_lab: dict[str, Any], pyinfra_cli) -> None:
    """A host logged out (or holding other credentials) is logged in again; -vvv output holds no secret."""
    with open(docker_lab["secrets_file"], encoding="utf-8") as handle:
        forbidden = {key: str(value) for key, value in yaml.safe_load(handle).items() if value}
    rc, out = ssh(docker_lab, "ds2", "sudo docker logout 198.18.20.10:5000")
    assert rc == 0, out
    with lab_lock(exclusive=False):
        result = docker_run(pyinfra_cli, "--limit", "ds2", "-vvv")
    output = output_of(result)
    assert result.returncode == 0, explain(result)
    assert "Docker engine | Log in to 198.18.20.10:5000" in changed_operations(output)
    assert sorted(key for key, value in forbidden.items() if value in output) == []
    assert report_lines(output).get(("ds2", "docker"), "").endswith("logged in to 198.18.20.10:5000")
