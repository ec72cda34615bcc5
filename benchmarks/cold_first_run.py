"""Time the main job on hosts that have never seen it, without touching the lab's hosts.

    .venv/bin/python benchmarks/cold_first_run.py

Needs a running lab (its networks, svc1's apt cache and NTP, its key and secrets).
Starts one throwaway host per lab target from the lab's host image, on the same AZ
networks at address +200 (198.18.1.11 -> 198.18.1.211), named ``ooha-bench-<name>``
and labelled ``ooha.bench=1``; runs ``deploys/ha.py`` on them twice (cold, then the
no-op rerun) and removes them.  Prints wall-clock seconds and changed operations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from benchmarks.deploy_times import ROW
from inventories.labstate import lab_dir, load_lab_state

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
IMAGE = "ooha-lab/host:bookworm"
LABEL = {"ooha.bench": "1"}


def bench_address(address: str) -> str:
    """The throwaway twin's address: same subnet, last octet + 200."""
    head, last = address.rsplit(".", 1)
    return f"{head}.{int(last) + 200}"


def start_twin(cli: docker.DockerClient, host: dict[str, Any]) -> Any:
    """Create and start a host like the lab's (same image and run flags, no docker volume)."""
    api = cli.api
    host_config = api.create_host_config(
        cap_add=["ALL"], cap_drop=["SYS_RESOURCE", "SYS_TIME"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        tmpfs={"/run": "", "/run/lock": ""},
    )
    networking = api.create_networking_config(
        {f"ooha-{host['az']}": api.create_endpoint_config(ipv4_address=bench_address(host["address"]))}
    )
    created = api.create_container(
        IMAGE, name=f"ooha-bench-{host['name']}", hostname=host["name"], labels=LABEL,
        host_config=host_config, networking_config=networking, stop_signal="SIGRTMIN+3",
    )
    api.start(created["Id"])
    return cli.containers.get(created["Id"])


def wait_ready(container: Any, deadline_s: float = 120) -> str:
    """Poll until sshd runs and the host key exists; return the ed25519 public key."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        rc, out = container.exec_run(["sh", "-c", "systemctl is-active ssh && cat /etc/ssh/ssh_host_ed25519_key.pub"])
        lines = (out or b"").decode().split("\n")
        if rc == 0 and len(lines) > 1 and lines[1].startswith("ssh-ed25519"):
            return " ".join(lines[1].split()[:2])
        time.sleep(0.5)
    raise RuntimeError(f"{container.name} did not boot with sshd within {deadline_s}s")


def authorize(container: Any, pubkey: str) -> None:
    script = ('install -d -m 0700 -o admin -g admin /home/admin/.ssh && '
              'printf "%s\\n" "$1" > /home/admin/.ssh/authorized_keys && '
              'chown admin:admin /home/admin/.ssh/authorized_keys && chmod 0600 /home/admin/.ssh/authorized_keys')
    rc, out = container.exec_run(["sh", "-c", script, "sh", pubkey])
    if rc != 0:
        raise RuntimeError(f"authorize key on {container.name}: {out.decode()}")


def run(inventory: Path) -> tuple[float, int, int]:
    started = time.monotonic()
    result = subprocess.run([PYINFRA, "-y", str(inventory), "deploys/ha.py"], cwd=REPO, capture_output=True,
                            text=True, timeout=1800, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYINFRA_PROGRESS": "off"})
    seconds = time.monotonic() - started
    table = (result.stdout + result.stderr).split("--> Results:", 1)[-1]
    changed = sum(1 for line in table.splitlines()
                  if (m := ROW.match(line)) and m["success"] != "-" and m["op"].strip() not in ("Operation", "Grand total"))
    if result.returncode != 0:
        sys.stderr.write((result.stdout + result.stderr)[-3000:])
    return seconds, result.returncode, changed


def main() -> int:
    state = load_lab_state()
    targets = [h for h in state["hosts"] if "services" not in h["roles"]]
    cli = docker.from_env(version="auto")
    pubkey = Path(state["ssh_key"] + ".pub").read_text().strip()
    containers = []
    with tempfile.TemporaryDirectory(prefix="ooha-bench-") as tmp:
        try:
            boot_started = time.monotonic()
            containers = [start_twin(cli, h) for h in targets]
            known = []
            for host, container in zip(targets, containers):
                known.append(f"{bench_address(host['address'])} {wait_ready(container)}")
                authorize(container, pubkey)
            boot = time.monotonic() - boot_started
            Path(tmp, "known_hosts").write_text("\n".join(known) + "\n")
            twin_state = {**state, "known_hosts": str(Path(tmp, "known_hosts")),
                          "hosts": [{**h, "address": bench_address(h["address"])} for h in targets]}
            Path(tmp, "state.json").write_text(json.dumps(twin_state))
            inventory = Path(tmp, "bench_inventory.py")
            inventory.write_text(
                "from ooha.preflight import check_inventory_groups\n"
                "from inventories.labstate import load_lab_groups\n"
                f"from pathlib import Path\n_g = load_lab_groups(Path({tmp!r}))\n"
                "all = _g['all']\nlb = _g['lb']\ndocs = _g['docs']\npostgres = _g['postgres']\n"
                "etcd = _g['etcd']\nredis = _g['redis']\nrabbitmq = _g['rabbitmq']\n"
                "check_inventory_groups(globals())\n"
            )
            print(f"{len(containers)} fresh hosts booted in {boot:.1f}s (lab dir {lab_dir()})")
            print(f"{'run':<14} {'seconds':>8} {'exit':>5} {'changed ops':>12}")
            failed = False
            for label in ("cold first", "no-op rerun"):
                seconds, code, changed = run(inventory)
                print(f"{label:<14} {seconds:>8.1f} {code:>5} {changed:>12}", flush=True)
                failed = failed or code != 0
            return 1 if failed else 0
        finally:
            for container in containers:
                container.remove(force=True, v=True)


if __name__ == "__main__":
    sys.exit(main())
