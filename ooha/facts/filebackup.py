"""Facts for the file backup layer: the restic repository's snapshots of this host, and the timer.

Read through the layer's own script (``ooha-filebackup status``), which knows the
repository, the CA and the keys (root-only files) so no secret is on a command line.
"""

from __future__ import annotations

import json
import re
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
    "latest_paths": [...], "age_seconds": float|None}``
    """
    if not lines or lines[-1].strip() == "not-installed":
        return None
    status: dict[str, Any] = {"repository": "error", "error": "", "now": None, "present": 0,
                              "timer_enabled": False, "timer_active": False, "snapshots": 0,
                              "latest": None, "latest_paths": [], "age_seconds": None}
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
