"""A broken inventory stops `pyinfra INVENTORY deploys/ha.py` before anything runs.

Runs the real pyinfra CLI.  No lab needed: the first inventory fails while loading
(before pyinfra connects), the second uses pyinfra's @fake connector so the check
inside ha.py is exercised without any network traffic.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import yaml

from ooha.preflight import REQUIRED_SECRETS

SECRETS = {key: f"s3cr3t-{key}" for key in REQUIRED_SECRETS}


def _secrets_file(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "secrets.yml"
    path.write_text(yaml.safe_dump(values))
    os.chmod(path, 0o600)
    return path


def test_broken_copy_of_example_inventory_stops_before_connecting(tmp_path: Path, repo_root: Path, pyinfra_cli) -> None:
    # What a user does: copy example.py, edit it (here: wrongly), run the main job.
    text = (repo_root / "inventories/example.py").read_text()
    text = text.replace('_host("lb2", "eu-west-1b"', '_host("lb2", "eu-west-1a"')  # lb in one AZ
    text = text.replace('_host("ds3", "eu-west-1c", "203.0.113.23")', '_host("ds3", "eu-west-1c", "198.51.100.22")')  # dup
    inventory = tmp_path / "inventory.py"
    inventory.write_text(text)
    partial = {k: v for k, v in SECRETS.items() if k != "redis_password"}
    env = {"OOHA_SECRETS_FILE": str(_secrets_file(tmp_path, partial))}

    result = pyinfra_cli("-y", str(inventory), "deploys/ha.py", timeout=120, env=env)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "group lb: spans 1 AZ(s)" in output
    assert "ds3: ssh_hostname: address 198.51.100.22 is also used by ds2" in output
    assert "all: secrets.redis_password: missing or empty" in output
    assert "s3cr3t" not in output
    assert "Connecting to hosts" not in output  # stopped while loading the inventory


def test_check_in_ha_py_stops_before_any_operation(tmp_path: Path, pyinfra_cli) -> None:
    # An inventory that does not validate itself: ha.py's own check must catch it.
    secrets = _secrets_file(tmp_path, SECRETS)
    inventory = tmp_path / "fake_inventory.py"
    inventory.write_text(textwrap.dedent(f"""
        from ooha.secrets import load_secrets

        def _h(name, az, address):
            data = {{"ssh_hostname": address, "private_address": address, "fake_delay": 0}}
            if az:
                data["az"] = az
            return ("@fake/" + name, data)

        all = ([
            _h("lb1", "az1", "198.18.1.11"), _h("lb2", "az2", "198.18.2.11"),
            _h("ds1", "az1", "198.18.1.21"), _h("ds2", None, "198.18.2.21"),
            _h("ds3", "az3", "198.18.3.21"),
            _h("data1", "az1", "198.18.1.31"), _h("data2", "az2", "198.18.2.31"),
            _h("data3", "az3", "198.18.3.31"),
        ], {{"secrets": load_secrets({str(secrets)!r}), "ssh_strict_host_key_checking": "no"}})
        lb = ["@fake/lb1", "@fake/lb2"]
        docs = ["@fake/ds1", "@fake/ds2", "@fake/ds3"]
        postgres = etcd = redis = ["@fake/data1", "@fake/data2", "@fake/data3"]
    """))

    result = pyinfra_cli("-y", str(inventory), "deploys/ha.py", timeout=120)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "@fake/ds2: az: missing" in output
    assert "all: group rabbitmq: missing or empty" in output
    assert "@fake/lb1: ssh_strict_host_key_checking: is 'no'" in output
    assert "Beginning operation run" not in output
    assert "s3cr3t" not in output
