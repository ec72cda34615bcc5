"""This machine's Docker engine, the lab's images, networks and routing rules.

The engine is this machine's own dockerd (no init system runs it here), so the lab
starts it itself when `docker info` does not answer, and reuses one that does.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
from docker.types import IPAMConfig, IPAMPool

from lab.errors import LabError
from lab.topology import LAB_RANGE, Topology

LABEL = {"ooha.lab": "1"}
LABEL_FILTER = "ooha.lab=1"
LOG_DIR = Path("/var/log/ooha-lab")
DOCKERD_ARGS = ["--bip", "198.18.0.1/24", "--default-address-pool", "base=198.18.128.0/17,size=24"]
BASE_IMAGE = "ooha-lab/base:bookworm"
HOST_IMAGE = "ooha-lab/host:bookworm"
SERVICES_IMAGE = "ooha-lab/services:bookworm"
IMAGES_DIR = Path(__file__).with_name("images")
#: Built in this order: each one is FROM the previous.
BUILT_IMAGES = [(HOST_IMAGE, IMAGES_DIR / "host"), (SERVICES_IMAGE, IMAGES_DIR / "services")]
CUT_CHAIN = "OOHA-CUT"
LAB_CIDR = str(LAB_RANGE)
# Lab-to-lab traffic is routed by this machine, accepted and never masqueraded (peers see real sources).
ACCEPT_RULE = ["-s", LAB_CIDR, "-d", LAB_CIDR, "-m", "comment", "--comment", "ooha-lab", "-j", "ACCEPT"]
NAT_RULE = ["-s", LAB_CIDR, "-d", LAB_CIDR, "-m", "comment", "--comment", "ooha-lab", "-j", "RETURN"]


def _engine_answers() -> bool:
    """True when a Docker engine answers the CLI."""
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _install_docker() -> None:
    """Install Debian's docker.io (dockerd + CLI) when this machine has no engine at all."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "docker.io", "iptables"]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise LabError(f"`{' '.join(cmd)}` failed ({' '.join(tail)}); fix apt access to Debian's archive and retry")


def ensure_engine(deadline_s: float = 90.0) -> docker.DockerClient:
    """Reuse a running engine, or install and start dockerd with the lab's address ranges."""
    if not _engine_answers():
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            _install_docker()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / "dockerd.log", "ab")
        subprocess.Popen(["setsid", "dockerd", *DOCKERD_ARGS], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + deadline_s
        while not _engine_answers():
            if time.monotonic() > end:
                raise LabError(f"dockerd did not answer `docker info` within {deadline_s:.0f}s; read {LOG_DIR}/dockerd.log")
            time.sleep(0.5)
    return docker.from_env(version="auto")


def client() -> docker.DockerClient:
    """A client for an engine that must already run (status, stop, start, cut...)."""
    if not _engine_answers():
        raise LabError("no Docker engine answers `docker info`; run `python -m lab up` (it starts one)")
    return docker.from_env(version="auto")


def image_exists(cli: docker.DockerClient, name: str) -> bool:
    """True when the engine has the image name:tag."""
    try:
        cli.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_base_image(cli: docker.DockerClient) -> None:
    """Recreate ooha-lab/base:bookworm with debootstrap if missing (no registry to pull from)."""
    if image_exists(cli, BASE_IMAGE):
        return
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "debootstrap"], check=False, capture_output=True)
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is missing and could not be installed; run `apt-get install -y debootstrap`")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ooha-base-") as root, open(LOG_DIR / "debootstrap.log", "ab") as log:
        step = subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
                               root, "http://deb.debian.org/debian"], stdout=log, stderr=log)
        if step.returncode != 0:
            raise LabError(f"debootstrap of bookworm failed; read {LOG_DIR}/debootstrap.log")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, stdout=log, stderr=log)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise LabError(f"`docker import` of the base image failed; read {LOG_DIR}/debootstrap.log")


def build_image(name: str, context: Path) -> None:
    """`docker build` one lab image (cached layers make a rebuild of an unchanged image quick)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"build-{name.split('/')[-1].split(':')[0]}.log"
    with open(log_path, "wb") as log:
        result = subprocess.run(["docker", "build", "-t", name, str(context)], stdout=log, stderr=log,
                                env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if result.returncode != 0:
        raise LabError(f"building {name} from {context} failed; read {log_path}")


WHEELS_DIR = Path("/var/cache/ooha-lab/wheels")
#: Python packages an image installs from wheels fetched here: image context dir -> requirements.
IMAGE_WHEELS = {"services": ["moto[server]>=5,<6"]}


def _fetch_wheels(image_dir: str, requirements: list[str]) -> Path:
    """Download wheels with this machine's pip (its trust store reaches PyPI; containers' does not)."""
    dest = WHEELS_DIR / image_dir
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / ".requirements"
    if marker.exists() and marker.read_text() == "\n".join(requirements):
        return dest
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                             "--dest", str(dest), *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise LabError(f"pip download of {' '.join(requirements)} failed ({tail[0]}); check access to PyPI")
    marker.write_text("\n".join(requirements))
    return dest


def build_images(cli: docker.DockerClient, only_missing: bool = False) -> list[str]:
    """Base image (if missing), then the host and services images; return the images built.

    only_missing (what `up` uses) skips images that exist, so a warm `up` costs nothing;
    `python -m lab build` rebuilds them all (docker's layer cache keeps that quick).
    """
    ensure_base_image(cli)
    built = []
    for name, context in BUILT_IMAGES:
        if only_missing and image_exists(cli, name):
            continue
        built.append(name)
        wanted = IMAGE_WHEELS.get(context.name)
        if not wanted:
            build_image(name, context)
            continue
        wheels = _fetch_wheels(context.name, wanted)
        with tempfile.TemporaryDirectory(prefix=f"ooha-{context.name}-") as tmp:
            staged = Path(tmp) / context.name
            shutil.copytree(context, staged)
            shutil.copytree(wheels, staged / "wheels")
            build_image(name, staged)
    return built


def ensure_networks(cli: docker.DockerClient, topo: Topology) -> None:
    """Create the lab's bridge networks with their contract subnets; refuse a clash."""
    existing = {n.name: n for n in cli.networks.list(filters={"name": "ooha-"})}
    for net in topo.networks.values():
        found = existing.get(net.docker_name)
        if found is not None:
            configs = (found.attrs.get("IPAM") or {}).get("Config") or [{}]
            if configs[0].get("Subnet") != str(net.subnet):
                raise LabError(f"network {net.docker_name} exists with subnet {configs[0].get('Subnet')} instead of "
                               f"{net.subnet}; run `python -m lab down` and `up` again")
            continue
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(net.subnet), gateway=str(net.gateway))])
        try:
            cli.networks.create(net.docker_name, driver="bridge", ipam=ipam, labels=LABEL,
                                options={"com.docker.network.bridge.name": net.docker_name})
        except docker.errors.APIError as exc:
            raise LabError(f"cannot create network {net.docker_name} ({net.subnet}): {exc.explanation}; "
                           f"remove whatever uses that subnet or run `python -m lab down`") from None


def iptables(*args: str, table: str = "filter", check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run iptables (waiting for the xtables lock, which dockerd also takes)."""
    result = subprocess.run(["iptables", "-w", "10", "-t", table, *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(f"`iptables -t {table} {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _ensure_rule(table: str, chain: str, rule: list[str], position: int) -> None:
    """Insert rule at position unless an identical one exists (checked with `iptables -C`)."""
    if iptables("-C", chain, *rule, table=table, check=False).returncode != 0:
        iptables("-I", chain, str(position), *rule, table=table)


def ensure_routing() -> None:
    """Route lab-to-lab between the bridges with real source addresses, and hook the cut chain.

    DOCKER-USER runs before docker's own isolation between bridge networks, so accepting
    198.18.0.0/15 <-> 198.18.0.0/15 there lets the outer machine route between AZs; the cut
    chain is jumped first so a cut wins over that accept. In nat POSTROUTING a RETURN before
    docker's MASQUERADE keeps lab-to-lab sources unmasqueraded.
    """
    br = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if br.exists() and br.read_text().strip() != "1":
        raise LabError("bridged traffic bypasses iptables (net.bridge.bridge-nf-call-iptables=0); "
                       "run `sysctl -w net.bridge.bridge-nf-call-iptables=1`")
    if iptables("-L", "DOCKER-USER", "-n", check=False).returncode != 0:
        raise LabError("iptables chain DOCKER-USER is missing; restart dockerd (it creates it) and retry")
    if iptables("-L", CUT_CHAIN, "-n", check=False).returncode != 0:
        iptables("-N", CUT_CHAIN)
    _ensure_rule("filter", "DOCKER-USER", ["-j", CUT_CHAIN], 1)
    _ensure_rule("filter", "DOCKER-USER", ACCEPT_RULE, 2)
    _ensure_rule("nat", "POSTROUTING", NAT_RULE, 1)


def remove_routing() -> None:
    """Delete the lab's iptables rules and the cut chain (for `down`)."""
    for table, chain, rule in (("filter", "DOCKER-USER", ["-j", CUT_CHAIN]),
                               ("filter", "DOCKER-USER", ACCEPT_RULE),
                               ("nat", "POSTROUTING", NAT_RULE)):
        while iptables("-C", chain, *rule, table=table, check=False).returncode == 0:
            iptables("-D", chain, *rule, table=table)
    if iptables("-L", CUT_CHAIN, "-n", check=False).returncode == 0:
        iptables("-F", CUT_CHAIN)
        iptables("-X", CUT_CHAIN)
