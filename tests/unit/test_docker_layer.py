"""Docker engine layer: input validation, daemon.json rendering, Docker's repository, facts."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ooha.layers.docker import (
    DOCKER_KEYRING,
    daemon_config,
    daemon_json,
    docker_repo_source,
    input_problems,
    network_problems,
    packages_for,
    release_codename,
)
from ooha.facts.docker import parse_engine, registry_login_command

LAB = {
    "docker_bip": "198.19.0.1/24",
    "docker_address_pools": [{"base": "198.19.128.0/17", "size": 24}],
}
HOSTS = [("ds1", ipaddress.ip_address("198.18.1.21")), ("data1", ipaddress.ip_address("198.18.1.31"))]


def target(ca: str | None = None, **data: Any) -> SimpleNamespace:
    secrets = data.pop("secrets", {"registry_username": "u", "registry_password": "p"})
    return SimpleNamespace(name="ds1", data={**LAB, "secrets": secrets, "docker_registry_ca": ca, **data})


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return str(path)


# --- input validation -------------------------------------------------------------------


def test_lab_values_are_valid(ca_file: str) -> None:
    assert input_problems(target(ca=ca_file, docker_registry="198.18.20.10:5000"), addresses=HOSTS) == []


@pytest.mark.parametrize("bip", [None, "", "  "])
def test_unset_bip_is_refused_with_host_field_and_fix(bip: Any) -> None:
    problems = input_problems(target(docker_bip=bip), addresses=HOSTS)
    assert len(problems) == 1
    assert problems[0].startswith("ds1: docker_bip: not set")
    assert "172.17" in problems[0] and "fix: set docker_bip" in problems[0]


@pytest.mark.parametrize("bip", ["198.19.0.1", "198.19.0.0/24", "198.19.0.255/24", "300.1.1.1/24", "bridge"])
def test_bip_must_be_a_gateway_address_with_prefix(bip: str) -> None:
    problems = network_problems("ds1", bip, None, [])
    assert len(problems) == 1 and problems[0].startswith("ds1: docker_bip: ") and "fix:" in problems[0]


def test_bip_and_pools_must_not_overlap() -> None:
    problems = network_problems("ds1", "198.19.0.1/24", [{"base": "198.19.0.0/16", "size": 24}], [])
    assert problems == ["ds1: docker_address_pools[0]: 198.19.0.0/16 overlaps docker_bip (198.19.0.0/24); fix: use disjoint ranges"]


def test_ranges_must_not_contain_an_inventory_address() -> None:
    problems = network_problems("ds1", "198.18.1.1/24", [{"base": "198.18.0.0/16", "size": 24}], HOSTS)
    assert any(p.startswith("ds1: docker_bip: 198.18.1.0/24 contains ds1's address 198.18.1.21") for p in problems)
    assert any(p.startswith("ds1: docker_address_pools[0]: 198.18.0.0/16 contains data1's address") for p in problems)


@pytest.mark.parametrize("pool", [{"base": "198.19.128.0/17", "size": 16}, {"base": "198.19.128.0/17"},
                                  {"base": "nonsense", "size": 24}, {"base": "198.19.128.0/17", "size": 31}, "198.19.128.0/17"])
def test_bad_pools_are_refused(pool: Any) -> None:
    problems = network_problems("ds1", "198.19.0.1/24", [pool], [])
    assert len(problems) == 1 and problems[0].startswith("ds1: docker_address_pools[0]: ")


def test_registry_requires_its_secrets() -> None:
    problems = input_problems(target(docker_registry="reg.example.net:5000", secrets={}), addresses=[])
    assert problems == [
        f"all: secrets.{key}: missing or empty (required because docker_registry is set); "
        f"fix: add {key}: <value> to the secrets file, or unset docker_registry"
        for key in ("registry_username", "registry_password")
    ]


def test_no_registry_no_secrets_needed() -> None:
    assert input_problems(target(secrets={}), addresses=[]) == []


def test_registry_ca_must_be_a_readable_pem_file(tmp_path: Path) -> None:
    missing = input_problems(target(ca=str(tmp_path / "nope.crt"), docker_registry="r:5000"), addresses=[])
    assert len(missing) == 1 and missing[0].startswith("ds1: docker_registry_ca: cannot read")
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    assert input_problems(target(ca=str(junk), docker_registry="r:5000"), addresses=[])[0].startswith(
        "ds1: docker_registry_ca: ") and "no PEM certificate" in input_problems(target(ca=str(junk), docker_registry="r:5000"), addresses=[])[0]


def test_registry_ca_without_registry(ca_file: str) -> None:
    problems = input_problems(target(ca=ca_file), addresses=[])
    assert problems == ["ds1: docker_registry_ca: set without docker_registry; fix: set docker_registry or unset docker_registry_ca"]


@pytest.mark.parametrize("key, value", [
    ("docker_source", "snap"), ("docker_log_max_size", "50MB"), ("docker_log_max_file", 0),
    ("docker_log_max_file", True), ("docker_live_restore", "yes"), ("docker_registry_mirrors", ["mirror.example.net"]),
    ("docker_insecure_registries", "r:5000"), ("docker_daemon_extra", ["mtu"]), ("docker_registry", "https://r:5000"),
])
def test_each_bad_value_names_its_field(key: str, value: Any) -> None:
    problems = input_problems(target(**{key: value}), addresses=[])
    assert len(problems) == 1 and problems[0].startswith(f"ds1: {key}: ") and "fix:" in problems[0], problems


# --- daemon.json --------------------------------------------------------------------------


def test_daemon_json_for_the_lab() -> None:
    assert json.loads(daemon_json(LAB)) == {
        "bip": "198.19.0.1/24",
        "default-address-pools": [{"base": "198.19.128.0/17", "size": 24}],
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-size": "50m", "max-file": "5"},
    }


def test_daemon_json_is_stable_bytes() -> None:
    reordered = {"docker_address_pools": LAB["docker_address_pools"], "docker_bip": LAB["docker_bip"]}
    assert daemon_json(LAB) == daemon_json(reordered) and daemon_json(LAB).endswith("}\n")


def test_daemon_json_registries_and_extra() -> None:
    config = daemon_config({
        **LAB, "docker_registry_mirrors": ["https://mirror.example.net"], "docker_insecure_registries": ["10.0.0.0/8"],
        "docker_live_restore": False, "docker_log_max_file": "3", "docker_daemon_extra": {"mtu": 1400},
    })
    assert config["registry-mirrors"] == ["https://mirror.example.net"]
    assert config["insecure-registries"] == ["10.0.0.0/8"]
    assert config["live-restore"] is False and config["log-opts"]["max-file"] == "3" and config["mtu"] == 1400


def test_no_pools_key_without_pools() -> None:
    assert "default-address-pools" not in daemon_config({"docker_bip": "10.200.0.1/24"})


# --- package sources ------------------------------------------------------------------------


def test_debian_source_installs_docker_io() -> None:
    assert packages_for({}) == ["docker.io"]


def test_docker_repository_source() -> None:
    """Docker's repository is unreachable from the lab: its path is checked here only."""
    data = {"docker_source": "docker"}
    assert packages_for(data) == ["docker-ce", "docker-ce-cli", "containerd.io"]
    assert docker_repo_source(data, "amd64", "bookworm") == {
        "filename": "docker",
        "types": ["deb"],
        "uris": ["https://download.docker.com/linux/debian"],
        "suites": ["bookworm"],
        "components": ["stable"],
        "architectures": ["amd64"],
        "signed_by": DOCKER_KEYRING,
    }
    assert DOCKER_KEYRING == "/etc/apt/keyrings/docker.asc"
    mirror = docker_repo_source({"docker_repo_url": "https://mirror.example.net/docker", "docker_repo_channel": "test"}, "arm64", "trixie")
    assert mirror["uris"] == ["https://mirror.example.net/docker"] and mirror["components"] == ["test"]
    assert mirror["suites"] == ["trixie"] and mirror["architectures"] == ["arm64"]


def test_release_codename() -> None:
    assert release_codename({"VERSION_CODENAME": "bookworm", "ID": "debian"}) == "bookworm"
    assert release_codename({"CODENAME": "trixie"}) == "trixie"
    assert release_codename({"ID": "debian"}) is None


def test_explicit_packages_win() -> None:
    assert packages_for({"docker_source": "docker", "docker_packages": ["docker-ce=5:27.1.1-1~debian.12~bookworm"]}) == [
        "docker-ce=5:27.1.1-1~debian.12~bookworm"]


# --- facts --------------------------------------------------------------------------------


def test_parse_engine() -> None:
    lines = [
        "### info", json.dumps({"ServerVersion": "20.10.24+dfsg1", "LiveRestoreEnabled": True}), "",
        "### bridge", '[{"Subnet":"198.19.0.0/24","Gateway":"198.19.0.1"}]', "",
        "### daemon", "{", '  "bip": "198.19.0.1/24"', "}",
    ]
    engine = parse_engine(lines)
    assert engine == {
        "info": {"ServerVersion": "20.10.24+dfsg1", "LiveRestoreEnabled": True},
        "bridge": [{"Subnet": "198.19.0.0/24", "Gateway": "198.19.0.1"}],
        "daemon": {"bip": "198.19.0.1/24"},
    }


def test_parse_engine_down_or_bad_daemon_json() -> None:
    assert parse_engine(["### info", "", "### bridge", "", "### daemon"]) is None
    engine = parse_engine(["### info", '{"ServerVersion": "27.1.1"}', "### bridge", "### daemon", "{broken"])
    assert engine is not None and engine["daemon"] is None and engine["bridge"] == []


def _login_verdict(tmp_path: Path, stored: tuple[str, str] | None, password: str | None, registry: str = "r.example:5000") -> str:
    config = tmp_path / "config.json"
    if stored is not None:
        auth = base64.b64encode(f"{stored[0]}:{stored[1]}".encode()).decode()
        config.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    secret = tmp_path / "password"
    if password is not None:
        secret.write_text(password)
    command = registry_login_command(registry, "ooha user", str(secret), config=str(config))
    assert password is None or password not in command.get_raw_value()
    result = subprocess.run(["sh", "-c", command.get_raw_value()], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert password is None or password not in result.stdout
    return result.stdout.strip()


def test_registry_login_verdicts_run_the_real_shell(tmp_path: Path) -> None:
    """The comparison the fact runs on a host, run here with sh, jq and base64."""
    password = "s3cr:et 'quoted' $x"
    assert _login_verdict(tmp_path, ("ooha user", password), password) == "current"
    assert _login_verdict(tmp_path, ("ooha user", "old"), password) == "stale"
    assert _login_verdict(tmp_path, ("someone", password), password) == "stale"
    (tmp_path / "config.json").unlink()
    assert _login_verdict(tmp_path, None, password) == "absent"
    assert _login_verdict(tmp_path, ("ooha user", password), password, registry="other:5000") == "current"


def test_registry_login_absent_without_entry_or_password_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"elsewhere:5000": {"auth": "eA=="}}}))
    command = registry_login_command("r.example:5000", "u", str(tmp_path / "password"), config=str(config))
    assert subprocess.run(["sh", "-c", command.get_raw_value()], capture_output=True, text=True, timeout=10).stdout.strip() == "absent"


def test_daemon_config_pending_compares_below_the_second() -> None:
    from ooha.facts.docker import config_pending, parse_seconds

    assert parse_seconds("1796207285.949596000") == 1796207285949596000
    assert parse_seconds("1796207285.9") == 1796207285900000000 and parse_seconds("1796207285") == 1796207285 * 10**9
    assert parse_seconds("") is None and parse_seconds("n/a") is None
    # Written in the same second as the start but after it: pending (whole seconds missed this).
    assert config_pending(["active yes", "started 1796207285.100000000", "mtime 1796207285.900000001"]) is True
    # Written before the start (the daemon read it), also within the same second: not pending.
    assert config_pending(["active yes", "started 1796207285.900000000", "mtime 1796207285.100000000"]) is False
    # A run that wrote the file and failed before the restart: the file is newer, still pending next run.
    assert config_pending(["active yes", "started 1796207285.000000000", "mtime 1796207999.000000000"]) is True
    assert config_pending(["active no"]) is False
    assert config_pending(["active yes", "started ", "mtime 1796207285.1"]) is False


def test_daemon_config_pending_fact_reads_microsecond_times() -> None:
    from ooha.facts.docker import DaemonConfigPending

    command = DaemonConfigPending().command().get_raw_value()
    assert "--timestamp=us+utc" in command and "%s.%N" in command and "%.9Y" in command
