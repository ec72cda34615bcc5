"""Facts for the etcd layer: cluster health and membership as etcdctl sees them, and the
member's own state on disk (data present, the environment file Debian's unit reads)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

ETCD_PKI = "/etc/etcd/pki"
ETCD_DEFAULTS_FILE = "/etc/default/etcd"
_SPLIT = "----onlyoffice-ha-etcd-members----"


def etcdctl(address: str, port: int, *args: str) -> str:
    """An etcdctl (v3 API) command line using this host's certificate (needs root)."""
    return etcdctl_urls([f"https://{address}:{int(port)}"], *args)


def etcdctl_urls(endpoints: list[str], *args: str) -> str:
    """etcdctl against several client URLs (``https://address:port``): the first that answers serves."""
    return " ".join(
        [
            "ETCDCTL_API=3",
            "etcdctl",
            f"--endpoints={shlex.quote(','.join(endpoints))}",
            f"--cacert={ETCD_PKI}/ca.crt",
            f"--cert={ETCD_PKI}/host.crt",
            f"--key={ETCD_PKI}/host.key",
            "--dial-timeout=3s",
            "--command-timeout=5s",
            *args,
        ]
    )


class EtcdClusterHealth(FactBase):
    """The etcd cluster seen from this member: ``endpoint health --cluster`` and ``member list``.

    Returns ``None`` when etcdctl is missing or the member does not answer at all, else
    ``{"endpoints": [{"endpoint", "healthy", "error"}], "members": [{"name", "id",
    "peer_urls", "client_urls"}]}`` (a member that was added but never started has an
    empty name).
    """

    def command(self, address: str, port: int = 2379) -> str:
        health = etcdctl(address, port, "-w", "json", "endpoint", "health", "--cluster")
        members = etcdctl(address, port, "-w", "json", "member", "list")
        return (
            "command -v etcdctl >/dev/null || exit 0; "
            f"{health} 2>/dev/null; echo; echo {_SPLIT}; {members} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_etcd_cluster(output)


def parse_etcd_cluster(lines: list[str]) -> dict[str, Any] | None:
    """Parse EtcdClusterHealth's output (kept apart for unit tests)."""
    text = "\n".join(lines)
    if _SPLIT not in text:
        return None
    health_text, members_text = text.split(_SPLIT, 1)
    try:
        members_json = json.loads(members_text.strip() or "null")
    except json.JSONDecodeError:
        members_json = None
    if not isinstance(members_json, dict):
        return None
    try:
        health_json = json.loads(health_text.strip() or "[]")
    except json.JSONDecodeError:
        health_json = []
    endpoints = [
        {"endpoint": e.get("endpoint"), "healthy": bool(e.get("health")), "error": e.get("error") or ""}
        for e in (health_json if isinstance(health_json, list) else [])
    ]
    members = [
        {
            "name": m.get("name") or "",
            "id": format(int(m.get("ID", 0)), "x"),
            "peer_urls": list(m.get("peerURLs") or []),
            "client_urls": list(m.get("clientURLs") or []),
        }
        for m in members_json.get("members") or []
    ]
    return {"endpoints": endpoints, "members": members}


class EtcdMemberDataPresent(FactBase):
    """True when this host already holds an etcd member's data (``<data_dir>/member``).

    Decides between first bootstrap and a rerun: a member with data is never
    re-bootstrapped.
    """

    def command(self, data_dir: str) -> str:
        return f"test -d {shlex.quote(data_dir)}/member && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


class EtcdEnvironment(FactBase):
    """The variables of /etc/default/etcd (what Debian's etcd.service passes to etcd)."""

    def command(self) -> str:
        return f"cat {ETCD_DEFAULTS_FILE} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        values = {}
        for line in output:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
        return values
