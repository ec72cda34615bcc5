"""Secrets loading, the lab inventory's translation of the lab state, example.py."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import pytest
import yaml

from ooha.preflight import REQUIRED_GROUPS, REQUIRED_SECRETS, InventoryError
from inventories.labstate import LabNotUpError, lab_groups, load_lab_groups, load_lab_state
from ooha.secrets import SecretsError, load_secrets

REPO = Path(__file__).resolve().parents[2]
SECRETS = {key: f"s3cr3t-{key}" for key in REQUIRED_SECRETS}


def write_secrets(path: Path, values: dict, mode: int = 0o600) -> Path:
    path.write_text(yaml.safe_dump(values))
    os.chmod(path, mode)
    return path


def test_secrets_load_private_file(tmp_path: Path) -> None:
    assert load_secrets(write_secrets(tmp_path / "s.yml", SECRETS)) == SECRETS


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_secrets_refuses_group_or_other_access_and_says_chmod(tmp_path: Path, mode: int) -> None:
    path = write_secrets(tmp_path / "s.yml", SECRETS, mode)
    with pytest.raises(SecretsError) as caught:
        load_secrets(path)
    message = str(caught.value)
    assert str(path) in message and f"chmod 600 {path}" in message
    assert "s3cr3t" not in message


def test_secrets_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="does not exist"):
        load_secrets(tmp_path / "nope.yml")


def test_secrets_bad_yaml_does_not_echo_content(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    path.write_text("jwt_secret: [s3cr3t-unclosed\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError) as caught:
        load_secrets(path)
    assert "not valid YAML" in str(caught.value) and "s3cr3t" not in str(caught.value)


def test_secrets_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    path.write_text("- a\n- b\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError, match="mapping"):
        load_secrets(path)


def lab_state(tmp_path: Path) -> dict:
    """A lab state in the documented format (docs/architecture.md)."""
    hosts = []
    layout = [
        ("lb1", "az1", "198.18.1.11", ["lb"]), ("lb2", "az2", "198.18.2.11", ["lb"]),
        ("ds1", "az1", "198.18.1.21", ["docs"]), ("ds2", "az2", "198.18.2.21", ["docs"]),
        ("ds3", "az3", "198.18.3.21", ["docs"]),
        ("data1", "az1", "198.18.1.31", ["postgres", "etcd", "redis", "rabbitmq"]),
        ("data2", "az2", "198.18.2.31", ["postgres", "etcd", "redis", "rabbitmq"]),
        ("data3", "az3", "198.18.3.31", ["postgres", "etcd", "redis", "rabbitmq"]),
        ("svc1", "region", "198.18.20.10", ["services"]),
    ]
    for name, az, address, roles in layout:
        hosts.append({"name": name, "container": f"ooha-{name}", "az": az, "address": address,
                      "addresses": {az: address}, "roles": roles, "ssh_user": "admin",
                      "ssh_key": str(tmp_path / "id_ed25519"), "state": "running"})
    return {
        "name": "ooha", "state_dir": str(tmp_path), "ca_cert": str(tmp_path / "ca/ca.crt"),
        "ssh_key": str(tmp_path / "id_ed25519"), "known_hosts": str(tmp_path / "known_hosts"),
        "secrets_file": str(tmp_path / "secrets.yml"),
        "services": {"apt_proxy": "http://198.18.20.10:3142", "ntp_server": "198.18.20.10"},
        "hosts": hosts,
    }


def test_lab_groups_follow_roles_and_leave_out_services_host(tmp_path: Path) -> None:
    groups = lab_groups(lab_state(tmp_path), SECRETS)
    names = [name for name, _ in groups["all"][0]]
    assert "svc1" not in names and len(names) == 8
    assert groups["lb"] == ["lb1", "lb2"] and groups["docs"] == ["ds1", "ds2", "ds3"]
    for role in ("postgres", "etcd", "redis", "rabbitmq"):
        assert groups[role] == ["data1", "data2", "data3"]
    data = dict(groups["all"][0])["ds2"]
    assert data["ssh_hostname"] == data["private_address"] == "198.18.2.21"
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["ssh_known_hosts_file"] == str(tmp_path / "known_hosts")
    assert data["az"] == "az2" and data["ssh_user"] == "admin"
    globals_ = groups["all"][1]
    assert globals_["ntp_servers"] == ["198.18.20.10"]
    assert globals_["apt_proxy"] == "http://198.18.20.10:3142"
    assert globals_["chrony_may_set_clock"] is False and globals_["sysctl_host_baseline"] == {}
    assert globals_["secrets"] == SECRETS


def test_lab_not_up_says_how_to_bring_it_up(tmp_path: Path) -> None:
    with pytest.raises(LabNotUpError, match="python -m lab up"):
        load_lab_state(tmp_path)


def test_load_lab_groups_reads_state_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(lab_state(tmp_path)))
    write_secrets(tmp_path / "secrets.yml", SECRETS)
    assert load_lab_groups(tmp_path)["all"][1]["secrets"] == SECRETS


def test_lab_inventory_file_validates_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = lab_state(tmp_path)
    state["hosts"] = [h for h in state["hosts"] if h["name"] != "lb2"]  # lb in one AZ
    (tmp_path / "state.json").write_text(json.dumps(state))
    write_secrets(tmp_path / "secrets.yml", SECRETS)
    monkeypatch.setenv("OOHA_LAB_DIR", str(tmp_path))
    with pytest.raises(InventoryError, match="group lb: spans 1 AZ"):
        runpy.run_path(str(REPO / "inventories/lab.py"))


def test_example_inventory_is_valid_with_a_complete_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOHA_SECRETS_FILE", str(write_secrets(tmp_path / "s.yml", SECRETS)))
    namespace = runpy.run_path(str(REPO / "inventories/example.py"))
    for group in REQUIRED_GROUPS:
        assert namespace[group]
    hosts, data = namespace["all"]
    assert {h[1]["az"] for h in hosts} == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}
    assert data["secrets"] == SECRETS


def test_example_inventory_refuses_missing_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = {k: v for k, v in SECRETS.items() if k != "postgres_ds_password"}
    monkeypatch.setenv("OOHA_SECRETS_FILE", str(write_secrets(tmp_path / "s.yml", partial)))
    with pytest.raises(InventoryError) as caught:
        runpy.run_path(str(REPO / "inventories/example.py"))
    assert "secrets.postgres_ds_password: missing" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_example_inventory_refuses_readable_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOHA_SECRETS_FILE", str(write_secrets(tmp_path / "s.yml", SECRETS, 0o644)))
    with pytest.raises(SecretsError, match="chmod 600"):
        runpy.run_path(str(REPO / "inventories/example.py"))
