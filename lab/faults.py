"""Failure injection: stop/start a host, cut an AZ off from the others and heal it.

A cut is a set of DROP rules in the OOHA-CUT chain (jumped first from DOCKER-USER), each
tagged with an iptables comment `ooha-cut:<az>` so heal removes exactly its own rules.
What a cut does (documented in lab/README.md):
- drops forwarded traffic between every address of the AZ's hosts (their front addresses too)
  and every other lab address, both directions, established connections included;
- keeps traffic inside the AZ (an AZ is still a working site on its own);
- keeps the region network (svc1: registry, S3, apt cache, NTP) reachable, like a cloud's
  regional endpoints that each zone reaches on its own;
- does not touch this machine's own access to the hosts (docker exec, tests), like a console.
"""
from __future__ import annotations

import re
import shlex
import time

import docker

from lab import engine, hosts
from lab.engine import CUT_CHAIN, LAB_CIDR, iptables
from lab.errors import LabError
from lab.topology import Topology


def _tag(az: str) -> list[str]:
    return ["-m", "comment", "--comment", f"ooha-cut:{az}"]


def cut_rules(topo: Topology, az: str) -> list[list[str]]:
    """The OOHA-CUT rules isolating az (exemptions first, then the drops)."""
    if az not in topo.azs:
        raise LabError(f"unknown AZ {az!r}; choose one of {', '.join(topo.azs)}")
    mine = topo.addresses_of(az)
    regional = [str(n.subnet) for n in topo.networks.values() if not n.is_az and not any(
        h.az == az for h in topo.hosts.values() if n.name in h.addresses)]
    # Every exemption must come before every drop: a reply inside the AZ would otherwise meet
    # the "anything -> this address" drop of its destination before its own exemption.
    exempt: list[list[str]] = []
    drops: list[list[str]] = []
    for addr in mine:
        for peer in mine:
            if peer != addr:
                exempt.append(["-s", addr, "-d", peer, *_tag(az), "-j", "RETURN"])
        for subnet in regional:
            exempt.append(["-s", addr, "-d", subnet, *_tag(az), "-j", "RETURN"])
            exempt.append(["-s", subnet, "-d", addr, *_tag(az), "-j", "RETURN"])
        drops.append(["-s", addr, "-d", LAB_CIDR, *_tag(az), "-j", "DROP"])
        drops.append(["-s", LAB_CIDR, "-d", addr, *_tag(az), "-j", "DROP"])
    return exempt + drops


def _listed(az: str | None = None) -> list[str]:
    """OOHA-CUT rules (as `iptables -S` prints them) tagged for az (any az when None)."""
    out = iptables("-S", CUT_CHAIN, check=False).stdout.splitlines()
    tag = f"ooha-cut:{az}" if az else "ooha-cut:"
    return [line for line in out if line.startswith(f"-A {CUT_CHAIN} ") and tag in line]


def cut_azs() -> list[str]:
    """AZs currently cut (read from the rules themselves, so there is no state to drift)."""
    found = []
    for line in _listed():
        match = re.search(r"ooha-cut:([\w-]+)", line)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def cut(topo: Topology, az: str) -> bool:
    """Cut az off; returns False when it already was (rules are replaced, so they are complete)."""
    rules = cut_rules(topo, az)
    engine.ensure_routing()
    was_cut = bool(_listed(az))
    _remove(az)
    for rule in rules:
        iptables("-A", CUT_CHAIN, *rule)
    return not was_cut


def _remove(az: str) -> int:
    """Delete every rule tagged for az; return how many."""
    lines = _listed(az)
    for line in lines:
        iptables(*shlex.split(line.replace(f"-A {CUT_CHAIN} ", f"-D {CUT_CHAIN} ", 1)))
    return len(lines)


def heal(topo: Topology, az: str | None = None) -> list[str]:
    """Remove the cut of az (or of every AZ); return the AZs healed."""
    if az is not None and az not in topo.azs:
        raise LabError(f"unknown AZ {az!r}; choose one of {', '.join(topo.azs)}")
    targets = [az] if az else cut_azs()
    return [name for name in targets if _remove(name)]


def stop(cli: docker.DockerClient, topo: Topology, name: str, timeout_s: int = 60) -> bool:
    """Stop a host like a VM shutdown (SIGRTMIN+3 makes systemd power off); False if already stopped."""
    host = topo.host(name)
    container = hosts.get_container(cli, host)
    if container is None:
        raise LabError(f"{name} has no container; run `python -m lab up`")
    if container.status != "running":
        return False
    container.stop(timeout=timeout_s)
    return True


def start(cli: docker.DockerClient, topo: Topology, name: str) -> bool:
    """Start a stopped host and wait until systemd and sshd answer again; False if it was running."""
    host = topo.host(name)
    container = hosts.get_container(cli, host)
    if container is None:
        raise LabError(f"{name} has no container; run `python -m lab up`")
    was_running = container.status == "running"
    if not was_running:
        container.start()
    hosts.wait_booted(cli, host)
    hosts.verify_ssh(host)
    return not was_running


def wait_stopped(cli: docker.DockerClient, name: str, topo: Topology, deadline_s: float = 30.0) -> None:
    """Poll until the container reports exited (docker stop returns when it is, this double-checks)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        container = hosts.get_container(cli, topo.host(name))
        if container is None or container.status != "running":
            return
        time.sleep(0.2)
    raise LabError(f"{name} is still running after {deadline_s:.0f}s")
