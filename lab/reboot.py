"""`python -m lab reboot HOST [--wait]`: an operator's `systemctl reboot` inside a host.

A lab host is a container whose PID 1 is systemd.  `systemctl reboot` inside it runs the
whole shutdown (units stop in order, the inner Docker engine stops its containers), then
systemd-shutdown calls reboot(2), which in a PID namespace kills PID 1 with SIGHUP: the
container exits with 129, and its restart policy (hosts.RESTART_POLICY) makes the engine start
the same container again: same name, addresses on every network (front addresses too), its
volumes and disk (host keys, /etc, /var), a fresh tmpfs /run (so /run/reboot-required is gone,
as on a VM), and systemd starts the enabled units again.  Nothing outside the container changes:
the cut rules are by address, in this machine's OOHA-CUT chain, and stay in force.

What tells that a host really rebooted: systemd's ``UserspaceTimestamp`` (the time PID 1
started; `systemctl show -p UserspaceTimestamp --value`, the same on a VM), NOT
/proc/sys/kernel/random/boot_id nor /proc/uptime, which belong to this machine's kernel and
do not change when a container restarts.
"""
from __future__ import annotations

import time
from typing import Any

import docker

from lab import hosts
from lab.errors import LabError
from lab.topology import Topology

BOOT_MARKER = "systemctl show --value -p UserspaceTimestamp"
"""A shell command printing when this boot's PID 1 started: changes with every reboot."""
REBOOT_EXIT_CODE = 129
"""128 + SIGHUP: what the engine records for a container whose systemd rebooted."""
EXITED_GRACE_S = 10.0
"""How long a container may stay exited before the wait says it will not come back (the
engine's restart policy starts it within a second; its back-off grows only for hosts that ran
less than 10 s)."""


def _state(container: Any) -> dict[str, Any]:
    container.reload()
    return container.attrs.get("State") or {}


def boot_marker(container: Any) -> str:
    """This boot's marker read over docker exec (the console), "" when systemd does not answer."""
    rc, out = hosts.exec_out(container, ["sh", "-c", BOOT_MARKER])
    return out.strip() if rc == 0 else ""


def wait_restarted(cli: docker.DockerClient, topo: Topology, name: str, started_before: str,
                   deadline_s: float = 120.0) -> None:
    """Poll until the engine has started the host's container again (its StartedAt moved on).

    A container that stays exited for EXITED_GRACE_S (no restart policy, or it was stopped meanwhile)
    is refused at once with its exit code, not waited for until the deadline.
    """
    host = topo.host(name)
    end = time.monotonic() + deadline_s
    exited_since: float | None = None
    last = "still running the shutdown"
    while time.monotonic() < end:
        container = hosts.get_container(cli, host)
        if container is None:
            raise LabError(f"{name}'s container disappeared during its reboot")
        state = _state(container)
        if state.get("Running") and state.get("StartedAt") != started_before:
            return
        if not state.get("Running"):
            exited_since = exited_since or time.monotonic()
            last = f"exited with {state.get('ExitCode')}"
            if time.monotonic() - exited_since > EXITED_GRACE_S:
                policy = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
                raise LabError(f"{name} {last} and was not started again (restart policy {policy or 'no'}); "
                               f"`python -m lab start {name}` boots it")
        time.sleep(0.2)
    raise LabError(f"{name} did not come back within {deadline_s:.0f}s ({last})")


def reboot(cli: docker.DockerClient, topo: Topology, name: str, wait: bool = True,
           deadline_s: float = 300.0) -> float | None:
    """Run `systemctl reboot` inside the host; with ``wait``, return the seconds until it booted
    again (systemd running or degraded, sshd active) and answers SSH with its recorded host key.

    Refused when the host is not running (`lab start` is the way back from `lab stop`).
    """
    host = topo.host(name)
    container = hosts.get_container(cli, host)
    if container is None:
        raise LabError(f"{name} has no container; run `python -m lab up`")
    if container.status != "running":
        raise LabError(f"{name} is {container.status}, not running; `python -m lab start {name}` boots it")
    hosts.ensure_restart_policy(container)
    before = _state(container).get("StartedAt", "")
    t0 = time.monotonic()
    try:
        rc, out = hosts.exec_out(container, ["systemctl", "reboot"])
    except docker.errors.APIError:
        rc, out = 0, ""  # the container went down under the exec: the reboot is under way
    if rc != 0:
        raise LabError(f"`systemctl reboot` on {name} failed (rc={rc}): {out.strip()[-200:]}")
    if not wait:
        return None
    wait_restarted(cli, topo, name, before, deadline_s)
    hosts.wait_booted(cli, host, max(10.0, deadline_s - (time.monotonic() - t0)))
    hosts.verify_ssh(host)
    return time.monotonic() - t0
