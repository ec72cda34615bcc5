"""`python -m lab recreate HOST --address A` without Docker: the move is validated before anything
is touched, recorded in the state dir with the topology address, applied over the topology by
every command (status/state.json, so inventories/lab.py follows), and undone by giving the
topology address back (lab/topology.py with_address, lab/state.py address moves, lab/lifecycle.py)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lab import cli, core, hosts, lifecycle, state, topology
from lab.errors import LabError
from lab.topology import TopologyError

TOPO = topology.load()


def test_a_move_changes_the_zone_address_and_keeps_the_original() -> None:
    moved = topology.with_address(TOPO, "data3", "198.18.3.99")
    host = moved.host("data3")
    assert (host.address, host.addresses, host.original_address) == ("198.18.3.99", {"az3": "198.18.3.99"}, "198.18.3.31")
    assert moved.host("data2") == TOPO.host("data2") and TOPO.host("data3").address == "198.18.3.31"
    back = topology.with_address(moved, "data3", "198.18.3.31")
    assert back.host("data3") == TOPO.host("data3")                  # topology_address None again


def test_a_moved_lb_keeps_its_front_address() -> None:
    host = topology.with_address(TOPO, "lb2", "198.18.2.12").host("lb2")
    assert host.addresses == {"az2": "198.18.2.12", "front": "198.18.10.12"}


@pytest.mark.parametrize("address, message", [
    ("nope", "data3 --address: 'nope' is not an IPv4 address"),
    ("198.18.2.99", "198.18.2.99 is not a usable address of data3's zone az3 (198.18.3.0/24"),
    ("198.18.3.1", "198.18.3.1 is not a usable address of data3's zone az3"),       # the gateway
    ("198.18.3.255", "198.18.3.255 is not a usable address"),
    ("198.18.3.21", "198.18.3.21 belongs to ds3; pick a free address of 198.18.3.0/24"),
])
def test_bad_addresses_are_refused(address, message) -> None:
    with pytest.raises(TopologyError, match=message.replace("(", r"\(")):
        topology.with_address(TOPO, "data3", address)


def test_another_hosts_topology_address_stays_reserved_while_it_is_moved() -> None:
    moved = topology.with_address(TOPO, "data3", "198.18.3.99")
    with pytest.raises(TopologyError, match="198.18.3.31 belongs to data3"):
        topology.with_address(moved, "ds3", "198.18.3.31")


def test_the_move_record(lab_dir: Path) -> None:
    assert state.address_moves() == {}
    state.set_address_move("data3", "198.18.3.99", "198.18.3.31")
    assert state.address_moves() == {"data3": {"address": "198.18.3.99", "original": "198.18.3.31"}}
    assert stat.S_IMODE(os.stat(state.address_moves_path()).st_mode) == 0o600
    assert lifecycle.lab_topology().host("data3").address == "198.18.3.99"
    assert "`python -m lab recreate data3 --address 198.18.3.31` puts it back" in lifecycle.moves_note()
    state.set_address_move("data3", "198.18.3.31", "198.18.3.31")
    assert not state.address_moves_path().exists() and lifecycle.moves_note() == ""
    assert lifecycle.lab_topology().host("data3").address == "198.18.3.31"


def test_a_broken_move_record_is_one_line_with_the_fix(lab_dir: Path, no_docker, capsys) -> None:
    state.address_moves_path().write_text("{")
    assert cli.run(["status"]) == 1
    assert "addresses.json is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["recreate", "data3", "ds3", "--address", "198.18.3.99"], "lab recreate: --address moves one host; name exactly one"),
    (["recreate", "--az", "az3", "--address", "198.18.3.99"], "lab recreate: --address moves one named host, not an AZ"),
    (["recreate", "data3", "--address", "198.18.1.99"], "lab recreate: data3 --address: 198.18.1.99 is not a usable"),
])
def test_bad_moves_are_refused_before_the_engine_is_contacted(argv, message, lab_dir, no_docker, capsys) -> None:
    assert cli.run(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_status_and_state_json_give_the_moved_address(lab_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "registry_tags", lambda *_args: [])          # no registry asked
    moved = topology.with_address(TOPO, "data3", "198.18.3.99")

    class NoContainers:
        class containers:  # noqa: N801 - just enough of docker.DockerClient
            @staticmethod
            def get(name):
                import docker
                raise docker.errors.NotFound(name)

    result = core.status(moved, NoContainers())
    entry = next(h for h in result["hosts"] if h["name"] == "data3")
    assert entry["address"] == "198.18.3.99" and entry["addresses"] == {"az3": "198.18.3.99"}
    saved = json.loads((lab_dir / "state.json").read_text())
    from inventories.labstate import lab_groups
    data = dict(lab_groups(saved, {})["all"][0])["data3"]
    assert (data["ssh_hostname"], data["private_address"]) == ("198.18.3.99", "198.18.3.99")


def test_known_hosts_follow_the_move(lab_dir: Path) -> None:
    hosts.write_known_hosts({"data2": "ssh-ed25519 AAAA2", "data3": "ssh-ed25519 AAAAold"}, TOPO)
    hosts.update_known_hosts(TOPO, forget=["data3"])                      # destroy, at the old address
    moved = topology.with_address(TOPO, "data3", "198.18.3.99")
    hosts.update_known_hosts(moved, keys={"data3": "ssh-ed25519 AAAAnew"})  # recreate, at the new one
    text = (lab_dir / "known_hosts").read_text()
    assert "198.18.3.99 ssh-ed25519 AAAAnew" in text and "198.18.3.31" not in text and "AAAAold" not in text
    assert hosts.recorded_host_keys(moved) == {"data2": "ssh-ed25519 AAAA2", "data3": "ssh-ed25519 AAAAnew"}


def test_recreate_with_an_address_needs_one_named_host() -> None:
    with pytest.raises(LabError, match="name exactly one"):
        lifecycle._moved(TOPO, [TOPO.host("ds3"), TOPO.host("data3")], "198.18.3.99")
    assert lifecycle._moved(TOPO, [TOPO.host("ds3")], None) is TOPO
