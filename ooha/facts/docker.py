"""Facts for the Docker engine layer: what the engine runs with, and whether root is logged in.

``DockerEngine`` reads the engine's own view (``docker info`` and the default bridge's
IPAM config) together with ``/etc/docker/daemon.json``: ``docker info`` does not show
log options or address pools in 20.10, and the file alone does not prove the running
daemon took it.  ``RegistryLogin`` compares the stored credentials with the wanted ones
entirely on the host, so neither the password nor its base64 form is ever printed or
returned.
"""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase, HiddenValue, QuoteString, StringCommand

DAEMON_JSON = "/etc/docker/daemon.json"
ROOT_DOCKER_CONFIG = "/root/.docker/config.json"

_SECTIONS = ("info", "bridge", "daemon")


def parse_engine(lines: list[str]) -> dict[str, Any] | None:
    """Split the fact's ``### section`` output into parsed JSON; None when the engine does not answer.

    Returns ``{"info": {...}, "bridge": [{"Subnet", "Gateway"}...], "daemon": {...} | None}``.
    ``daemon`` is None when the file is missing or is not valid JSON (the daemon would refuse it).
    """
    chunks: dict[str, list[str]] = {name: [] for name in _SECTIONS}
    current = None
    for line in lines:
        if line.startswith("### ") and line[4:].strip() in chunks:
            current = line[4:].strip()
            continue
        if current:
            chunks[current].append(line)

    def load(name: str) -> Any:
        text = "\n".join(chunks[name]).strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    info = load("info")
    if not isinstance(info, dict) or not info.get("ServerVersion"):
        return None
    bridge = load("bridge")
    daemon = load("daemon")
    return {
        "info": info,
        "bridge": bridge if isinstance(bridge, list) else [],
        "daemon": daemon if isinstance(daemon, dict) else None,
    }


class DockerEngine(FactBase):
    """The running engine and its configuration, or None when ``docker info`` does not answer.

    ``{"info": docker info as JSON, "bridge": the default bridge's IPAM config list,
    "daemon": /etc/docker/daemon.json parsed (None if missing or invalid)}``.
    """

    def command(self) -> str:
        return (
            "echo '### info'; timeout 20 docker info --format '{{json .}}' 2>/dev/null; "
            "echo; echo '### bridge'; timeout 20 docker network inspect bridge --format '{{json .IPAM.Config}}' 2>/dev/null; "
            f"echo; echo '### daemon'; cat {DAEMON_JSON} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_engine(output)


def registry_login_command(registry: str, username: str | HiddenValue, password_file: str, config: str = ROOT_DOCKER_CONFIG) -> StringCommand:
    """Shell that prints ``current``, ``stale`` or ``absent`` for root's login to ``registry``.

    The expected ``auth`` (base64 of ``user:password``) is computed on the host from the
    root-only password file; the password only passes through shell builtins (``printf``)
    and pipes, never a process's argv, and nothing but the verdict is printed.
    """
    script = (
        'f="$1"; p="$2"; r="$3"; u="$4"; '
        'if [ ! -r "$f" ] || [ ! -r "$p" ]; then echo absent; exit 0; fi; '
        "cur=$(jq -r --arg r \"$r\" '.auths[$r].auth // empty' \"$f\" 2>/dev/null); "
        'if [ -z "$cur" ]; then echo absent; exit 0; fi; '
        'exp=$(printf "%s:%s" "$u" "$(cat "$p")" | base64 -w0); '
        'if [ "$cur" = "$exp" ]; then echo current; else echo stale; fi'
    )
    return StringCommand(
        "sh", "-c", QuoteString(script), "registry-login",
        QuoteString(config), QuoteString(password_file), QuoteString(registry),
        # The user name sits in the secrets file: masked in pyinfra's logs like a secret.
        QuoteString(username if isinstance(username, HiddenValue) else HiddenValue(username)),
    )


class RegistryLogin(FactBase):
    """Whether root's docker config holds the wanted credentials for a registry.

    ``"current"`` (same user and password), ``"stale"`` (an entry, other credentials),
    ``"absent"`` (no entry, or the password file is missing).  Never the credentials.
    """

    def command(self, registry: str, username: str | HiddenValue, password_file: str) -> StringCommand:
        """Pass ``username`` as a HiddenValue: pyinfra logs fact arguments (-vv)."""
        return registry_login_command(registry, username, password_file)

    def process(self, output: list[str]) -> str:
        verdict = (output[-1] if output else "").strip()
        return verdict if verdict in ("current", "stale", "absent") else "absent"


def parse_seconds(text: str) -> int | None:
    """``date +%s.%N`` / ``stat -c %.9Y`` output -> integer nanoseconds (None if not a number)."""
    whole, _, fraction = text.strip().partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        return None
    return int(whole) * 10**9 + int((fraction + "000000000")[:9])


def config_pending(lines: list[str]) -> bool:
    """DaemonConfigPending's verdict from ``active``, ``started <s.ns>`` and ``mtime <s.ns>`` lines.

    Pending when the file's mtime is LATER than the daemon's start (nanoseconds: a file
    written in the same second as the start still counts).  Not pending when dockerd is
    not active, the file is missing, or a time cannot be read.
    """
    values = dict(line.strip().partition(" ")[::2] for line in lines if line.strip())
    if values.get("active") != "yes":
        return False
    started, mtime = parse_seconds(values.get("started", "")), parse_seconds(values.get("mtime", ""))
    if started is None or mtime is None:
        return False
    return mtime > started


class DaemonConfigPending(FactBase):
    """True when daemon.json was modified after the running dockerd started (it has not read the file yet).

    Why not only "the file changed in this run": a run that wrote the file and then
    failed before the restart would leave the daemon on the old settings for good;
    comparing the file's mtime with the daemon's start time catches that on the next run.
    Both times are compared to the microsecond (systemd's start timestamp with
    ``--timestamp=us+utc``, the file's mtime with ``%.9Y``): with whole seconds a file
    written in the same second the daemon started (a restart right after the write, then a
    second write) was missed.  False when dockerd is not running or the file is missing.
    """

    def command(self, service: str = "docker.service") -> StringCommand:
        script = (
            's="$1"; f="$2"; '
            'if ! systemctl -q is-active "$s" || [ ! -f "$f" ]; then echo "active no"; exit 0; fi; '
            'echo "active yes"; '
            'echo "started $(date -d "$(systemctl show -p ExecMainStartTimestamp --value --timestamp=us+utc "$s")" +%s.%N 2>/dev/null)"; '
            'echo "mtime $(stat -c %.9Y "$f")"'
        )
        return StringCommand("sh", "-c", QuoteString(script), "daemon-config-pending", QuoteString(service), QuoteString(DAEMON_JSON))

    def process(self, output: list[str]) -> bool:
        return config_pending(output)
