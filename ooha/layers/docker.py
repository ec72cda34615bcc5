"""Docker engine layer: the engine the Document Server container runs on (group docs).

What it converges on a Document Server host, in this order:

1. the package source: Debian's ``docker.io`` (20.10 on bookworm, default) or Docker's
   own apt repository (``docker_source: "docker"``: key in /etc/apt/keyrings/docker.asc,
   a deb822 sources entry, ``docker-ce``);
2. ``/etc/docker/daemon.json``, written **before** the package is installed, so the
   daemon's very first start already uses the configured bridge address: dockerd's
   default ``172.17.0.1/16`` (and its ``172.17-31.x``/``192.168.x`` pools) clash with many
   corporate networks, so ``docker_bip`` has no default and an unset one stops the run
   before any host is touched;
3. the private registry's CA in ``/etc/docker/certs.d/<registry>/ca.crt`` (read per
   connection by the engine: no restart);
4. the engine, running and enabled; a changed daemon.json restarts it.  With
   ``live-restore`` on, containers keep running across that restart; when the change
   turns live-restore on, the daemon is first reloaded (SIGHUP: live-restore is a
   reloadable option) so even that restart keeps them;
5. root logged in to the private registry with ``registry_username``/``registry_password``
   from the secrets file.  Why not pyinfra's ``docker.login``: it puts the password in the
   remote ``sh -c`` command line (visible in the process list) and skips any registry that
   has an entry, so a rotated password would never be applied.  Here the password goes to
   a root-only file (private_put) and from there to ``docker login --password-stdin``; the
   ``RegistryLogin`` fact compares the stored auth with the file on the host, printing
   nothing but a verdict, and login runs only when they differ.
"""

from __future__ import annotations

import ipaddress
import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebArch
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from ooha.ops.private_files import private_put
from ooha.report import CheckResult, poll
from ooha.settings import Settings, data_value
from ooha.settings import secret as _secret
from ooha.facts.docker import DAEMON_JSON, DaemonConfigPending, DockerEngine, RegistryLogin

SERVICE = "docker.service"
CERTS_DIR = "/etc/docker/certs.d"
REGISTRY_PASSWORD_FILE = "/root/.docker/onlyoffice-ha-registry-password"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCES_NAME = "docker"
SOURCES = ("debian", "docker")
PACKAGES = {
    "debian": ["docker.io"],
    "docker": ["docker-ce", "docker-ce-cli", "containerd.io"],
}
_LOG_SIZE = re.compile(r"^[1-9][0-9]*[kmg]$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")

DOCKER_DEFAULTS: dict[str, Any] = {
    # "debian": Debian's docker.io (20.10 on bookworm). "docker": Docker's apt repository
    # (docker-ce; newer engine, Docker's release cadence, needs download.docker.com).
    "docker_source": "debian",
    # Docker's repository and its signing key (only for docker_source "docker").
    "docker_repo_url": "https://download.docker.com/linux/debian",
    "docker_repo_key_url": "https://download.docker.com/linux/debian/gpg",
    "docker_repo_channel": "stable",
    # Packages to install; None: PACKAGES[docker_source].
    "docker_packages": None,
    # The default bridge's gateway address and prefix, e.g. "10.200.0.1/24". No default on
    # purpose: dockerd's own (172.17.0.1/16) silently clashes with many corporate networks.
    "docker_bip": None,
    # Pools user-defined networks are cut from, e.g. [{"base": "10.201.0.0/16", "size": 24}].
    # None or []: dockerd's defaults (172.17-31.0.0/16, 192.168.0.0/16), an explicit choice.
    "docker_address_pools": None,
    # Container log rotation (json-file driver): per-file size and files kept.
    "docker_log_max_size": "50m",
    "docker_log_max_file": 5,
    # Containers keep running while dockerd restarts (upgrades, config changes).
    "docker_live_restore": True,
    # Pull-through mirrors for Docker Hub, e.g. ["https://mirror.example.net"].
    "docker_registry_mirrors": [],
    # Registries reached over plain HTTP or unverified TLS (avoid; prefer docker_registry_ca).
    "docker_insecure_registries": [],
    # Private registry ("host:port") root logs in to with secrets registry_username and
    # registry_password; None: no login.
    "docker_registry": None,
    # Path ON THE MACHINE RUNNING PYINFRA to the CA certificate of docker_registry
    # (pushed to /etc/docker/certs.d/<registry>/ca.crt); None: the system's CAs.
    "docker_registry_ca": None,
    # Extra daemon.json keys, merged last (e.g. {"mtu": 1400}).
    "docker_daemon_extra": {},
    # Seconds the report waits for the engine to answer after a restart.
    "docker_settle_seconds": 60,
}


_value = Settings(DOCKER_DEFAULTS)
"""A data key with this layer's default (the report and validation run outside the deploy)."""


# --- input validation -----------------------------------------------------------------------


def _networks_of_others() -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(host name, address) of every inventory host's private/SSH address that is an IP."""
    found = []
    for other in inventory:
        for key in ("private_address", "ssh_hostname"):
            try:
                found.append((other.name, ipaddress.ip_address(str(other.data.get(key)))))
            except ValueError:
                continue
    return found


def network_problems(name: str, bip: Any, pools: Any, addresses: list[tuple[str, Any]]) -> list[str]:
    """Bridge and pool problems: syntax, overlaps, and clashes with inventory addresses."""
    problems: list[str] = []
    nets: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    if bip is None or str(bip).strip() == "":
        problems.append(
            f"{name}: docker_bip: not set (dockerd would silently take 172.17.0.1/16, which clashes with many "
            f"corporate networks); fix: set docker_bip to a gateway address/prefix unused in your networks, e.g. \"10.200.0.1/24\""
        )
    else:
        try:
            iface = ipaddress.ip_interface(str(bip).strip())
            if "/" not in str(bip) or iface.ip == iface.network.network_address or (
                iface.version == 4 and iface.network.prefixlen < 31 and iface.ip == iface.network.broadcast_address
            ):
                raise ValueError("needs a host address with a prefix")
            nets.append(("docker_bip", iface.network))
        except ValueError:
            problems.append(
                f"{name}: docker_bip: {bip!r} is not a gateway address with a prefix; fix: use e.g. \"10.200.0.1/24\" "
                "(an address inside the network, not the network address)"
            )
    if pools:
        if not isinstance(pools, (list, tuple)):
            problems.append(f"{name}: docker_address_pools: must be a list; fix: e.g. [{{\"base\": \"10.201.0.0/16\", \"size\": 24}}]")
            pools = []
        for index, pool in enumerate(pools):
            field = f"docker_address_pools[{index}]"
            try:
                base = ipaddress.ip_network(str(pool["base"]))
                size = int(pool["size"])
                if isinstance(pool["size"], bool) or not base.prefixlen <= size <= base.max_prefixlen - 2:
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                problems.append(
                    f"{name}: {field}: {pool!r} is not {{\"base\": network, \"size\": prefix length}} with "
                    "base prefix <= size <= 30; fix: e.g. {\"base\": \"10.201.0.0/16\", \"size\": 24}"
                )
                continue
            nets.append((field, base))
    for i, (field_a, net_a) in enumerate(nets):
        for field_b, net_b in nets[i + 1:]:
            if net_a.overlaps(net_b):
                problems.append(f"{name}: {field_b}: {net_b} overlaps {field_a} ({net_a}); fix: use disjoint ranges")
        for other, address in addresses:
            if address in net_a:
                problems.append(
                    f"{name}: {field_a}: {net_a} contains {other}'s address {address}; "
                    "fix: choose a range unused by your hosts and networks"
                )
    return problems


def input_problems(target: Any, addresses: list[tuple[str, Any]] | None = None) -> list[str]:
    """Everything wrong with this layer's inputs on ``target``, one line each: host, field, fix."""
    name = target.name
    problems = network_problems(
        name, target.data.get("docker_bip"), _value(target, "docker_address_pools"),
        _networks_of_others() if addresses is None else addresses,
    )
    source = _value(target, "docker_source")
    if source not in SOURCES:
        problems.append(f"{name}: docker_source: {source!r} is not one of {', '.join(SOURCES)}; fix: use \"debian\" (docker.io) or \"docker\" (Docker's repository)")
    if not _LOG_SIZE.match(str(_value(target, "docker_log_max_size"))):
        problems.append(f"{name}: docker_log_max_size: {_value(target, 'docker_log_max_size')!r} is not a size; fix: e.g. \"50m\" (k, m or g)")
    max_file = _value(target, "docker_log_max_file")
    if isinstance(max_file, bool) or not str(max_file).isdigit() or int(max_file) < 1:
        problems.append(f"{name}: docker_log_max_file: {max_file!r} is not a positive integer; fix: e.g. 5")
    if not isinstance(_value(target, "docker_live_restore"), bool):
        problems.append(f"{name}: docker_live_restore: must be True or False; fix: use a bool (True keeps containers up across restarts)")
    mirrors = _value(target, "docker_registry_mirrors")
    if not isinstance(mirrors, (list, tuple)) or not all(isinstance(m, str) and m.startswith(("https://", "http://")) for m in mirrors):
        problems.append(f"{name}: docker_registry_mirrors: must be a list of http(s) URLs; fix: e.g. [\"https://mirror.example.net\"]")
    insecure = _value(target, "docker_insecure_registries")
    if not isinstance(insecure, (list, tuple)) or not all(isinstance(r, str) and r.strip() for r in insecure):
        problems.append(f"{name}: docker_insecure_registries: must be a list of host:port or CIDR strings; fix: e.g. [] (prefer docker_registry_ca)")
    extra = _value(target, "docker_daemon_extra")
    if not isinstance(extra, dict):
        problems.append(f"{name}: docker_daemon_extra: must be a mapping of daemon.json keys; fix: e.g. {{\"mtu\": 1400}}")
    registry = target.data.get("docker_registry")
    ca = target.data.get("docker_registry_ca")
    if registry:
        if not isinstance(registry, str) or not _HOST_PORT.match(registry):
            problems.append(f"{name}: docker_registry: {registry!r} is not host[:port]; fix: e.g. \"registry.example.net:5000\"")
        for key in ("registry_username", "registry_password"):
            if not _secret(target, key).strip():
                problems.append(
                    f"all: secrets.{key}: missing or empty (required because docker_registry is set); "
                    f"fix: add {key}: <value> to the secrets file, or unset docker_registry"
                )
    if ca:
        if not registry:
            problems.append(f"{name}: docker_registry_ca: set without docker_registry; fix: set docker_registry or unset docker_registry_ca")
        path = Path(str(ca)).expanduser()
        try:
            if "BEGIN CERTIFICATE" not in path.read_text(encoding="utf-8", errors="replace"):
                problems.append(f"{name}: docker_registry_ca: {path} holds no PEM certificate; fix: point it at the registry's CA certificate (PEM)")
        except OSError as exc:
            problems.append(f"{name}: docker_registry_ca: cannot read {path} on this machine ({exc.strerror}); fix: give the CA certificate's path on the machine running pyinfra")
    return problems


# --- rendering ------------------------------------------------------------------------------


def daemon_config(data: Any) -> dict[str, Any]:
    """daemon.json as a dict, from data (anything with ``.get``; layer defaults fill gaps)."""

    def get(key: str) -> Any:
        return data_value(data, key, DOCKER_DEFAULTS)

    config: dict[str, Any] = {
        "bip": str(get("docker_bip")).strip(),
        "live-restore": bool(get("docker_live_restore")),
        "log-driver": "json-file",
        "log-opts": {"max-size": str(get("docker_log_max_size")), "max-file": str(int(get("docker_log_max_file")))},
    }
    pools = get("docker_address_pools")
    if pools:
        config["default-address-pools"] = [{"base": str(p["base"]), "size": int(p["size"])} for p in pools]
    if get("docker_registry_mirrors"):
        config["registry-mirrors"] = [str(m) for m in get("docker_registry_mirrors")]
    if get("docker_insecure_registries"):
        config["insecure-registries"] = [str(r) for r in get("docker_insecure_registries")]
    config.update(dict(get("docker_daemon_extra") or {}))
    return config


def daemon_json(data: Any) -> str:
    """The file's text: sorted keys, so the same settings always give the same bytes (idempotence)."""
    return json.dumps(daemon_config(data), indent=2, sort_keys=True) + "\n"


def docker_repo_source(data: Any, arch: str, codename: str) -> dict[str, Any]:
    """``apt.sources_file`` arguments for Docker's repository (the "docker" source)."""

    def get(key: str) -> Any:
        return data_value(data, key, DOCKER_DEFAULTS)

    return {
        "filename": DOCKER_SOURCES_NAME,
        "types": ["deb"],
        "uris": [str(get("docker_repo_url"))],
        "suites": [codename],
        "components": [str(get("docker_repo_channel"))],
        "architectures": [arch],
        "signed_by": DOCKER_KEYRING,
    }


def release_codename(release_meta: dict[str, Any]) -> str | None:
    """The distribution's codename (bookworm, trixie) from pyinfra's LinuxDistribution release_meta."""
    for key in ("VERSION_CODENAME", "CODENAME", "DISTRIB_CODENAME"):
        if release_meta.get(key):
            return str(release_meta[key]).strip().strip('"') or None
    return None


def packages_for(data: Any) -> list[str]:
    """The engine packages: docker_packages, else the source's own."""
    explicit = data.get("docker_packages")
    if explicit:
        return [str(p) for p in explicit]
    return list(PACKAGES[str(data.get("docker_source") or DOCKER_DEFAULTS["docker_source"])])


def ca_dest(registry: str) -> str:
    return f"{CERTS_DIR}/{registry}/ca.crt"


# --- operations -----------------------------------------------------------------------------


@operation()
def restart_engine(live_restore: bool):
    """Restart dockerd when daemon.json is newer than the running daemon (ooha/facts/docker.py).

    With live-restore wanted, the daemon is first reloaded (SIGHUP: live-restore is a
    reloadable option) so the restart keeps containers even when this very change turns
    live-restore on.  The wait for the reload is bounded (10 s), then the restart goes ahead.
    """
    if not host.get_fact(DaemonConfigPending, service=SERVICE):
        host.noop("dockerd runs with the current daemon.json")
        return
    if live_restore:
        yield (
            f"systemctl reload {SERVICE} || true; "
            "for i in $(seq 20); do "
            "[ \"$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)\" = true ] && break; sleep 0.5; "
            "done"
        )
    # docker.service allows 3 starts a minute (StartLimitBurst): deliberate restarts from
    # config changes close together (a test, an operator fixing a typo) must not hit it.
    yield StringCommand("systemctl", "reset-failed", SERVICE, "||", "true")
    yield StringCommand("systemctl", "restart", SERVICE)


@operation()
def registry_login(registry: str, username: HiddenValue, password_file: str = REGISTRY_PASSWORD_FILE):
    """``docker login`` as root when the stored credentials are not the wanted ones.

    The password goes from the root-only ``password_file`` to ``--password-stdin``; the
    comparison happens on the host (ooha/facts/docker.py RegistryLogin) and prints nothing.
    """
    verdict = host.get_fact(RegistryLogin, registry=registry, username=username, password_file=password_file)
    if verdict == "current":
        host.noop(f"root is logged in to {registry} with the current credentials")
        return
    yield StringCommand(
        "env", "DOCKER_CONFIG=/root/.docker", "docker", "login", "--username", QuoteString(username),
        "--password-stdin", QuoteString(registry), "<", QuoteString(password_file), ">", "/dev/null",
    )


# --- validation (report) --------------------------------------------------------------------


def check_docker_once(target: Any) -> CheckResult:
    """Engine answers, bridge = docker_bip, daemon.json has rotation and live-restore, login current."""
    engine = target.get_fact(DockerEngine)
    if engine is None:
        return CheckResult(False, "docker does not answer", f"rerun the deploy; see `journalctl -u {SERVICE}`")
    info, daemon = engine["info"], engine["daemon"]
    problems: list[str] = []
    parts = [f"docker {info.get('ServerVersion')}"]
    wanted_bip = str(target.data.get("docker_bip") or "")
    actual = [c for c in engine["bridge"] if isinstance(c, dict) and c.get("Gateway") and c.get("Subnet")]
    actual_bip = f"{actual[0]['Gateway']}/{actual[0]['Subnet'].split('/')[-1]}" if actual else "none"
    if wanted_bip and actual_bip == str(ipaddress.ip_interface(wanted_bip)):
        parts.append(f"bip {actual_bip}")
    else:
        problems.append(f"bridge is {actual_bip}, wanted {wanted_bip or 'docker_bip (unset)'}")
    if daemon is None:
        problems.append(f"{DAEMON_JSON} missing or invalid")
    else:
        opts = daemon.get("log-opts") or {}
        if daemon.get("log-driver") == "json-file" and opts.get("max-size") and opts.get("max-file"):
            parts.append(f"logs {opts['max-size']} x {opts['max-file']}")
        else:
            problems.append("no log rotation in daemon.json")
        if daemon.get("default-address-pools"):
            parts.append("pools " + ",".join(str(p.get("base")) for p in daemon["default-address-pools"]))
    live = bool(info.get("LiveRestoreEnabled"))
    if live == bool(_value(target, "docker_live_restore")):
        parts.append(f"live-restore {'on' if live else 'off'}")
    else:
        problems.append(f"live-restore is {'on' if live else 'off'} in the running daemon")
    registry = target.data.get("docker_registry")
    if registry:
        verdict = target.get_fact(
            RegistryLogin, registry=registry, username=HiddenValue(_secret(target, "registry_username")),
            password_file=REGISTRY_PASSWORD_FILE,
        )
        if verdict == "current":
            parts.append(f"logged in to {registry}")
        else:
            problems.append(f"root's login to {registry} is {verdict}")
    if problems:
        return CheckResult(False, "; ".join(problems), "rerun the deploy with --data layers=docker")
    return CheckResult(True, ", ".join(parts))


def check_docker(target: Any) -> CheckResult:
    """The layer's report line, waiting a bounded time for a restarted engine."""
    return poll(check_docker_once, target, float(_value(target, "docker_settle_seconds")))


# --- the deploy -----------------------------------------------------------------------------


def _source() -> None:
    """Docker's repository (key + deb822 entry) or Debian's archive (no Docker entry)."""
    if host.data.docker_source == "docker":
        files.directory(name="apt keyrings directory", path="/etc/apt/keyrings", mode="755")
        key = files.download(
            name="Docker's apt signing key", src=str(host.data.docker_repo_key_url), dest=DOCKER_KEYRING, mode="644",
        )
        codename = release_codename(host.get_fact(LinuxDistribution).get("release_meta") or {})
        if not codename:
            raise DeployError(f"{host.name}: docker_source: 'docker' needs the release codename (VERSION_CODENAME "
                              "in /etc/os-release), none found; fix: use docker_source 'debian' on this host")
        entry = apt.sources_file(name="Docker's apt repository", **docker_repo_source(host.data, host.get_fact(DebArch), codename))
        apt.update(name="Refresh apt lists (Docker's repository)", _if=lambda: key.did_change() or entry.did_change())
    else:
        apt.sources_file(name="No Docker apt repository", filename=DOCKER_SOURCES_NAME, present=False)


@deploy("Docker engine", data_defaults=DOCKER_DEFAULTS)
def docker() -> None:
    """Converge the Docker engine on one Document Server host; data keys in DOCKER_DEFAULTS."""
    problems = input_problems(host)
    if problems:
        raise DeployError("Docker layer inputs:\n" + "\n".join(problems))
    _source()
    # Before the package: the daemon's first start must already use the configured bridge.
    files.put(
        name="Docker daemon.json", src=StringIO(daemon_json(host.data)), dest=DAEMON_JSON,
        user="root", group="root", mode="644", create_remote_dir=True,
    )
    registry = host.data.get("docker_registry")
    if registry and host.data.get("docker_registry_ca"):
        files.put(
            name="Private registry CA", src=str(Path(str(host.data.docker_registry_ca)).expanduser()),
            dest=ca_dest(registry), user="root", group="root", mode="644", create_remote_dir=True,
        )
    # The package comes after daemon.json on purpose (see the module docstring): its
    # post-install start of dockerd reads the file written above.
    apt.packages(name="Install the Docker engine", packages=packages_for(host.data), no_recommends=True)
    systemd.service(name="Docker running and enabled", service=SERVICE, running=True, enabled=True)
    restart_engine(name="Restart Docker if daemon.json changed", live_restore=bool(host.data.docker_live_restore))
    if registry:
        files.directory(name="root's docker config directory", path="/root/.docker", user="root", group="root", mode="700")
        private_put(
            name="Registry password (root only)", src=StringIO(_secret(host, "registry_password")),
            dest=REGISTRY_PASSWORD_FILE, user="root", group="root", mode="600",
        )
        registry_login(
            name=f"Log in to {registry}", registry=registry, username=HiddenValue(_secret(host, "registry_username")),
        )
