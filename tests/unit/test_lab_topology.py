"""The topology loader refuses files that cannot describe a lab, naming the field and the fix."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lab import topology
from lab.topology import TopologyError

GOOD = yaml.safe_load(topology.DEFAULT_TOPOLOGY.read_text())


def _with(change) -> dict:
    doc = copy.deepcopy(GOOD)
    change(doc)
    return doc


def test_the_shipped_topology_is_the_reference_stack() -> None:
    topo = topology.load()
    assert topo.azs == ["az1", "az2", "az3"]
    assert len(topo.hosts) == 9
    assert topo.host("lb1").addresses == {"az1": "198.18.1.11", "front": "198.18.10.11"}
    assert topo.host("data3").address == "198.18.3.31"
    assert topo.host("svc1").address == "198.18.20.10"
    assert sorted(topo.addresses_of("az1")) == ["198.18.1.11", "198.18.1.21", "198.18.1.31", "198.18.10.11"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["hosts"]["ds2"]["addresses"].update(az2="198.18.2.11"),
     "hosts.ds2.addresses.az2: duplicate address 198.18.2.11 (already used by lb2 on az2)"),
    (lambda d: d["hosts"]["ds1"]["addresses"].update(az1="10.0.0.5"),
     "hosts.ds1.addresses.az1: 10.0.0.5 is outside 198.18.0.0/15"),
    (lambda d: d["hosts"]["ds1"]["addresses"].update(az1="198.18.2.21"),
     "hosts.ds1.addresses.az1: 198.18.2.21 is not a usable address of az1 (198.18.1.0/24"),
    (lambda d: d["hosts"]["ds1"].update(az="az7"),
     "hosts.ds1.az: unknown AZ 'az7'; use one of az1, az2, az3"),
    (lambda d: d["azs"].update(az4={"subnet": "192.168.4.0/24"}),
     "azs.az4: subnet 192.168.4.0/24 is outside 198.18.0.0/15"),
    (lambda d: d["azs"].update(az4={"subnet": "198.18.1.0/25"}),
     "azs.az4: subnet 198.18.1.0/25 overlaps az1"),
    (lambda d: d["azs"].update(az4={"subnet": "198.18.0.0/24"}),
     "overlaps 198.18.0.0/24 (the outer engine's docker0"),
    (lambda d: d["hosts"]["ds1"]["addresses"].update(az1="198.18.1.1"),
     "gateway 198.18.1.1"),
    (lambda d: d["hosts"]["ds1"]["addresses"].update(az2="198.18.2.99"),
     "hosts.ds1.addresses.az2: a host in az1 cannot sit on another zone's network"),
    (lambda d: d["hosts"]["ds1"].update(roles=[]),
     "hosts.ds1.roles: give a non-empty list"),
    (lambda d: d["hosts"]["ds1"]["addresses"].update(lan="198.18.1.99"),
     "hosts.ds1.addresses.lan: unknown network"),
    (lambda d: d["hosts"]["lb1"].update(az="front"),
     "hosts.lb1.az: unknown AZ 'front'"),
])
def test_bad_topologies_are_refused_with_a_clear_message(change, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        topology.parse(_with(change))
    assert message in str(err.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read the topology file"):
        topology.load(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("azs: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        topology.load(bad)


def test_unknown_host_lookup_lists_the_known_ones() -> None:
    with pytest.raises(TopologyError, match="unknown host 'ds9': choose one of lb1, lb2"):
        topology.load().host("ds9")
