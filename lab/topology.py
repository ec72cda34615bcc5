"""Load and validate the lab topology (lab/topology.yml).

Validation happens before anything touches the engine, so a typo in the file
fails with one line naming the host, the field and the fix instead of a half-built lab.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Every lab address lives here (RFC 2544 test-bed range); see shared/LAB-NOTES.md.
LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
#: Ranges the outer engine and the engines inside hosts use; lab networks must not overlap them.
RESERVED = {
    "the outer engine's docker0 (--bip)": ipaddress.ip_network("198.18.0.0/24"),
    "the outer engine's --default-address-pool": ipaddress.ip_network("198.18.128.0/17"),
    "the engines inside lab hosts": ipaddress.ip_network("198.19.0.0/16"),
}
DEFAULT_TOPOLOGY = Path(__file__).with_name("topology.yml")
HOST_IMAGE = "ooha-lab/host:bookworm"


class TopologyError(ValueError):
    """A topology file that cannot describe a lab; the message names the field and the fix."""


@dataclass(frozen=True)
class Network:
    """A docker bridge network of the lab (an AZ or a shared segment)."""

    name: str
    subnet: ipaddress.IPv4Network
    is_az: bool

    @property
    def docker_name(self) -> str:
        """The engine's name for it: ooha-<name>."""
        return f"ooha-{self.name}"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """First address: the outer machine's side of the bridge, which routes between networks."""
        return next(self.subnet.hosts())


@dataclass(frozen=True)
class Host:
    """One lab host (a systemd + sshd container)."""

    name: str
    az: str
    addresses: dict[str, str]
    roles: tuple[str, ...]
    image: str = HOST_IMAGE
    topology_address: str | None = None
    """The topology file's private address when the lab moved the host to another one
    (`python -m lab recreate HOST --address A`: a replacement at a new address); else None."""

    @property
    def container(self) -> str:
        """Container name: ooha-<host>."""
        return f"ooha-{self.name}"

    @property
    def address(self) -> str:
        """Private address (what pyinfra connects to and peers use): the one on its own zone."""
        return self.addresses[self.az]

    @property
    def original_address(self) -> str:
        """The private address the topology file gives it (the way back after a move)."""
        return self.topology_address or self.address


@dataclass(frozen=True)
class Topology:
    """The whole lab: zones, other networks and hosts, validated."""

    name: str
    networks: dict[str, Network]
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def azs(self) -> list[str]:
        """AZ names in file order."""
        return [n.name for n in self.networks.values() if n.is_az]

    def host(self, name: str) -> Host:
        """The host called name, or a TopologyError listing the known ones."""
        if name not in self.hosts:
            raise TopologyError(f"unknown host {name!r}: choose one of {', '.join(self.hosts)}")
        return self.hosts[name]

    def hosts_in(self, az: str) -> list[Host]:
        """Hosts whose zone is az."""
        return [h for h in self.hosts.values() if h.az == az]

    def addresses_of(self, az: str) -> list[str]:
        """Every address (all networks) of the hosts in az: what a cut of az isolates."""
        return [a for h in self.hosts_in(az) for a in h.addresses.values()]


def _subnet(where: str, raw: Any) -> ipaddress.IPv4Network:
    """Parse a subnet and check it lies in the lab range, clear of the engines' own ranges."""
    try:
        net = ipaddress.ip_network(str(raw))
    except ValueError as exc:
        raise TopologyError(f"{where}: subnet {raw!r} is not a network ({exc}); write it like 198.18.1.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(LAB_RANGE):
        raise TopologyError(f"{where}: subnet {net} is outside {LAB_RANGE}; lab networks must be inside it")
    for what, reserved in RESERVED.items():
        if net.overlaps(reserved):
            raise TopologyError(f"{where}: subnet {net} overlaps {reserved} ({what}); choose another /24 in {LAB_RANGE}")
    return net


def _networks(doc: dict[str, Any]) -> dict[str, Network]:
    """Read `azs:` and `networks:`; names must be unique and subnets must not overlap."""
    azs = doc.get("azs")
    if not isinstance(azs, dict) or not azs:
        raise TopologyError("azs: missing or empty; list at least one zone, e.g. `az1: {subnet: 198.18.1.0/24}`")
    others = doc.get("networks") or {}
    if not isinstance(others, dict):
        raise TopologyError("networks: must be a mapping of name -> {subnet: ...}")
    result: dict[str, Network] = {}
    for is_az, section in ((True, azs), (False, others)):
        for name, spec in section.items():
            where = f"{'azs' if is_az else 'networks'}.{name}"
            if name in result:
                raise TopologyError(f"{where}: name {name!r} is used twice; rename one")
            if not isinstance(spec, dict) or "subnet" not in spec:
                raise TopologyError(f"{where}: needs `subnet:`")
            net = _subnet(where, spec["subnet"])
            for other in result.values():
                if net.overlaps(other.subnet):
                    raise TopologyError(f"{where}: subnet {net} overlaps {other.name} ({other.subnet}); give it its own subnet")
            result[name] = Network(name=name, subnet=net, is_az=is_az)
    return result


def _host(name: str, spec: Any, networks: dict[str, Network]) -> Host:
    """Validate one host entry against the networks."""
    where = f"hosts.{name}"
    if not isinstance(spec, dict):
        raise TopologyError(f"{where}: must be a mapping with az, addresses and roles")
    roles = spec.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise TopologyError(f"{where}.roles: give a non-empty list of role names, e.g. [docs]")
    az = spec.get("az")
    azs = [n for n, net in networks.items() if net.is_az]
    regional = "services" in roles and az in networks and not networks[az].is_az
    if az not in azs and not regional:
        raise TopologyError(f"{where}.az: unknown AZ {az!r}; use one of {', '.join(azs)} (defined under azs:)")
    addresses = spec.get("addresses")
    if not isinstance(addresses, dict) or not addresses:
        raise TopologyError(f"{where}.addresses: give network -> address, e.g. {{{az}: ...}}")
    if az not in addresses:
        raise TopologyError(f"{where}.addresses: no address on its own zone {az!r}; add `{az}: <address in {networks[az].subnet}>`")
    clean: dict[str, str] = {}
    for net_name, raw in addresses.items():
        if net_name not in networks:
            raise TopologyError(f"{where}.addresses.{net_name}: unknown network; use one of {', '.join(networks)}")
        if networks[net_name].is_az and net_name != az:
            raise TopologyError(f"{where}.addresses.{net_name}: a host in {az} cannot sit on another zone's network; remove it")
        try:
            addr = ipaddress.ip_address(str(raw))
        except ValueError:
            raise TopologyError(f"{where}.addresses.{net_name}: {raw!r} is not an IPv4 address") from None
        if addr not in LAB_RANGE:
            raise TopologyError(f"{where}.addresses.{net_name}: {addr} is outside {LAB_RANGE}; lab addresses must be inside it")
        net = networks[net_name]
        if addr not in net.subnet or addr in (net.subnet.network_address, net.subnet.broadcast_address, net.gateway):
            raise TopologyError(f"{where}.addresses.{net_name}: {addr} is not a usable address of {net_name} ({net.subnet}, gateway {net.gateway}); pick one inside it")
        clean[net_name] = str(addr)
    image = spec.get("image", HOST_IMAGE)
    return Host(name=name, az=az, addresses=clean, roles=tuple(roles), image=str(image))


def parse(doc: Any, source: str = "topology") -> Topology:
    """Validate a parsed topology document; raise TopologyError naming the first problem."""
    if not isinstance(doc, dict):
        raise TopologyError(f"{source}: must be a YAML mapping with azs, networks and hosts")
    name = str(doc.get("name", "ooha"))
    networks = _networks(doc)
    raw_hosts = doc.get("hosts")
    if not isinstance(raw_hosts, dict) or not raw_hosts:
        raise TopologyError("hosts: missing or empty; define at least one host")
    hosts: dict[str, Host] = {}
    seen: dict[str, str] = {}
    for host_name, spec in raw_hosts.items():
        if not isinstance(host_name, str) or not host_name.replace("-", "").isalnum() or not host_name[0].isalpha():
            raise TopologyError(f"hosts.{host_name}: host names are letters, digits and '-', starting with a letter")
        host = _host(host_name, spec, networks)
        for net_name, addr in host.addresses.items():
            if addr in seen:
                raise TopologyError(f"hosts.{host_name}.addresses.{net_name}: duplicate address {addr} (already used by {seen[addr]}); give each host its own")
            seen[addr] = f"{host_name} on {net_name}"
        hosts[host_name] = host
    return Topology(name=name, networks=networks, hosts=hosts)


def with_address(topo: Topology, name: str, address: str) -> Topology:
    """``topo`` with host ``name`` at ``address`` on its own zone (a replacement host at a new
    address); its topology-file address is kept in ``topology_address``, and giving that
    address back makes the host as the file describes it again.

    Refused (TopologyError naming the fix): an unknown host, an address that is not a usable
    address of the host's zone subnet, or one another host already has.
    """
    host = topo.host(name)
    where = f"{name} --address"
    try:
        addr = ipaddress.ip_address(str(address))
    except ValueError:
        raise TopologyError(f"{where}: {address!r} is not an IPv4 address") from None
    net = topo.networks[host.az]
    if (not isinstance(addr, ipaddress.IPv4Address) or addr not in net.subnet
            or addr in (net.subnet.network_address, net.subnet.broadcast_address, net.gateway)):
        raise TopologyError(f"{where}: {addr} is not a usable address of {name}'s zone {host.az} ({net.subnet}, "
                            f"gateway {net.gateway}); a replacement stays in its AZ: pick one inside it")
    for other in topo.hosts.values():
        if other.name != name and str(addr) in (*other.addresses.values(), other.original_address):
            raise TopologyError(f"{where}: {addr} belongs to {other.name}; pick a free address of {net.subnet}")
    original = host.original_address
    moved = dataclasses.replace(host, addresses={**host.addresses, host.az: str(addr)},
                                topology_address=None if str(addr) == original else original)
    return dataclasses.replace(topo, hosts={**topo.hosts, name: moved})


def with_addresses(topo: Topology, moves: Mapping[str, str]) -> Topology:
    """``topo`` with every ``{host: address}`` move applied (with_address, same refusals)."""
    for name, address in moves.items():
        topo = with_address(topo, name, address)
    return topo


def load(path: Path | str = DEFAULT_TOPOLOGY) -> Topology:
    """Read and validate a topology file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology file ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML ({exc})") from None
    return parse(doc, str(path))
