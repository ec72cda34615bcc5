"""Facts for the file backup layer: the restic repository's snapshots of this host, and the timer.

Read through the layer's own script (``ooha-filebackup status``), which knows the
repository, the CA and the keys (root-only files) so no secret is on a command line.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timezone
from typing import Any

from pyinfra.api import FactBase

SCRIPT = "/usr/local/sbin/ooha-filebackup"

_TIME = re.compile(r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:\d\d)$")


def parse_restic_time(value: str) -> float:
    """Epoch seconds of a restic snapshot time (RFC 3339 with nanoseconds, e.g. ``...45.123456789Z``)."""
    match = _TIME.match(value.strip())
    if not match:
        raise ValueError(f"not a restic time: {value!r}")
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] == "Z" else match["tz"]
    return datetime.fromisoformat(f"{match['base']}.{frac}{tz}").astimezone(timezone.utc).timestamp()


def parse_status(lines: list[str]) -> dict[str, Any] | None:
    """The script's status lines as a dict; None when the script is not installed.

    ``{"repository": "ok"|"missing"|"error", "error": str, "now": epoch, "present": int,
    "timer_enabled": bool, "timer_active": bool, "snapshots": int, "latest": epoch|None,
    "latest_paths": [...], "age_seconds": float|None,
    "snapshot_list": [{"id", "short_id", "time": epoch, "paths": [...]}, ...] oldest first}``
    """
    if not lines or lines[-1].strip() == "not-installed":
        return None
    status: dict[str, Any] = {"repository": "error", "error": "", "now": None, "present": 0,
                              "timer_enabled": False, "timer_active": False, "snapshots": 0,
                              "latest": None, "latest_paths": [], "age_seconds": None, "snapshot_list": []}
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "now" and rest.strip().isdigit():
            status["now"] = int(rest)
        elif word == "present" and rest.strip().isdigit():
            status["present"] = int(rest)
        elif word == "timer":
            parts = rest.split()
            status["timer_enabled"] = bool(parts) and parts[0] == "enabled"
            status["timer_active"] = len(parts) > 1 and parts[1] == "active"
        elif word == "missing":
            status["repository"] = "missing"
        elif word == "error":
            status["error"] = rest.strip()[:300]
        elif word == "snapshots":
            try:
                snapshots = json.loads(rest)
            except json.JSONDecodeError:
                status["error"] = "unreadable snapshot list"
                continue
            status["repository"] = "ok"
            status["snapshots"] = len(snapshots or [])
            status["snapshot_list"] = sorted(
                ({"id": str(s.get("id") or ""), "short_id": str(s.get("short_id") or str(s.get("id") or "")[:8]),
                  "time": parse_restic_time(s["time"]), "paths": list(s.get("paths") or [])} for s in snapshots or []),
                key=lambda s: s["time"])
            if snapshots:
                latest = max(snapshots, key=lambda s: parse_restic_time(s["time"]))
                status["latest"] = parse_restic_time(latest["time"])
                status["latest_paths"] = list(latest.get("paths") or [])
    if status["latest"] is not None and status["now"] is not None:
        status["age_seconds"] = max(0.0, status["now"] - status["latest"])
    return status


class FileBackupStatus(FactBase):
    """This host's restic repository and timer, from ``ooha-filebackup status`` (None: not installed)."""

    def command(self) -> str:
        return f"if [ -x {SCRIPT} ]; then timeout 120 {SCRIPT} status; else echo not-installed; fi"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_status(output)


def parse_blank_probe(lines: list[str]) -> dict[str, Any]:
    """BlankProbe's output as ``{"docker": bool, "container": str|None, "volumes": {name: files|None}}``.

    ``container`` is the DS container's docker status (None: no such container); each
    volume maps to the number of entries found in it (capped), or None when it does not exist.
    """
    probe: dict[str, Any] = {"docker": False, "container": None, "volumes": {}}
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "docker":
            probe["docker"] = rest.strip() == "up"
        elif word == "container":
            probe["container"] = None if rest.strip() in ("", "absent") else rest.strip()
        elif word == "volume":
            name, _, count = rest.strip().partition(" ")
            probe["volumes"][name] = int(count) if count.strip().isdigit() else None
    return probe


class BlankProbe(FactBase):
    """Is this Document Server host blank?  Docker up, the container's status, files in each volume.

    Read-only: ``docker inspect`` / ``docker volume inspect`` and a bounded ``find`` in the
    volume's mountpoint (at most 100 entries counted).  A volume that does not exist is
    ``absent`` (None), never created here.
    """

    def command(self, container: str, volumes: tuple[str, ...] = ()) -> str:
        parts = [
            "if docker info >/dev/null 2>&1; then echo 'docker up'; else echo 'docker down'; exit 0; fi",
            f"echo \"container $(docker inspect -f '{{{{.State.Status}}}}' {shlex.quote(container)} 2>/dev/null || echo absent)\"",
        ]
        for volume in volumes:
            q = shlex.quote(volume)
            parts.append(
                f"if mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {q} 2>/dev/null); then "
                f"echo \"volume {volume} $(find \"$mp\" -mindepth 1 2>/dev/null | head -n 100 | wc -l)\"; "
                f"else echo 'volume {volume} absent'; fi"
            )
        return "; ".join(parts)

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_blank_probe(output)
