"""Lab hosts: systemd + sshd containers that behave like VMs, reached over real SSH.

Run flags follow shared/LAB-NOTES.md step 3 (--privileged fails on this machine) plus
--cap-drop SYS_TIME so nothing inside a host can step this machine's clock.
"""
from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterable
from typing import Any

import docker
import paramiko

from lab import state
from lab.engine import LABEL, LABEL_FILTER
from lab.errors import LabError
from lab.topology import Host, Topology

CAP_DROP = ["SYS_RESOURCE", "SYS_TIME"]
SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
SSH_USER = "admin"
RESTART_POLICY = "unless-stopped"
"""A host comes back from `systemctl reboot` like a VM: systemd as PID 1 in a container ends a
reboot with reboot(2), which in a PID namespace kills it with SIGHUP (exit 129; a poweroff or
halt: SIGINT, 130), and the engine starts it again with the same container, networks and
addresses, volumes and host keys.  `docker stop` (`python -m lab stop`) marks the container
manually stopped, which this policy respects even across an engine restart (until `start`/`up`),
so a drill's lost host stays lost.  A `systemctl poweroff` inside a host also comes back: no
restart policy tells exit 129 from 130 (lab/README.md, "Reboot")."""


def volume_name(host: Host) -> str:
    """Named volume for the host's /var/lib/docker (an engine inside a host needs a real fs)."""
    return f"{host.container}-docker"


def get_container(cli: docker.DockerClient, host: Host) -> Any | None:
    """The host's container, or None."""
    try:
        return cli.containers.get(host.container)
    except docker.errors.NotFound:
        return None


def create_container(cli: docker.DockerClient, topo: Topology, host: Host) -> None:
    """Create (not start) the host's container on its networks with fixed addresses."""
    api = cli.api
    try:
        cli.volumes.get(volume_name(host))
    except docker.errors.NotFound:
        cli.volumes.create(volume_name(host), labels=LABEL)
    host_config = api.create_host_config(
        cap_add=["ALL"], cap_drop=CAP_DROP, security_opt=SECURITY_OPT,
        binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
               volume_name(host): {"bind": "/var/lib/docker", "mode": "rw"}},
        tmpfs={"/run": "", "/run/lock": ""},
        restart_policy={"Name": RESTART_POLICY},
    )
    nets = list(host.addresses.items())
    # The host's own zone first: docker takes the default route from the first network joined.
    nets.sort(key=lambda item: item[0] != host.az)
    first_net, first_addr = nets[0]
    networking = api.create_networking_config(
        {topo.networks[first_net].docker_name: api.create_endpoint_config(ipv4_address=first_addr)})
    created = api.create_container(
        host.image, name=host.container, hostname=host.name, labels={**LABEL, "ooha.lab.host": host.name},
        host_config=host_config, networking_config=networking, stop_signal="SIGRTMIN+3",
        volumes=["/sys/fs/cgroup", "/var/lib/docker"])
    for net_name, addr in nets[1:]:
        api.connect_container_to_network(created["Id"], topo.networks[net_name].docker_name, ipv4_address=addr)


def ensure_restart_policy(container: Any) -> bool:
    """Give an existing host container the lab's restart policy (``docker update``, no restart);
    True when it changed.  Containers made before hosts could reboot had "no"."""
    current = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
    if current == RESTART_POLICY:
        return False
    container.update(restart_policy={"Name": RESTART_POLICY})
    container.reload()
    return True


def remove_host(cli: docker.DockerClient, host: Host) -> list[str]:
    """Remove what create_container made for the host, like a lost VM: the container (killed if
    running, with any anonymous volume) and its /var/lib/docker volume; return what was removed."""
    removed = []
    container = get_container(cli, host)
    if container is not None:
        container.remove(force=True, v=True)
        removed.append(f"container {host.container}")
    try:
        cli.volumes.get(volume_name(host)).remove(force=True)
        removed.append(f"volume {volume_name(host)}")
    except docker.errors.NotFound:
        pass
    return removed


def exec_out(container: Any, cmd: list[str], user: str = "root") -> tuple[int, str]:
    """Run a command in the container over docker exec (the out-of-band console)."""
    result = container.exec_run(cmd, user=user, demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace")


def wait_booted(cli: docker.DockerClient, host: Host, deadline_s: float = 120.0) -> None:
    """Poll until systemd reports running/degraded and ssh.service is active."""
    end = time.monotonic() + deadline_s
    last = "not started"
    while time.monotonic() < end:
        container = get_container(cli, host)
        if container is None:
            raise LabError(f"container {host.container} disappeared while booting; run `python -m lab up` again")
        container.reload()
        if container.status != "running":
            last = f"container is {container.status}"
        else:
            rc, out = exec_out(container, ["systemctl", "is-system-running"])
            last = f"systemd is {out.strip() or rc}"
            if out.strip() in ("running", "degraded"):
                rc, out = exec_out(container, ["systemctl", "is-active", "ssh.service"])
                if out.strip() == "active":
                    return
                last = f"ssh.service is {out.strip()}"
        time.sleep(0.5)
    raise LabError(f"{host.name} did not boot within {deadline_s:.0f}s ({last}); "
                   f"inspect with `docker exec {host.container} systemctl --failed`")


def authorize_key(cli: docker.DockerClient, host: Host, pubkey: str) -> None:
    """Install the lab's public key for admin (idempotent: rewrites the same single line)."""
    container = cli.containers.get(host.container)
    script = ('set -e; install -d -m 0700 -o admin -g admin /home/admin/.ssh; '
              'f=/home/admin/.ssh/authorized_keys; '
              'if [ "$(cat $f 2>/dev/null)" != "$1" ]; then printf "%s\\n" "$1" > $f; fi; '
              'chown admin:admin $f; chmod 0600 $f')
    rc, out = exec_out(container, ["sh", "-c", script, "sh", pubkey])
    if rc != 0:
        raise LabError(f"could not authorize the lab key on {host.name}: {out.strip()}")


def host_key(cli: docker.DockerClient, host: Host) -> str:
    """The host's own ed25519 public key, read over docker exec (not over the network)."""
    container = cli.containers.get(host.container)
    # Asked for up to 10 s: under load a docker exec has once come back empty from a host that
    # had its key (seen while several drills shared the engine); a missing key stays missing.
    deadline = time.monotonic() + 10.0
    while True:
        rc, out = exec_out(container, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
        parts = out.split()
        if rc == 0 and len(parts) >= 2 and parts[0] == "ssh-ed25519":
            return f"{parts[0]} {parts[1]}"
        if time.monotonic() >= deadline:
            raise LabError(f"{host.name} has no ed25519 host key ({out.strip()}); check ooha-ssh-hostkeys.service in it")
        time.sleep(1.0)


def stored_host_key(container: Any) -> str | None:
    """The container's ed25519 host key read from its filesystem (works while it is stopped)."""
    try:
        stream, _ = container.get_archive("/etc/ssh/ssh_host_ed25519_key.pub")
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        parts = handle.read().decode(errors="replace").split() if handle is not None else []
    return f"{parts[0]} {parts[1]}" if len(parts) >= 2 else None


def recorded_host_keys(topo: Topology) -> dict[str, str]:
    """{host name: key} from this state dir's known_hosts (empty when there is none)."""
    path = state.known_hosts_path()
    if not path.exists():
        return {}
    by_address = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            for address in parts[0].split(","):
                by_address[address] = f"{parts[1]} {parts[2]}"
    return {name: by_address[h.address] for name, h in topo.hosts.items() if h.address in by_address}


def write_known_hosts(lines: dict[str, str], topo: Topology) -> None:
    """Write known_hosts: every address of each host -> its key (order of the topology)."""
    out = []
    for host in topo.hosts.values():
        if host.name in lines:
            out.append(f"{','.join(host.addresses.values())} {lines[host.name]}")
    state.write_private(state.known_hosts_path(), "\n".join(out) + "\n")


_KNOWN_HOSTS_LOCK = threading.Lock()


def update_known_hosts(topo: Topology, keys: dict[str, str] | None = None, forget: Iterable[str] = ()) -> None:
    """Set some hosts' keys and drop others' lines, keeping every other recorded line.

    For `destroy` (its line goes with the host) and `recreate` (the new key replaces the old
    one); thread-safe, so hosts recreated in parallel each record their key when it is read.
    """
    with _KNOWN_HOSTS_LOCK:
        recorded = recorded_host_keys(topo)
        for name in forget:
            recorded.pop(name, None)
        recorded.update(keys or {})
        write_known_hosts(recorded, topo)


def ssh_client(address: str, user: str = SSH_USER, timeout: float = 10.0) -> paramiko.SSHClient:
    """An SSH connection with the lab key, the lab known_hosts and host key checking on."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(state.known_hosts_path()))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username=user, key_filename=str(state.ssh_key_path()), timeout=timeout,
                   banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False)
    return client


def run_and_close(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, str]:
    """Run one command on an open SSH client, close it; return (exit code, stdout+stderr).

    The one place that reads a command's output over SSH: the lab builder and the lab
    client (tests, benchmarks) both end here, so they read output the same way.
    """
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace") + stderr.read().decode(errors="replace")
        return stdout.channel.recv_exit_status(), out
    finally:
        client.close()


def ssh_run(address: str, command: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run one command over SSH as admin; return (exit code, stdout+stderr)."""
    return run_and_close(ssh_client(address), command, timeout)


def verify_ssh(host: Host, deadline_s: float = 30.0) -> None:
    """Log in over SSH with host key checking; poll briefly (sshd may still be binding)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            rc, out = ssh_run(host.address, "sudo -n true && hostname")
            if rc == 0 and out.strip() == host.name:
                return
            problem = f"`sudo -n true && hostname` gave rc={rc}: {out.strip()[:200]}"
        except (paramiko.SSHException, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > end:
            raise LabError(f"SSH to admin@{host.address} ({host.name}) fails: {problem}; "
                           f"check sshd with `docker exec {host.container} journalctl -u ssh`")
        time.sleep(0.5)


def lab_containers(cli: docker.DockerClient) -> list[Any]:
    """Every container labelled as the lab's (including ones not in the topology any more)."""
    return cli.containers.list(all=True, filters={"label": LABEL_FILTER})
