"""Facts for the base layer: time sync, apt proxy, time zone.

Each fact is named for what it reports.  Sysctl values come from pyinfra's own
``pyinfra.facts.server.Sysctl``.
"""

from __future__ import annotations

import json
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


PATCH_LAST_FILE = "/var/lib/onlyoffice-ha/patch-last.json"
"""The last host-patching run on this host (written by the host-patching job, issue 12)."""
_PATCH_SECTIONS = ("upgradable", "reboot", "needrestart", "lists", "last")


class HostPatchState(FactBase):
    """What the report says about patching one host (issue 12 item 4), read in one round trip.

    ``apt list --upgradable`` reads the local lists (as fresh as the last ``apt-get update``,
    whose time is returned too); ``/run/reboot-required`` is what Debian's packages set;
    ``needrestart -b`` (batch, list only: the base layer configures it never to restart
    anything) sees services still mapping replaced libraries.  Needs root (needrestart reads
    every process's maps).  Each tool gets 60 s (``needrestart`` can block on a process stuck in
    D state holding its mmap lock): a report must not hang on one host; a cut-short section reads
    as unknown.  Returns ``parse_host_patch_state``'s dict.
    """

    def command(self) -> str:
        mark = "echo '----ooha-{}----'; "
        return (
            mark.format("upgradable") + "timeout 60 apt list --upgradable 2>/dev/null || echo '----ooha-cut----'; "
            + mark.format("reboot") + "if [ -e /run/reboot-required ]; then echo yes; "
            "cat /run/reboot-required.pkgs 2>/dev/null; else echo no; fi; "
            + mark.format("needrestart") + "if command -v needrestart >/dev/null; then timeout 60 needrestart -b 2>/dev/null || echo '----ooha-cut----'; fi; "
            + mark.format("lists") + "stat -c %Y /var/lib/apt/lists/*Release 2>/dev/null | sort -n | tail -n 1; "
            + mark.format("last") + f"cat {shlex.quote(PATCH_LAST_FILE)} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_host_patch_state(output)


def parse_host_patch_state(lines: list[str]) -> dict[str, Any]:
    """Sections of HostPatchState's output -> {"pending": tuple[PendingPackage] | None,
    "reboot": RebootVerdict (auto mode), "lists_epoch": int | None, "last_run": str | None}.

    A missing section (the command was cut short) is "unknown", never "nothing pending".
    """
    from ooha.rollout.hostgates import parse_apt_upgradable, parse_needrestart, parse_reboot_required, reboot_decision

    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        match = re.fullmatch(r"----ooha-(\w+)----", line.strip())
        if match and match[1] == "cut" and current is not None:
            del sections[current]  # the tool failed or ran out of time: unknown, not "nothing"
            current = None
        elif match and match[1] in _PATCH_SECTIONS:
            current = match[1]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    flag_lines = sections.get("reboot")
    flag = (parse_reboot_required(flag_lines[0].strip() == "yes", "\n".join(flag_lines[1:]))
            if flag_lines else None)
    try:
        needrestart = parse_needrestart("\n".join(sections.get("needrestart", [])))
    except ValueError:
        needrestart = None
    stamp = "".join(sections.get("lists", [])).strip()
    last = "\n".join(sections.get("last", [])).strip()
    return {
        "pending": parse_apt_upgradable("\n".join(sections["upgradable"])) if "upgradable" in sections else None,
        "reboot": reboot_decision("auto", flag, needrestart),
        "lists_epoch": int(stamp) if stamp.isdigit() else None,
        "last_run": _last_run_text(last),
    }


def _last_run_text(text: str) -> str | None:
    """The last patch run's summary from its JSON record ({"finished", "outcome", ...})."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return "record unreadable"
    return f"{record.get('finished', '?')} ({record.get('outcome', '?')})"
