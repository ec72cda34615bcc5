"""Facts for the endpoints layer: what HAProxy thinks of each backend server.

Read from HAProxy's stats page as CSV (``/stats;csv`` on 127.0.0.1), which needs no
extra tool on the host (curl is a base package) and no access to the admin socket.
"""

from __future__ import annotations

import csv
from typing import Any

from pyinfra.api import FactBase

STATS_PORT = 8404


def parse_stats_csv(lines: list[str]) -> dict[str, dict[str, str]]:
    """{proxy: {server: status}} from HAProxy's stats CSV, server rows only.

    ``status`` is HAProxy's own word: ``UP``, ``DOWN``, ``UP 1/2`` (going down),
    ``DOWN 1/2`` (coming up), ``MAINT``, ``no check``...
    """
    rows = [line for line in lines if line.strip()]
    if not rows or not rows[0].startswith("# "):
        return {}
    reader = csv.DictReader([rows[0][2:]] + rows[1:])
    states: dict[str, dict[str, str]] = {}
    for row in reader:
        proxy, server = row.get("pxname"), row.get("svname")
        if not proxy or not server or server in ("FRONTEND", "BACKEND"):
            continue
        states.setdefault(proxy, {})[server] = (row.get("status") or "").strip()
    return states


class HaproxyServerStates(FactBase):
    """{proxy: {server: status}} from the local stats page; {} when HAProxy does not answer."""

    def command(self, port: int = STATS_PORT) -> str:
        return f"curl -fsS --max-time 5 'http://127.0.0.1:{int(port)}/stats;csv' 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return parse_stats_csv(output)
