"""`python -m lab destroy` / `recreate` without Docker: arguments, host selection, refusals,
the known_hosts and destroyed records, status of a destroyed host (lab/lifecycle.py)."""
from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import docker
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab import cli, core, hosts, lifecycle, state, topology
from lab.errors import LabError
from lab.topology import TopologyError

TOPO = topology.load()


@pytest.mark.parametrize("argv, hosts_, az", [
    (["destroy", "ds3"], ["ds3"], None),
    (["destroy", "ds3", "lb2"], ["ds3", "lb2"], None),
    (["destroy", "--az", "az2"], [], "az2"),
    (["recreate", "lb2"], ["lb2"], None),
    (["recreate", "--az", "az3"], [], "az3"),
])
def test_destroy_and_recreate_take_hosts_or_an_az(argv, hosts_, az) -> None:
    args = cli._parser().parse_args(argv)
    assert (args.command, args.hosts, args.az) == (argv[0], hosts_, az)


def test_named_hosts_are_taken_in_the_order_given_once_each() -> None:
    chosen = lifecycle.select_hosts(TOPO, ["lb2", "ds3", "lb2"], None)
    assert [h.name for h in chosen] == ["lb2", "ds3"]


@pytest.mark.parametrize("az, names", [
    ("az1", ["lb1", "ds1", "data1"]),
    ("az2", ["lb2", "ds2", "data2"]),
    ("az3", ["ds3", "data3"]),
])
def test_an_az_means_its_hosts_from_the_topology(az, names) -> None:
    assert [h.name for h in lifecycle.select_hosts(TOPO, [], az)] == names


@pytest.mark.parametrize("names, az, message", [
    ([], None, "name the hosts (e.g. ds3 lb2) or give --az AZ (one of az1, az2, az3)"),
    (["ds1"], "az1", "name hosts or give --az AZ, not both"),
    ([], "az9", "unknown AZ 'az9'; choose one of az1, az2, az3"),
    ([], "region", "unknown AZ 'region'; choose one of az1, az2, az3"),
    (["ds1", "svc1"], None, "svc1 is the lab's services host"),
])
def test_bad_selections_are_refused(names, az, message) -> None:
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lifecycle.select_hosts(TOPO, names, az)


def test_an_unknown_host_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(TopologyError, match="unknown host 'ds9': choose one of lb1, lb2, ds1"):
        lifecycle.select_hosts(TOPO, ["ds9"], None)


@pytest.mark.parametrize("argv, message", [
    (["destroy", "svc1"], "lab destroy: svc1 is the lab's services host"),
    (["recreate", "svc1"], "lab recreate: svc1 is the lab's services host"),
    (["recreate"], "lab recreate: name the hosts"),
    (["destroy", "--az", "az7"], "lab destroy: unknown AZ 'az7'"),
    (["recreate", "ds1", "--az", "az1"], "lab recreate: name hosts or give --az AZ, not both"),
    (["destroy", "ds9"], "lab destroy: unknown host 'ds9'"),
])
def test_refusals_are_one_line_and_exit_1_before_the_engine_is_contacted(argv, message, no_docker, capsys) -> None:
    assert cli.run(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_fingerprint_is_openssh_sha256() -> None:
    line = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    expected = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(line.split()[1])).fingerprint
    assert lifecycle.fingerprint(line) == expected


def test_known_hosts_updates_keep_the_other_hosts_lines(lab_dir: Path) -> None:
    hosts.write_known_hosts({"lb1": "ssh-ed25519 AAAAold1", "lb2": "ssh-ed25519 AAAAold2",
                             "ds3": "ssh-ed25519 AAAAold3"}, TOPO)
    hosts.update_known_hosts(TOPO, forget=["ds3"])
    assert hosts.recorded_host_keys(TOPO) == {"lb1": "ssh-ed25519 AAAAold1", "lb2": "ssh-ed25519 AAAAold2"}
    hosts.update_known_hosts(TOPO, keys={"lb2": "ssh-ed25519 AAAAnew2"})
    text = (lab_dir / "known_hosts").read_text()
    assert "198.18.2.11,198.18.10.12 ssh-ed25519 AAAAnew2" in text      # every address of lb2
    assert "198.18.1.11,198.18.10.11 ssh-ed25519 AAAAold1" in text      # lb1 untouched
    assert "AAAAold2" not in text and "198.18.3.21" not in text
    assert stat.S_IMODE(os.stat(lab_dir / "known_hosts").st_mode) == 0o600


def test_the_destroyed_record(lab_dir: Path) -> None:
    assert state.destroyed_hosts() == set()
    state.set_destroyed(["ds3", "lb2"])
    assert state.destroyed_hosts() == {"ds3", "lb2"}
    assert stat.S_IMODE(os.stat(state.destroyed_path()).st_mode) == 0o600
    state.set_destroyed(["ds3"], destroyed=False)
    assert state.destroyed_hosts() == {"lb2"}
    state.set_destroyed(["lb2"], destroyed=False)
    assert not state.destroyed_path().exists()


class _FakeContainer:
    def __init__(self, containers: dict, name: str) -> None:
        self.containers, self.name, self.removed_with = containers, name, None

    def remove(self, **kwargs) -> None:
        self.removed_with = kwargs
        del self.containers[self.name]


class _FakeVolume:
    def __init__(self, volumes: dict, name: str) -> None:
        self.volumes, self.name = volumes, name

    def remove(self, force: bool = False) -> None:
        del self.volumes[self.name]


class _FakeEngine:
    """Just enough of docker.DockerClient for remove_host and status: containers and volumes by name."""

    def __init__(self, containers: dict, volumes: dict) -> None:
        engine_self = self
        self.container_map, self.volume_map = containers, volumes

        class Containers:
            def get(self, name):
                if name not in engine_self.container_map:
                    raise docker.errors.NotFound(name)
                return engine_self.container_map[name]

        class Volumes:
            def get(self, name):
                if name not in engine_self.volume_map:
                    raise docker.errors.NotFound(name)
                return _FakeVolume(engine_self.volume_map, name)

        self.containers, self.volumes = Containers(), Volumes()


def test_destroying_a_host_removes_its_container_volume_and_known_hosts_line(lab_dir: Path) -> None:
    ds3 = TOPO.host("ds3")
    containers: dict = {}
    container = containers["ooha-ds3"] = _FakeContainer(containers, "ooha-ds3")
    fake = _FakeEngine(containers, {"ooha-ds3-docker": object(), "ooha-ds2-docker": object()})
    hosts.write_known_hosts({"ds2": "ssh-ed25519 AAAA2", "ds3": "ssh-ed25519 AAAA3"}, TOPO)
    removed = lifecycle._destroy_one(fake, TOPO, ds3)
    assert removed == ["container ooha-ds3", "volume ooha-ds3-docker", "its known_hosts line"]
    assert container.removed_with == {"force": True, "v": True}          # killed, anonymous volumes too
    assert set(fake.volume_map) == {"ooha-ds2-docker"}
    assert hosts.recorded_host_keys(TOPO) == {"ds2": "ssh-ed25519 AAAA2"}
    assert state.destroyed_hosts() == {"ds3"}
    assert lifecycle._destroy_one(fake, TOPO, ds3) == []                  # again: nothing left


def test_status_reports_a_destroyed_host_and_does_not_crash_on_a_missing_one(lab_dir: Path) -> None:
    doc = {"azs": {"az1": {"subnet": "198.18.1.0/24"}},
           "hosts": {"ds1": {"az": "az1", "addresses": {"az1": "198.18.1.21"}, "roles": ["docs"]},
                     "ds2": {"az": "az1", "addresses": {"az1": "198.18.1.22"}, "roles": ["docs"]}}}
    small = topology.parse(doc)
    state.set_destroyed(["ds1"])
    result = core.status(small, _FakeEngine({}, {}))
    assert {h["name"]: h["state"] for h in result["hosts"]} == {"ds1": "destroyed", "ds2": "missing"}
    assert '"state": "destroyed"' in (lab_dir / "state.json").read_text()
