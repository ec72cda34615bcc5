"""Facts for the load-balancer layer: nginx's config test, upstreams, the VIP, the front door.

Parsers are plain functions (unit-tested); the facts only run read-only commands.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase

_RC = re.compile(r"^rc=(\d+)$")


def parse_config_test(lines: list[str]) -> dict[str, Any]:
    """``nginx -t`` output + ``rc=N`` -> {"ok": bool, "message": the last error line or ""}."""
    rc = 1
    text = []
    for line in lines:
        match = _RC.match(line.strip())
        if match:
            rc = int(match.group(1))
        elif line.strip():
            text.append(line.strip())
    errors = [line for line in text if "[emerg]" in line or "[alert]" in line]
    return {"ok": rc == 0, "message": (errors or text or [""])[-1] if rc else ""}


class NginxConfigTest(FactBase):
    """Result of ``nginx -t`` on the live configuration."""

    def command(self) -> str:
        return "nginx -t 2>&1; echo rc=$?"

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_config_test(output)


_UPSTREAM = re.compile(r"^\s*upstream\s+(\S+)\s*\{")
_SERVER = re.compile(r"^\s*server\s+(\S+)([^;]*);")


def parse_upstreams(lines: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{upstream: [{"address": "ip:port", "backup": bool}]} from an nginx config (``nginx -T``)."""
    upstreams: dict[str, list[dict[str, Any]]] = {}
    current = None
    for line in lines:
        stripped = line.split("#", 1)[0]
        match = _UPSTREAM.match(stripped)
        if match:
            current = match.group(1)
            upstreams[current] = []
            continue
        if current is None:
            continue
        if stripped.strip() == "}":
            current = None
            continue
        server = _SERVER.match(stripped)
        if server:
            upstreams[current].append({"address": server.group(1), "backup": "backup" in server.group(2).split()})
    return upstreams


class NginxUpstreams(FactBase):
    """Upstream blocks of the LIVE configuration as nginx reads it (``nginx -T``); {} if invalid."""

    def command(self) -> str:
        return "nginx -T 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, list[dict[str, Any]]]:
        return {}

    def process(self, output: list[str]) -> dict[str, list[dict[str, Any]]]:
        return parse_upstreams(output)


def parse_ip_addr(lines: list[str]) -> list[dict[str, str]]:
    """``ip -o addr`` -> [{"interface", "address" (with /prefix)}] (IPv4 and IPv6)."""
    result = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("inet", "inet6"):
            result.append({"interface": parts[1].split("@")[0], "address": parts[3]})
    return result


class HostAddresses(FactBase):
    """Every address on this host with its interface (where the VIP is, which NIC is "front")."""

    def command(self) -> str:
        return "ip -o addr show"

    def process(self, output: list[str]) -> list[dict[str, str]]:
        return parse_ip_addr(output)


class ServiceStates(FactBase):
    """{unit: state} from ``systemctl is-active`` (never fails: inactive units say so)."""

    def command(self, units: tuple[str, ...] = ("nginx", "keepalived")) -> str:
        return " ; ".join(f"printf '%s ' {u} && (systemctl is-active {u} || true)" for u in units)

    def process(self, output: list[str]) -> dict[str, str]:
        states = {}
        for line in output:
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states


def parse_probe(lines: list[str]) -> dict[str, Any]:
    """curl output: body lines then ``code=NNN`` -> {"status": int (0: no answer), "body": str}."""
    status = 0
    body = []
    for line in lines:
        if line.startswith("code="):
            try:
                status = int(line[5:].strip())
            except ValueError:
                status = 0
        else:
            body.append(line)
    return {"status": status, "body": "\n".join(body).strip()}


class FrontDoorProbe(FactBase):
    """GET ``url`` from this host (TLS not verified here: the lab tests verify it with the CA)."""

    def command(self, url: str) -> str:
        safe = url.replace("'", "")
        return f"curl -sk --max-time 5 -w '\\ncode=%{{http_code}}\\n' '{safe}' 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_probe(output)


class NginxLogTail(FactBase):
    """The last lines of the access log that answered 5xx and of the error log (for a diagnosis)."""

    def command(self, lines: int = 20) -> str:
        n = int(lines)
        return (
            f"echo '--access'; tail -n 500 /var/log/nginx/access.log 2>/dev/null | grep -E '\" 50[234] ' | tail -n {n}; "
            f"echo '--error'; tail -n {n} /var/log/nginx/error.log 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {"access": [], "error": []}
        part = None
        for line in output:
            if line in ("--access", "--error"):
                part = line[2:]
            elif part and line.strip():
                result[part].append(line)
        return result


# Error-log messages nginx writes for a failed upstream, and what they mean for an operator.
_CAUSES: tuple[tuple[str, str], ...] = (
    ("could not be resolved", "name not resolved (an upstream host name does not resolve on the LB)"),
    ("host not found", "name not resolved (an upstream host name does not resolve on the LB)"),
    ("no live upstreams", "every node marked failed (all upstreams down within fail_timeout)"),
    ("111: Connection refused", "upstream refused (Document Server container down or port not published)"),
    ("113: No route to host", "node unreachable (host down or network cut)"),
    ("101: Network is unreachable", "node unreachable (host down or network cut)"),
    ("110: Connection timed out", "node unreachable (connect timed out: host down or network cut)"),
    ("upstream timed out", "node unreachable (timed out)"),
)


def diagnose_502(access: list[str], errors: list[str]) -> str:
    """The likely cause of a 502/503/504 at the front door, with the log line that shows it.

    The example (``/example/``) is proxied by Document Server's own nginx to port 3000, so
    a refused connection there is the example being off, not the node.
    """
    last_access = access[-1] if access else ""
    if "/example/" in last_access and " 502 " in last_access:
        return f"example off (ds:example not started on the node): {last_access}"
    for line in reversed(errors):
        for needle, cause in _CAUSES:
            if needle in line:
                return f"{cause}: {line.strip()}"
    if last_access:
        return f"cause not in the error log; last failed request: {last_access}"
    return "no failed request in the logs"
