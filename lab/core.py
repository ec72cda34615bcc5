"""The lab's commands: up, down, status, build (the CLI in lab/cli.py is a thin shell over these)."""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import docker

from lab import engine, hosts, state
from lab.engine import LABEL_FILTER
from lab.registry import DS_REPOSITORY, registry_tags
from lab.topology import Host, Topology

Say = Callable[[str], None]


def _parallel(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Run func over items in threads (booting/SSH checks are I/O bound); re-raise the first error."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(func, items))


def build(say: Say, only_missing: bool = False) -> docker.DockerClient:
    """Ensure the engine and build the lab images (only missing ones for `up`)."""
    cli = engine.ensure_engine()
    t0 = time.monotonic()
    built = engine.build_images(cli, only_missing=only_missing)
    if built:
        say(f"built {', '.join(built)} ({time.monotonic() - t0:.1f}s)")
    return cli


def foreign_containers(cli: docker.DockerClient, topo: Topology) -> list[str]:
    """Lab containers this state dir did not make: their host key is not in our known_hosts.

    Another checkout (a CI clone, a colleague's tree) made them with its own SSH key,
    secrets and CA; adopting them would deploy our secrets over services configured
    with theirs.  A host key is the container's identity and survives stops.
    """
    recorded = hosts.recorded_host_keys(topo)
    # A host `recreate` left half made (its new key not recorded yet) is still ours.
    ours_unrecorded = state.destroyed_hosts()
    foreign = []
    for container in cli.containers.list(all=True, filters={"label": LABEL_FILTER}):
        name = container.labels.get("ooha.lab.host", "")
        if name in topo.hosts and name in ours_unrecorded:
            continue
        if name not in topo.hosts or recorded.get(name) != hosts.stored_host_key(container):
            foreign.append(container.name)
    return foreign


FRONT_NETWORK = "front"
FRONT_VIP_OFFSET = 100
"""The load balancers' floating address is the front network's .100 (lab: 198.18.10.100)."""


def front_vip(topo: Topology) -> str | None:
    """The lab's floating address as ``address/prefix`` (None without a front network)."""
    net = topo.networks.get(FRONT_NETWORK)
    if net is None:
        return None
    return f"{net.subnet.network_address + FRONT_VIP_OFFSET}/{net.subnet.prefixlen}"


def front_addresses(topo: Topology) -> list[str]:
    """The VIP then each host's front address: the IP SANs of the LBs' certificate."""
    vip = front_vip(topo)
    if vip is None:
        return []
    return [vip.split("/")[0]] + [h.addresses[FRONT_NETWORK] for h in topo.hosts.values() if FRONT_NETWORK in h.addresses]


def ensure_host(cli: docker.DockerClient, topo: Topology, host: Host, say: Say) -> None:
    """Create the host's container if it has none (or give an old one the restart policy that
    makes a reboot inside come back) and start it if it is not running.

    The per-host first step of `up` (every host) and `recreate` (a blank host).
    """
    container = hosts.get_container(cli, host)
    if container is None:
        hosts.create_container(cli, topo, host)
        container = hosts.get_container(cli, host)
        say(f"created {host.container}")
    elif hosts.ensure_restart_policy(container):
        say(f"{host.container}: restart policy {hosts.RESTART_POLICY} (a `systemctl reboot` inside comes back)")
    if container.status != "running":
        if container.status != "created":
            say(f"starting {host.container} (it was {container.status}; `up` starts stopped hosts)")
        container.start()


def admit_host(cli: docker.DockerClient, host: Host, pubkey: str) -> str:
    """Wait for systemd and sshd, authorize the lab's deploy key; return the host key read over docker exec.

    The per-host second step of `up` and `recreate`; the caller writes the key to
    known_hosts, then checks SSH with host-key checking (hosts.verify_ssh).
    """
    hosts.wait_booted(cli, host)
    hosts.authorize_key(cli, host, pubkey)
    return hosts.host_key(cli, host)


def up(topo: Topology, say: Say) -> dict[str, Any]:
    """Bring the lab up, reusing what this state dir made; return the status dict.

    A lab made from another state dir is replaced (down, then up), never adopted.
    """
    t0 = time.monotonic()
    cli = build(say, only_missing=True)
    state.ensure_state_dir()
    foreign = foreign_containers(cli, topo)
    if foreign:
        say(f"replacing a lab this state dir ({state.state_dir()}) did not make "
            f"({', '.join(sorted(foreign))}): its keys and secrets are elsewhere")
        down(say)
    pubkey = state.ensure_ssh_key()
    secrets = state.ensure_secrets()
    engine.ensure_networks(cli, topo)
    engine.ensure_routing()
    for host in topo.hosts.values():
        ensure_host(cli, topo, host, say)
    all_hosts = list(topo.hosts.values())
    keys = dict(zip(topo.hosts, _parallel(lambda h: admit_host(cli, h, pubkey), all_hosts)))
    hosts.write_known_hosts(keys, topo)
    state.set_destroyed(topo.hosts, destroyed=False)
    _parallel(hosts.verify_ssh, all_hosts)
    say(f"{len(topo.hosts)} hosts answer SSH with host key checking ({time.monotonic() - t0:.1f}s)")
    if front_addresses(topo):
        from lab import ca
        ca.ensure_front_cert(front_addresses(topo))
    svc = [h for h in topo.hosts.values() if "services" in h.roles]
    if svc:
        from lab import services
        services.configure(cli, topo, svc[0], secrets, say)
        services.push_standins(cli, svc[0], secrets, say)
    status_dict = status(topo, cli)
    say(f"lab up in {time.monotonic() - t0:.1f}s; state in {state.state_json_path()}")
    return status_dict


def status(topo: Topology, cli: docker.DockerClient | None = None) -> dict[str, Any]:
    """The contract's status dict (docs/architecture.md); also written to .lab/state.json."""
    cli = cli or engine.client()
    sdir = state.state_dir()
    svc = next((h for h in topo.hosts.values() if "services" in h.roles), None)
    svc_addr = svc.address if svc else None
    registry = f"{svc_addr}:5000" if svc_addr else None
    result: dict[str, Any] = {
        "name": topo.name,
        "state_dir": str(sdir),
        "ca_cert": str(state.ca_dir() / "ca.crt"),
        "ssh_key": str(state.ssh_key_path()),
        "known_hosts": str(state.known_hosts_path()),
        "secrets_file": str(state.secrets_path()),
        "services": {
            "registry": registry,
            "s3_endpoint": f"https://{svc_addr}:9000" if svc_addr else None,
            "s3_bucket": "ooha-backups",
            "s3_region": "us-east-1",
            "apt_proxy": f"http://{svc_addr}:3142" if svc_addr else None,
            "ntp_server": svc_addr,
        },
        "images": {"documentserver": {
            "repository": f"{registry}/{DS_REPOSITORY}" if registry else None,
            "tags": registry_tags(registry, state.load_secrets()) if registry else []}},
        "hosts": [],
    }
    if front_vip(topo):
        tls = sdir / "tls"
        result["front"] = {"vip": front_vip(topo), "tls_certificate": str(tls / "front.crt"),
                           "tls_key": str(tls / "front.key")}
    destroyed = state.destroyed_hosts()
    for host in topo.hosts.values():
        container = hosts.get_container(cli, host)
        result["hosts"].append({
            "name": host.name, "container": host.container, "az": host.az, "address": host.address,
            "addresses": dict(host.addresses), "roles": list(host.roles), "ssh_user": hosts.SSH_USER,
            "ssh_key": str(state.ssh_key_path()),
            "state": container.status if container is not None else (
                "destroyed" if host.name in destroyed else "missing"),
        })
    if sdir.exists():
        state.write_private(state.state_json_path(), json.dumps(result, indent=2) + "\n")
    return result


def status_table(result: dict[str, Any], cuts: list[str]) -> str:
    """A readable table of the status dict."""
    lines = [f"{'HOST':<7} {'AZ':<7} {'ADDRESS':<14} {'OTHER ADDRESSES':<22} {'ROLES':<30} STATE"]
    for h in result["hosts"]:
        others = ",".join(a for n, a in h["addresses"].items() if a != h["address"])
        lines.append(f"{h['name']:<7} {h['az']:<7} {h['address']:<14} {others:<22} {','.join(h['roles']):<30} {h['state']}")
    s = result["services"]
    lines += ["", f"registry {s['registry']}  s3 {s['s3_endpoint']} (bucket {s['s3_bucket']})  "
                  f"apt proxy {s['apt_proxy']}  ntp {s['ntp_server']}",
              f"stand-in tags: {', '.join(result['images']['documentserver']['tags']) or 'none'}",
              f"cut AZs: {', '.join(cuts) or 'none'}",
              f"ssh: ssh -i {result['ssh_key']} -o UserKnownHostsFile={result['known_hosts']} admin@<address>"]
    return "\n".join(lines)


def down(say: Say, purge: bool = False) -> None:
    """Remove every lab container, network, volume and iptables rule; keep images (and .lab/ unless purge)."""
    cli = engine.client()
    containers = cli.containers.list(all=True, filters={"label": LABEL_FILTER})
    _parallel(lambda c: c.remove(force=True, v=False), containers)
    for net in cli.networks.list(filters={"label": LABEL_FILTER}):
        net.remove()
    volumes = cli.volumes.list(filters={"label": LABEL_FILTER})
    for vol in volumes:
        vol.remove(force=True)
    engine.remove_routing()
    state.set_destroyed(state.destroyed_hosts(), destroyed=False)
    say(f"removed {len(containers)} containers, the lab networks, {len(volumes)} volumes and the lab's iptables rules")
    if purge and state.state_dir().exists():
        shutil.rmtree(state.state_dir())
        say(f"deleted {state.state_dir()}")
