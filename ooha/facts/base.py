"""Facts for the base layer: time sync, apt proxy, time zone.

Each fact is named for what it reports.  Sysctl values come from pyinfra's own
``pyinfra.facts.server.Sysctl``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase

APT_PROXY_FILE = "/etc/apt/apt.conf.d/01proxy"

_TRACKING_LINE = re.compile(r"^(?P<key>[A-Za-z ]+?)\s*:\s*(?P<value>.*)$")
_REFERENCE = re.compile(r"^(?P<id>[0-9A-Fa-f]+)\s*(?:\((?P<name>[^)]*)\))?")
_OFFSET = re.compile(r"^(?P<seconds>[-+0-9.eE]+) seconds (?P<direction>fast|slow)")


class ChronyTracking(FactBase):
    """What chronyd is synchronised to: ``chronyc -n tracking``, parsed.

    Returns ``None`` when chronyd does not answer (not installed or not running),
    else a dict: ``reference_id`` (hex), ``reference`` (address or None when
    unsynchronised), ``stratum`` (int), ``offset_seconds`` (float, positive = fast),
    ``leap_status`` ("Normal" when synchronised, "Not synchronised" otherwise).
    """

    # chronyc exits non-zero when chronyd is down; report that as None, not a failure.
    def command(self) -> str:
        return "chronyc -n tracking 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_chrony_tracking(output)


def parse_chrony_tracking(lines: list[str]) -> dict[str, Any] | None:
    """Parse ``chronyc -n tracking`` output (kept separate so it has a unit test)."""
    raw: dict[str, str] = {}
    for line in lines:
        match = _TRACKING_LINE.match(line.strip())
        if match:
            raw[match["key"].strip().lower()] = match["value"].strip()
    if "reference id" not in raw or "stratum" not in raw:
        return None
    reference = _REFERENCE.match(raw["reference id"])
    ref_id = reference["id"].upper() if reference else ""
    ref_name = reference["name"] if reference and reference["name"] else None
    # "7F7F0101 ()" / "00000000 ()" mean: no reference (local or unsynchronised).
    if ref_id in ("", "00000000", "7F7F0101"):
        ref_name = None
    offset = _OFFSET.match(raw.get("system time", ""))
    offset_seconds = None
    if offset:
        offset_seconds = float(offset["seconds"]) * (1 if offset["direction"] == "fast" else -1)
    try:
        stratum = int(raw["stratum"])
    except ValueError:
        stratum = 0
    return {
        "reference_id": ref_id,
        "reference": ref_name,
        "stratum": stratum,
        "offset_seconds": offset_seconds,
        "leap_status": raw.get("leap status", ""),
    }


class ChronySources(FactBase):
    """chronyd's configured sources: ``chronyc -n sources``, as a list of dicts.

    Each dict: ``address``, ``state`` (``*`` selected, ``+`` combined, ``-``
    not combined, ``?`` unreachable, ``x`` falseticker, ``~`` too variable),
    ``stratum`` (int).  An empty list when chronyd does not answer.
    """

    def command(self) -> str:
        return "chronyc -n sources 2>/dev/null || true"

    @staticmethod
    def default() -> list[dict[str, Any]]:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        return parse_chrony_sources(output)


_SOURCE_LINE = re.compile(r"^(?P<mode>[\^=#])(?P<state>[*+\-?x~ ])\s+(?P<address>\S+)\s+(?P<stratum>\d+)")


def parse_chrony_sources(lines: list[str]) -> list[dict[str, Any]]:
    """Parse ``chronyc -n sources`` output."""
    sources = []
    for line in lines:
        match = _SOURCE_LINE.match(line)
        if match:
            sources.append(
                {
                    "address": match["address"],
                    "state": match["state"].strip() or " ",
                    "stratum": int(match["stratum"]),
                }
            )
    return sources


class AptProxyConfigured(FactBase):
    """The apt HTTP proxy set in /etc/apt/apt.conf.d/01proxy, or ``None`` without one."""

    def command(self) -> str:
        return f"cat {APT_PROXY_FILE} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            match = re.search(r'Acquire::http::Proxy\s+"([^"]*)"', line)
            if match:
                return match.group(1)
        return None


class TimeZoneName(FactBase):
    """The system time zone, from where /etc/localtime points (e.g. ``Etc/UTC``)."""

    def command(self) -> str:
        return "readlink -f /etc/localtime 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        target = output[0].strip() if output else ""
        prefix = "/usr/share/zoneinfo/"
        return target[len(prefix):] if target.startswith(prefix) else (target or None)


class DataPresent(FactBase):
    """Which of ``paths`` hold data on this host: an existing non-empty directory or file.

    The whole-site rebuild refuses a site that is not blank: one path per service whose
    loss the site rebuild assumes (etcd member dir, PostgreSQL data dir, RabbitMQ mnesia,
    Redis's bootstrap marker, the Document Server Data volume).
    """

    def command(self, paths: list[str]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for p in {quoted}; do if [ -d \"$p\" ]; then [ -n \"$(ls -A \"$p\" 2>/dev/null)\" ] && echo \"$p\"; "
                "elif [ -s \"$p\" ]; then echo \"$p\"; fi; done; true")

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]
