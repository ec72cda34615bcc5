"""Facts for the Document Server layer: the container, its example, health, version and 502 clues.

The container's environment holds secrets (DB_PWD, JWT_SECRET...), so ``DsContainer``
never returns it: a small script ON THE HOST reads ``docker inspect`` and returns only a
sha256 of the env entries the deploy manages (``env_keys``), next to the fields the
deploy compares (image, mounts, published ports, restart policy, limits, labels).  The
controller computes the same digest of the wanted env; equal digests mean equal values.

``DsVersion`` gets its ``Authorization: Bearer`` header line on stdin (the caller passes
``_stdin=``; curl reads it with ``-H @-``, curl >= 7.55, Debian 12 has 7.88): the token
(5 minutes, good for any /command) is never on a command line on the DS host (sudo's and
sh's argv are visible to every local user in ps) and never in pyinfra's fact arguments or
logs.  It is signed on the controller; the JWT secret never leaves the controller here.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

CONTAINER = "onlyoffice-documentserver"
EXAMPLE_CONF = "/etc/supervisor/conf.d/ds-example.conf"
LOGS_VOLUME = "onlyoffice-logs"
# Inside the logs volume (/var/log/onlyoffice in the container): nginx's error log in the real
# image's ds.conf and in the stand-in's.
NGINX_ERROR_LOG = "documentserver/nginx.error.log"

# Runs on the DS host (python3 is in every Debian install): reads `docker inspect` on stdin,
# prints the compared fields as JSON, the env only as a digest of the managed keys.
_INSPECT_SCRIPT = r"""
import hashlib, json, sys
keys = set(k for k in sys.argv[1].split(",") if k)
raw = sys.stdin.read().strip() or "[]"
try:
    data = json.loads(raw)
except ValueError:
    data = []
if not data:
    print("null")
    sys.exit(0)
c = data[0]
cfg, hc, st = c.get("Config") or {}, c.get("HostConfig") or {}, c.get("State") or {}
env = sorted(e for e in (cfg.get("Env") or []) if e.split("=", 1)[0] in keys)
ports = sorted("%s:%s->%s" % (b.get("HostIp", ""), b.get("HostPort", ""), p)
               for p, bs in (hc.get("PortBindings") or {}).items() for b in (bs or []))
mounts = sorted([m.get("Type"), m.get("Name") or m.get("Source"), m.get("Destination"), bool(m.get("RW"))]
                for m in (c.get("Mounts") or []))
print(json.dumps({
    "id": c.get("Id"), "status": st.get("Status"), "running": bool(st.get("Running")),
    "started_at": st.get("StartedAt"), "image": cfg.get("Image"), "image_id": c.get("Image"),
    "hostname": cfg.get("Hostname"), "env_sha256": hashlib.sha256("\n".join(env).encode()).hexdigest(),
    "ports": ports, "mounts": mounts, "restart_policy": (hc.get("RestartPolicy") or {}).get("Name") or "no",
    "memory": hc.get("Memory") or 0, "nano_cpus": hc.get("NanoCpus") or 0, "labels": cfg.get("Labels") or {},
}, sort_keys=True))
"""


def parse_json_line(lines: list[str]) -> Any:
    """The last line that parses as JSON (None when none does)."""
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


class DsContainer(FactBase):
    """The container as the deploy compares it, or None when it does not exist.

    ``{"id", "status", "running", "started_at", "image", "image_id", "hostname",
    "env_sha256" (of the sorted ``KEY=value`` entries whose key is in env_keys),
    "ports" ["ip:port->80/tcp"], "mounts" [[type, name|source, destination, rw]],
    "restart_policy", "memory" (bytes, 0 = none), "nano_cpus" (0 = none), "labels"}``.
    """

    def command(self, container: str = CONTAINER, env_keys: tuple[str, ...] = ()) -> StringCommand:
        return StringCommand(
            "docker", "inspect", "--type", "container", QuoteString(container), "2>/dev/null", "|",
            "python3", "-c", QuoteString(_INSPECT_SCRIPT), QuoteString(",".join(env_keys)),
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        value = parse_json_line(output)
        return value if isinstance(value, dict) else None


def parse_example(lines: list[str]) -> dict[str, Any] | None:
    """DsExample's output: ``autostart=...`` line from the conf and supervisorctl's status line."""
    if not lines or lines[0].strip() != "running":
        return None
    autostart = None
    state = None
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("autostart="):
            autostart = text.split("=", 1)[1].strip().lower() == "true"
        elif text.startswith("ds:example"):
            parts = text.split()
            state = parts[1] if len(parts) > 1 else None
    return {"autostart": autostart, "state": state}


class DsExample(FactBase):
    """The test example in a running container: ``{"autostart": bool|None, "state": "RUNNING"|...}``.

    None when the container is not running.  ``state`` is None while supervisord is not up
    yet (the entrypoint starts it after the database step).
    """

    def command(self, container: str = CONTAINER) -> str:
        q = shlex.quote(container)
        return (
            f"if [ \"$(docker inspect -f '{{{{.State.Running}}}}' {q} 2>/dev/null)\" = true ]; then echo running; "
            f"docker exec {q} grep -E '^autostart=' {EXAMPLE_CONF} 2>/dev/null; "
            f"docker exec {q} supervisorctl status ds:example 2>/dev/null; fi; true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_example(output)


def parse_http(lines: list[str]) -> dict[str, Any]:
    """``curl -w '\\n%{http_code}'`` output: body lines then the status code (000: no answer)."""
    if not lines:
        return {"status": 0, "body": ""}
    try:
        status = int(lines[-1].strip())
    except ValueError:
        status = 0
    return {"status": status, "body": "\n".join(lines[:-1]).strip()}


class DsHttp(FactBase):
    """GET ``url`` from the host: ``{"status": int (0 when nothing answered), "body": str}``."""

    def command(self, url: str) -> StringCommand:
        return StringCommand("curl", "-s", "-m", "10", "-o", "-", "-w", "'\\n%{http_code}'", QuoteString(url), "||", "true")

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_http(output)


class DsVersion(FactBase):
    """POST /command ``{"c":"version"}`` with a JWT from the controller: the parsed JSON answer or None.

    Call with ``_stdin="Authorization: Bearer <token>\\n"``: curl reads that header from
    stdin (``-H @-``), so the token is on no argv and in no fact argument.
    """

    def command(self, url: str) -> StringCommand:
        return StringCommand(
            "curl", "-s", "-m", "10", "-X", "POST", "-H", "'Content-Type: application/json'",
            "-H", "@-", "--data", "'{\"c\":\"version\"}'", QuoteString(url), "||", "true",
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        value = parse_json_line(output)
        return value if isinstance(value, dict) else None


class DsNginxErrors(FactBase):
    """The last ``lines`` lines of the container's nginx error log, read from the logs volume.

    Read through the volume's mount point on the host, so it works while the container is
    stopped too; [] when there is no log yet.
    """

    def command(self, volume: str = LOGS_VOLUME, lines: int = 30) -> str:
        return (
            f"d=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {shlex.quote(volume)} 2>/dev/null) && "
            f"tail -n {int(lines)} \"$d/{NGINX_ERROR_LOG}\" 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line.strip()]

    @staticmethod
    def default() -> list[str]:
        return []


HEAL_SCRIPT = "/usr/local/sbin/ooha-ds-heal"
HEAL_STATE = "/var/lib/ooha-ds-heal/state"
HEAL_TIMER = "ooha-ds-heal.timer"


def parse_heal_state(lines: list[str]) -> dict[str, Any] | None:
    """DsHealState's output: ``{"timer_enabled", "timer_active", "state": {...} | {}}``; None: not installed."""
    if not lines or lines[0].strip() == "not-installed":
        return None
    result: dict[str, Any] = {"timer_enabled": False, "timer_active": False, "state": {}}
    for line in lines:
        text = line.strip()
        if text.startswith("timer "):
            parts = text.split()
            result["timer_enabled"] = len(parts) > 1 and parts[1] == "enabled"
            result["timer_active"] = len(parts) > 2 and parts[2] == "active"
        elif text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                result["state"] = value
    return result


class DsHealState(FactBase):
    """The self-healing timer and its state file (restarts, give-up); None when not installed."""

    def command(self) -> str:
        return (
            f"if [ ! -x {HEAL_SCRIPT} ]; then echo not-installed; exit 0; fi; "
            f"echo \"timer $(systemctl is-enabled {HEAL_TIMER} 2>/dev/null || true) "
            f"$(systemctl is-active {HEAL_TIMER} 2>/dev/null || true)\"; "
            f"cat {HEAL_STATE} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_heal_state(output)
