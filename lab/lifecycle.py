"""Lose and replace lab hosts: `python -m lab destroy` and `python -m lab recreate`.

destroy: the host is gone like a lost VM: its container is removed (killed if running) with
its /var/lib/docker volume, its known_hosts line goes, and status reports it as `destroyed`
until `up` or `recreate` creates it again.

recreate: a blank host with the same name and addresses, made the way `up` makes a new host
(core.ensure_host, core.admit_host): a fresh container from the host image, host keys generated
at its first boot and read over docker exec into known_hosts (never trusted on first use), the
lab's deploy key authorized, sshd checked with host-key checking.  A host that still exists is
destroyed first, so `recreate` alone wipes it.  Hosts are handled in parallel, one line each.

recreate --address A: the blank replacement comes up at another address of its AZ (a host
replaced by one with a new address, issue 10).  The move is recorded in the state dir
(state.address_moves, with the topology file's address), applied over the topology by every
command (lab_topology), so status, state.json and inventories/lab.py give the new address and
known_hosts holds the new key under it; `recreate HOST --address ORIGINAL` is the way back.

The services host (registry, S3, apt cache, NTP for every AZ) is never destroyed.
"""
from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from lab import core, engine, hosts, state, topology
from lab.errors import LabError
from lab.topology import Host, Topology

Say = Callable[[str], None]
SERVICES_ROLE = "services"


def lab_topology(path: str | None = None) -> Topology:
    """The topology file with this state dir's address moves applied: the lab as it is."""
    base = topology.load(path or topology.DEFAULT_TOPOLOGY)
    return topology.with_addresses(base, {name: move["address"] for name, move in state.address_moves().items()})


def moves_note() -> str:
    """Lines for `status`: each host away from its topology address and the way back ("" when none)."""
    return "".join(f"\nmoved: {name} at {move['address']} (topology address {move['original']}; "
                   f"`python -m lab recreate {name} --address {move['original']}` puts it back)"
                   for name, move in sorted(state.address_moves().items()))


def select_hosts(topo: Topology, names: Sequence[str], az: str | None) -> list[Host]:
    """The hosts a destroy/recreate acts on: the named ones (in the order given, once each)
    or every host of the AZ (topology order).

    Refused with one line (LabError, or TopologyError for an unknown host): neither or both
    given, an unknown AZ, an AZ without hosts, the services host.
    """
    if names and az:
        raise LabError("name hosts or give --az AZ, not both")
    if not names and not az:
        raise LabError(f"name the hosts (e.g. ds3 lb2) or give --az AZ (one of {', '.join(topo.azs)})")
    if az:
        if az not in topo.azs:
            raise LabError(f"unknown AZ {az!r}; choose one of {', '.join(topo.azs)}")
        targets = topo.hosts_in(az)
        if not targets:
            raise LabError(f"{az} has no hosts in the topology")
    else:
        targets = [topo.host(name) for name in dict.fromkeys(names)]
    services = [h.name for h in targets if SERVICES_ROLE in h.roles]
    if services:
        raise LabError(f"{', '.join(services)} is the lab's services host (registry, S3, apt cache, NTP for "
                       f"every AZ) and is never destroyed; `python -m lab down` removes the whole lab")
    return targets


def fingerprint(key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line (`ssh-ed25519 AAAA...`)."""
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _check_lab(cli: docker.DockerClient, topo: Topology, targets: list[Host], need_image: bool) -> None:
    """Refuse before touching anything: no lab state here, a lab another state dir made, or
    (for recreate) a missing network or host image."""
    if not state.known_hosts_path().exists():
        raise LabError(f"no lab in {state.state_dir()} (no known_hosts); run `python -m lab up` first")
    mine = {h.container for h in targets}
    foreign = [name for name in core.foreign_containers(cli, topo) if name not in mine]
    if foreign:
        raise LabError(f"{', '.join(sorted(foreign))} were made from another state dir than {state.state_dir()} "
                       f"(set OOHA_LAB_DIR to that lab's, or `python -m lab up` replaces it)")
    if not need_image:
        return
    networks = {n.name for n in cli.networks.list(filters={"name": "ooha-"})}
    missing = sorted({topo.networks[net].docker_name for h in targets for net in h.addresses} - networks)
    if missing:
        raise LabError(f"the lab network(s) {', '.join(missing)} do not exist; run `python -m lab up`")
    images = sorted({h.image for h in targets if not engine.image_exists(cli, h.image)})
    if images:
        raise LabError(f"image(s) {', '.join(images)} missing; run `python -m lab build`")


def _each(func: Callable[[Host], str], targets: list[Host], say: Say, verb: str) -> None:
    """Run func on every target in parallel, saying each line as it comes; then one line naming
    every failure (LabError), after every host was tried."""
    failures: list[str] = []

    def run(host: Host) -> None:
        t0 = time.monotonic()
        try:
            line = func(host)
        except Exception as exc:  # noqa: BLE001 - reported per host, all at once
            failures.append(f"{host.name}: {exc} ({time.monotonic() - t0:.1f}s)")
            return
        say(f"{line} ({time.monotonic() - t0:.1f}s)")

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        list(pool.map(run, targets))
    if failures:
        raise LabError(f"{verb} failed on {len(failures)} host(s): " + "; ".join(sorted(failures)))


def _destroy_one(cli: docker.DockerClient, topo: Topology, host: Host) -> list[str]:
    """Remove the host's container and volume, then its known_hosts line; record it as destroyed."""
    removed = hosts.remove_host(cli, host)
    if host.name in hosts.recorded_host_keys(topo):
        hosts.update_known_hosts(topo, forget=[host.name])
        removed.append("its known_hosts line")
    state.set_destroyed([host.name])
    return removed


def destroy(topo: Topology, names: Sequence[str], az: str | None, say: Say) -> dict[str, Any]:
    """Destroy hosts like lost VMs; return the status dict (state.json is rewritten)."""
    targets = select_hosts(topo, names, az)
    cli = engine.client()
    _check_lab(cli, topo, targets, need_image=False)

    def one(host: Host) -> str:
        removed = _destroy_one(cli, topo, host)
        return f"destroyed {host.name}: {', '.join(removed)} removed" if removed else f"{host.name} was already destroyed"

    try:
        _each(one, targets, say, "destroy")
    finally:
        result = core.status(topo, cli)
    return result


def _moved(topo: Topology, targets: list[Host], address: str | None) -> Topology:
    """The topology the recreated hosts come up in: ``topo``, or with the one target at ``address``.

    Checked before anything is touched: one named host only, a usable free address of its AZ.
    """
    if address is None:
        return topo
    if len(targets) != 1:
        raise LabError(f"--address moves one host; name exactly one (got {', '.join(h.name for h in targets)})")
    return topology.with_address(topo, targets[0].name, address)


def recreate(topo: Topology, names: Sequence[str], az: str | None, say: Say,
             address: str | None = None) -> dict[str, Any]:
    """Destroy (if present) and create each host blank, as `up` creates a new host; return the status dict.

    ``address``: the one named host comes back at this address of its AZ (recorded in the state
    dir, so the lab's status and inventory follow); its topology address puts it back.
    """
    if address is not None and az:
        raise LabError("--address moves one named host, not an AZ")
    targets = select_hosts(topo, names, az)
    after = _moved(topo, targets, address)
    cli = engine.client()
    _check_lab(cli, topo, targets, need_image=True)
    pubkey = state.ensure_ssh_key()

    def one(host: Host) -> str:
        existed = bool(_destroy_one(cli, topo, host))
        new = after.host(host.name)
        if new.address != host.address:
            state.set_address_move(new.name, new.address, new.original_address)
        core.ensure_host(cli, after, new, lambda _line: None)
        key = core.admit_host(cli, new, pubkey)
        hosts.update_known_hosts(after, keys={new.name: key})
        hosts.verify_ssh(new)
        state.set_destroyed([new.name], destroyed=False)
        moved = f" (moved from {host.address})" if new.address != host.address else ""
        return (f"recreated {new.name} ({new.address}){moved} blank{'' if existed else ' (it did not exist)'}: "
                f"new host key {fingerprint(key)} in known_hosts, sshd answers with host-key checking")

    try:
        _each(one, targets, say, "recreate")
    finally:
        result = core.status(topo if address is None else as_recorded(topo, [h.name for h in targets]), cli)
    return result


def as_recorded(topo: Topology, names: Sequence[str]) -> Topology:
    """``topo`` with the named hosts at the address the state dir records for them now (their
    topology address when no move is recorded): what a move that failed half-way left."""
    moves = state.address_moves()
    for name in names:
        topo = topology.with_address(topo, name, moves.get(name, {}).get("address", topo.host(name).original_address))
    return topo
