"""Facts for the RabbitMQ layer: cluster state, vhosts, users, permissions, policies.

Every fact asks the local node through ``rabbitmqctl ... --formatter json`` (it needs
the Erlang cookie, hence root).  A node that does not answer (not installed, stopped,
paused by pause_minority) gives ``None`` or an empty value rather than failing the
host: the layer's check turns that into a report line with a fix.
"""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase

COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"
MNESIA_DIR = "/var/lib/rabbitmq/mnesia"
CTL_TIMEOUT = 20
"""Seconds any rabbitmqctl call may take: a paused node must not hang the deploy."""


def _ctl(args: str) -> str:
    """A bounded rabbitmqctl call whose failure (node down) yields no output."""
    return f"timeout {CTL_TIMEOUT} rabbitmqctl {args} --formatter json 2>/dev/null || true"


def _json(lines: list[str]) -> Any:
    """The JSON document rabbitmqctl printed (notices may come first), or None."""
    text = "\n".join(lines)
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    try:
        return json.loads(text[min(starts):])
    except json.JSONDecodeError:
        return None


def parse_cluster_status(lines: list[str]) -> dict[str, Any] | None:
    """``rabbitmqctl cluster_status --formatter json`` as a small dict, or None.

    Keys: ``members`` (disk and RAM nodes, sorted), ``running_nodes`` (sorted),
    ``partitions`` ({node: [nodes it cannot see]}, only non-empty entries),
    ``alarms`` (list of "node: alarm" strings), ``cluster_name``.
    """
    data = _json(lines)
    if not isinstance(data, dict) or "running_nodes" not in data:
        return None
    members = sorted(set(data.get("disk_nodes") or []) | set(data.get("ram_nodes") or []))
    partitions = {node: list(peers) for node, peers in (data.get("partitions") or {}).items() if peers}
    alarms = []
    for alarm in data.get("alarms") or []:
        if isinstance(alarm, dict):
            alarms.append(f"{alarm.get('node', '?')}: {alarm.get('type', alarm.get('resource', alarm))}")
        else:
            alarms.append(str(alarm))
    return {
        "members": members,
        "running_nodes": sorted(data.get("running_nodes") or []),
        "partitions": partitions,
        "alarms": alarms,
        "cluster_name": data.get("cluster_name"),
    }


class RabbitmqClusterStatus(FactBase):
    """The local node's view of its cluster (see ``parse_cluster_status``); None if it does not answer."""

    def command(self) -> str:
        return _ctl("cluster_status")

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_cluster_status(output)


def _names(lines: list[str], key: str = "name") -> list[str]:
    data = _json(lines)
    return sorted(str(item[key]) for item in data or [] if isinstance(item, dict) and key in item)


class RabbitmqVhosts(FactBase):
    """Names of the cluster's virtual hosts (empty when the node does not answer)."""

    def command(self) -> str:
        return _ctl("list_vhosts name")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return _names(output)


class RabbitmqUsers(FactBase):
    """Names of the cluster's users (empty when the node does not answer)."""

    def command(self) -> str:
        return _ctl("list_users")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return _names(output, "user")


class RabbitmqPermissions(FactBase):
    """{user: {"configure", "write", "read"}} on one vhost (empty when none or no answer)."""

    def command(self, vhost: str) -> str:
        from shlex import quote

        return _ctl(f"list_permissions -p {quote(vhost)}")

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        data = _json(output) or []
        return {
            str(item["user"]): {key: str(item.get(key, "")) for key in ("configure", "write", "read")}
            for item in data
            if isinstance(item, dict) and "user" in item
        }


class RabbitmqPolicies(FactBase):
    """{name: {"pattern", "apply-to", "definition", "priority"}} on one vhost."""

    def command(self, vhost: str) -> str:
        from shlex import quote

        return _ctl(f"list_policies -p {quote(vhost)}")

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return parse_policies(output)


def parse_policies(lines: list[str]) -> dict[str, dict[str, Any]]:
    """``list_policies --formatter json``: the definition arrives as a JSON string or object."""
    policies = {}
    for item in _json(lines) or []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        definition = item.get("definition")
        if isinstance(definition, str):
            try:
                definition = json.loads(definition)
            except json.JSONDecodeError:
                pass
        policies[str(item["name"])] = {
            "pattern": item.get("pattern"),
            "apply-to": item.get("apply-to"),
            "definition": definition,
            "priority": int(item.get("priority") or 0),
        }
    return policies


class RabbitmqPasswordMatches(FactBase):
    """Whether ``user`` authenticates with the password stored in ``password_file``.

    rabbitmqctl reads the password from stdin, so it never appears in a process list.
    """

    def command(self, user: str, password_file: str) -> str:
        from shlex import quote

        return (
            f"timeout {CTL_TIMEOUT} rabbitmqctl authenticate_user {quote(user)} < {quote(password_file)}"
            " >/dev/null 2>&1 && echo yes || echo no"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"


class RabbitmqErlangCookieDigest(FactBase):
    """SHA-256 of the node's Erlang cookie (never the cookie itself); None without one.

    Compared with the wanted cookie's digest so a changed secret is refused before
    it splits a running cluster.
    """

    def command(self) -> str:
        return f"sha256sum {COOKIE_FILE} 2>/dev/null | cut -d' ' -f1 || true"

    def process(self, output: list[str]) -> str | None:
        value = output[0].strip() if output else ""
        return value or None


class RabbitmqNodeInitialised(FactBase):
    """True once the node has a database directory (it started at least once)."""

    def command(self) -> str:
        return f"test -d {MNESIA_DIR} && ls -A {MNESIA_DIR} | head -1 || true"

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)


PEER_MARK = "=== ooha node "
"""Separator line printed before each node's answer in ``RabbitmqPeerClusterStatus``."""
PEER_TIMEOUT = 15
"""Seconds one remote rabbitmqctl may take (a dead peer must not hang the deploy)."""


class RabbitmqPeerClusterStatus(FactBase):
    """Each given node's own view of its cluster, asked from this host with ``rabbitmqctl -n``.

    ``{node: status (see parse_cluster_status) or None}``; None when that node does not
    answer (stopped, unreachable, paused).  Used only when the local node is standalone,
    to find a surviving node of the cluster and whether it still lists this node.
    """

    def command(self, nodes: list[str]) -> str:
        for node in nodes:
            if not node or not all(c.isalnum() or c in "@.-_" for c in node):
                raise ValueError(f"not an Erlang node name: {node!r}")
        return " ".join(
            f"echo '{PEER_MARK}{node}'; timeout {PEER_TIMEOUT} rabbitmqctl -n {node} cluster_status "
            "--formatter json 2>/dev/null || true;"
            for node in nodes
        ) or "true"

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any] | None]:
        parts: dict[str, list[str]] = {}
        current: str | None = None
        for line in output:
            if line.startswith(PEER_MARK):
                current = line[len(PEER_MARK):].strip()
                parts[current] = []
            elif current is not None:
                parts[current].append(line)
        return {node: parse_cluster_status(lines) for node, lines in parts.items()}
