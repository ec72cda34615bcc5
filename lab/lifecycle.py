"""Lose and replace lab hosts: `python -m lab destroy` and `python -m lab recreate`.

destroy: the host is gone like a lost VM: its container is removed (killed if running) with
its /var/lib/docker volume, its known_hosts line goes, and status reports it as `destroyed`
until `up` or `recreate` creates it again.

recreate: a blank host with the same name and addresses, made the way `up` makes a new host
(core.ensure_host, core.admit_host): a fresh container from the host image, host keys generated
at its first boot and read over docker exec into known_hosts (never trusted on first use), the
lab's deploy key authorized, sshd checked with host-key checking.  A host that still exists is
destroyed first, so `recreate` alone wipes it.  Hosts are handled in parallel, one line each.

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

from lab import core, engine, hosts, state
from lab.errors import LabError
from lab.topology import Host, Topology

Say = Callable[[str], None]
SERVICES_ROLE = "services"


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


def recreate(topo: Topology, names: Sequence[str], az: str | None, say: Say) -> dict[str, Any]:
    """Destroy (if present) and create each host blank, as `up` creates a new host; return the status dict."""
    targets = select_hosts(topo, names, az)
    cli = engine.client()
    _check_lab(cli, topo, targets, need_image=True)
    pubkey = state.ensure_ssh_key()

    def one(host: Host) -> str:
        existed = bool(_destroy_one(cli, topo, host))
        core.ensure_host(cli, topo, host, lambda _line: None)
        key = core.admit_host(cli, host, pubkey)
        hosts.update_known_hosts(topo, keys={host.name: key})
        hosts.verify_ssh(host)
        state.set_destroyed([host.name], destroyed=False)
        return (f"recreated {host.name} ({host.address}) blank{'' if existed else ' (it did not exist)'}: "
                f"new host key {fingerprint(key)} in known_hosts, sshd answers with host-key checking")

    try:
        _each(one, targets, say, "recreate")
    finally:
        result = core.status(topo, cli)
    return result
