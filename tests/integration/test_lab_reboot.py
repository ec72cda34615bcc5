"""The lab's foundations for host patching (issue 12), through real SSH, apt and systemd:

- a real upgrade is available: the lab's own apt repository on svc1 (lab/aptrepo.py) serves
  ooha-lab-canary 1.0 and 1.1; with 1.0 installed, `apt-get -s upgrade` on a host offers 1.1
  (parsed by ooha.rollout.hostgates), and installing 1.1 asks for a reboot (/run/reboot-required);
- a host reboots like a VM: `systemctl reboot` over SSH, and the host comes back by itself
  (hosts.RESTART_POLICY) with the same host key, addresses and disk, a fresh /run, its services
  started by systemd, and the validation report for it OK.  The reboot time is printed.
"""
from __future__ import annotations

import socket
import time
from typing import Any

import paramiko
import pytest

from lab import aptrepo
from lab.client import connect, lab_cli, lab_lock, ssh, wait_for
from lab.reboot import BOOT_MARKER
from ooha.rollout import hostgates
from tests.integration.deploytools import deploy, explain, report_lines
from tests.integration.dstools import CONTAINER, healthy

pytestmark = pytest.mark.lab

DS_HOST = "ds3"
LBS = ("lb1", "lb2")
REBOOT_DEADLINE = 300
# A host in transition: sshd gone or not yet up, or the session cut by the shutdown.
IN_TRANSITION = (paramiko.SSHException, OSError, EOFError, socket.timeout)


def _sh(lab: dict[str, Any], host: str, cmd: str, timeout: float = 120) -> str:
    rc, out = ssh(lab, host, cmd, timeout=timeout)
    assert rc == 0, f"{host}: `{cmd}` gave rc={rc}: {out[-1500:]}"
    return out


def _host_key(lab: dict[str, Any], host: str) -> str:
    """The key the host presented (the connection itself already checked it against known_hosts)."""
    client = connect(lab, host)
    try:
        key = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        client.close()


def _flag(lab: dict[str, Any], host: str) -> hostgates.RebootRequired:
    out = _sh(lab, host, "if test -e /run/reboot-required; then echo yes; else echo no; fi; "
                         "cat /run/reboot-required.pkgs 2>/dev/null || true")
    first, _, rest = out.partition("\n")
    return hostgates.parse_reboot_required(first.strip() == "yes", rest)


def test_the_lab_repository_offers_an_upgrade_that_asks_for_a_reboot(converged: dict[str, Any]) -> None:
    lab, host = converged, DS_HOST
    with lab_lock():
        flag_before = _flag(lab, host).required
        lab_cli("canary", host, "--version", "1.0", timeout=300, check=True)
        try:
            simulation = hostgates.parse_apt_simulation(
                _sh(lab, host, "sudo env LC_ALL=C apt-get -s upgrade", timeout=300))
            canary = [p for p in simulation.upgrades if p.name == aptrepo.PACKAGE]
            assert [(p.current, p.candidate) for p in canary] == [("1.0", "1.1")], simulation
            assert "ooha-lab" in canary[0].origin
            listed = hostgates.parse_apt_upgradable(_sh(lab, host, "LC_ALL=C apt list --upgradable 2>/dev/null"))
            assert (aptrepo.PACKAGE, "1.0", "1.1") in [(p.name, p.current, p.candidate) for p in listed]
            # The hosts fetched it through the region's apt cache, as every other repository.
            log = _sh(lab, "svc1", "sudo cat /var/log/apt-cacher-ng/apt-cacher.log")
            assert f"/{aptrepo.URL_PATH}/" in log

            _sh(lab, host, f"sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --only-upgrade "
                           f"{aptrepo.PACKAGE}", timeout=300)
            assert _sh(lab, host, f"cat /usr/share/{aptrepo.PACKAGE}/version").strip() == "1.1"
            flag = _flag(lab, host)
            assert flag.required and aptrepo.PACKAGE in flag.packages
            reasons, _ = hostgates.reboot_reasons(flag, None)
            assert reasons and reasons[0].startswith("/run/reboot-required") and aptrepo.PACKAGE in reasons[0], reasons
            after = hostgates.parse_apt_simulation(_sh(lab, host, "sudo env LC_ALL=C apt-get -s upgrade", timeout=300))
            assert aptrepo.PACKAGE not in [p.name for p in after.pending]
        finally:
            lab_cli("canary", host, "--remove", timeout=300, check=True)
            if not flag_before:  # the flag this test made goes; one that was there stays owed
                ssh(lab, host, "sudo rm -f /run/reboot-required /run/reboot-required.pkgs")
    _, out = ssh(lab, host, f"dpkg-query -W {aptrepo.PACKAGE} 2>&1; test -e {aptrepo.SOURCE_FILE} && echo source")
    assert "no packages found" in out and "source" not in out, out


def _addresses(lab: dict[str, Any], host: str) -> list[str]:
    return sorted(_sh(lab, host, "ip -4 -o addr show scope global | awk '{print $4}'").split())


def _reboot_and_wait(lab: dict[str, Any], host: str, services_ok) -> float:
    """`sudo systemctl reboot` over SSH; poll until SSH answers (host key checked) in a NEW boot
    and ``services_ok()`` holds; return the seconds it took."""
    before = _sh(lab, host, BOOT_MARKER).strip()
    assert before
    t0 = time.monotonic()
    try:
        ssh(lab, host, "sudo systemctl reboot", timeout=20)
    except IN_TRANSITION:
        pass  # the shutdown may cut the session before the command's answer comes back

    def back() -> bool:
        rc, marker = ssh(lab, host, BOOT_MARKER, timeout=10)
        return rc == 0 and marker.strip() not in ("", before) and bool(services_ok())

    wait_for(f"{host} back from its reboot with its services", back, REBOOT_DEADLINE, interval=1.0,
             tolerate=IN_TRANSITION)
    return time.monotonic() - t0


def _report_ok(pyinfra_cli, host: str) -> None:
    result = deploy(pyinfra_cli, "deploys/validate.py", "--limit", host)
    lines = {layer: text for (name, layer), text in report_lines(result.stdout + result.stderr).items() if name == host}
    assert result.returncode == 0 and lines, explain(result)
    failed = {layer: text for layer, text in lines.items() if not text.startswith("OK")}
    assert not failed, explain(result)


def test_a_ds_host_reboots_like_a_vm(converged: dict[str, Any], pyinfra_cli) -> None:
    lab, host = converged, DS_HOST
    with lab_lock():
        key, addresses = _host_key(lab, host), _addresses(lab, host)
        _sh(lab, host, "sudo touch /var/lib/ooha-reboot-test /run/ooha-reboot-test")

        def services_ok() -> bool:
            rc, out = ssh(lab, host, f"systemctl is-active docker.service && "
                                     f"sudo docker inspect -f '{{{{.State.Running}}}}' {CONTAINER}")
            return rc == 0 and out.split()[-1] == "true" and healthy(lab, host)

        took = _reboot_and_wait(lab, host, services_ok)
        try:
            assert _host_key(lab, host) == key
            assert _addresses(lab, host) == addresses
            # The disk survived, /run is a fresh tmpfs: as a VM's reboot.
            assert _sh(lab, host, "ls /var/lib/ooha-reboot-test; test ! -e /run/ooha-reboot-test && echo clean").split() == [
                "/var/lib/ooha-reboot-test", "clean"]
            state = _sh(lab, host, "systemctl is-system-running || true").strip()
            assert state in ("running", "degraded"), state
            _report_ok(pyinfra_cli, host)
        finally:
            ssh(lab, host, "sudo rm -f /var/lib/ooha-reboot-test")
    print(f"{host} reboot (systemctl reboot -> SSH, docker and the Document Server healthy): {took:.1f} s")


def test_the_load_balancer_without_the_vip_reboots_and_stays_backup(converged: dict[str, Any], pyinfra_cli) -> None:
    lab = converged
    vip = lab["front"]["vip"].split("/")[0]
    with lab_lock():
        holders = [lb for lb in LBS if vip in _sh(lab, lb, "ip -4 -o addr show")]
        assert len(holders) == 1, holders
        host = next(lb for lb in LBS if lb not in holders)
        key, addresses = _host_key(lab, host), _addresses(lab, host)
        assert len(addresses) == 2, addresses  # its AZ address and its front address

        def services_ok() -> bool:
            rc, _ = ssh(lab, host, "systemctl is-active keepalived.service nginx.service")
            return rc == 0

        took = _reboot_and_wait(lab, host, services_ok)
        assert _host_key(lab, host) == key
        assert _addresses(lab, host) == addresses  # the front network's address came back too
        # The peer kept the address: the reboot of the backup moved nothing.
        assert vip in _sh(lab, holders[0], "ip -4 -o addr show")
        assert vip not in _sh(lab, host, "ip -4 -o addr show")
        _report_ok(pyinfra_cli, host)
    print(f"{host} reboot (systemctl reboot -> SSH, keepalived and nginx active): {took:.1f} s")
