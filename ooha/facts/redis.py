"""Facts for the Redis layer: replication state of each Redis and Sentinel's view of the primary.

Every command goes through ``ooha-redis-cli`` (installed by ooha/layers/redis.py), a root-only
wrapper that reads the password from a root-only file and hands it to redis-cli in
``REDISCLI_AUTH``: no password appears in a fact's command, in ``ps`` or in pyinfra's
output.  Before the layer is deployed the wrapper is missing and these facts report
"nothing answers" (None / empty values) instead of failing the host.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

CLI = "/usr/local/sbin/ooha-redis-cli"
"""The wrapper: ``ooha-redis-cli redis|sentinel [redis-cli args]`` (defaults to 127.0.0.1)."""

MARK = "=== ooha "
"""Separator line the multi-address facts print before each address's answer."""


def _per_address(kind: str, addresses: list[str], args: str) -> str:
    """A shell loop asking ``args`` of every address, each answer after a ``MARK addr`` line."""
    quoted = " ".join(_safe(a) for a in addresses)
    return (
        f"for a in {quoted}; do echo '{MARK}'\"$a\"; "
        f"{CLI} {kind} -h \"$a\" {args} 2>&1 || true; done"
    )


def _safe(address: str) -> str:
    """Addresses come from the inventory; refuse anything that is not a plain host/address."""
    if not address or not all(c.isalnum() or c in ".-:_" for c in address):
        raise ValueError(f"not a host address: {address!r}")
    return address


def split_per_address(lines: list[str]) -> dict[str, list[str]]:
    """Split the output of a ``_per_address`` loop into ``{address: answer lines}``."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_info(lines: list[str]) -> dict[str, str] | None:
    """``INFO replication`` as a dict of strings; None when it is not an INFO answer
    (connection refused, NOAUTH, timeout)."""
    info: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            info[key] = value
    return info if "role" in info else None


def parse_replicas(info: dict[str, str]) -> list[dict[str, Any]]:
    """The ``slaveN:ip=...,port=...,state=online,offset=N,lag=N`` lines of a primary's INFO."""
    replicas = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit():
            fields = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
            replicas.append(
                {
                    "ip": fields.get("ip", ""),
                    "port": int(fields.get("port", 0) or 0),
                    "state": fields.get("state", ""),
                    "offset": int(fields.get("offset", 0) or 0),
                    "lag": int(fields.get("lag", 0) or 0),
                }
            )
    return replicas


class RedisReplicationByAddress(FactBase):
    """``INFO replication`` of the Redis at each address, asked from this host.

    ``{address: info dict or None}``; None means that Redis did not answer (down,
    unreachable, wrong password).  Asked of every member from each member, so the
    report sees the whole replication group from one host.
    """

    def command(self, addresses: list[str]) -> str:
        return _per_address("redis", addresses, "INFO replication")

    def process(self, output: list[str]) -> dict[str, dict[str, str] | None]:
        return {addr: parse_info(lines) for addr, lines in split_per_address(output).items()}


class SentinelPrimaryByAddress(FactBase):
    """Which primary the Sentinel at each address names for ``master``.

    ``{address: "ip" or None}`` from ``SENTINEL get-master-addr-by-name``; None means
    that Sentinel did not answer or does not monitor ``master``.
    """

    def command(self, addresses: list[str], master: str) -> str:
        return _per_address("sentinel", addresses, f"SENTINEL get-master-addr-by-name {_safe(master)}")

    def process(self, output: list[str]) -> dict[str, str | None]:
        return {addr: parse_master_addr(lines) for addr, lines in split_per_address(output).items()}


def parse_master_addr(lines: list[str]) -> str | None:
    """``ip`` from get-master-addr-by-name's two lines (ip, port); None on nil or an error."""
    values = [line.strip() for line in lines if line.strip()]
    if len(values) == 2 and values[1].isdigit() and all(c.isalnum() or c in ".:-" for c in values[0]):
        return values[0]
    return None


class SentinelQuorum(FactBase):
    """The local Sentinel's ``SENTINEL CKQUORUM master``: ``{"ok": bool, "message": str}``.

    ok is True when enough Sentinels are reachable to reach the quorum and to
    authorise a failover (a majority); the message is Sentinel's own sentence.
    """

    def command(self, master: str) -> str:
        return f"{CLI} sentinel SENTINEL CKQUORUM {_safe(master)} 2>&1 || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        message = " ".join(line.strip() for line in output if line.strip())
        return {"ok": message.startswith("OK "), "message": message or "no answer"}


class SentinelMasterSettings(FactBase):
    """The local Sentinel's ``SENTINEL MASTER master`` as ``{field: value}`` (strings).

    Empty when Sentinel does not answer or does not monitor ``master``; fields such
    as ``quorum``, ``down-after-milliseconds``, ``failover-timeout``, ``parallel-syncs``.
    """

    def command(self, master: str) -> str:
        return f"{CLI} sentinel SENTINEL MASTER {_safe(master)} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_flat_pairs(output)


class RedisConfigValues(FactBase):
    """``CONFIG GET`` of the given (non-secret) parameters of the local Redis, as strings.

    Empty when Redis does not answer.  Used to converge the settings this deploy owns
    at runtime, since Redis rewrites its own configuration file.
    """

    def command(self, keys: list[str]) -> str:
        return f"{CLI} redis CONFIG GET {' '.join(_safe(k) for k in keys)} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_flat_pairs(output)


def parse_flat_pairs(lines: list[str]) -> dict[str, str]:
    """redis-cli's non-tty rendering of a flat key/value reply: key and value on alternate lines."""
    if lines and (lines[0].startswith("ERR") or lines[0].startswith("NOAUTH") or "refused" in lines[0]):
        return {}
    values = [line.rstrip("\r") for line in lines]
    if len(values) % 2:
        return {}
    return {values[i]: values[i + 1] for i in range(0, len(values), 2)}


# --- rebuilds: blank detection and Sentinel's memory of old identities -----------------------

BOOTSTRAP_EVIDENCE_FILES = (
    "/var/lib/redis/dump.rdb",
    "/var/lib/redis/appendonly.aof",
    "/var/lib/redis/appendonlydir",
)
"""Redis data files: a host holding one of them is never bootstrapped again."""


class RedisBootstrapEvidence(FactBase):
    """What shows that this host's Redis was bootstrapped or holds data: a list of short
    strings, empty on a blank host (see ``ooha.layers.redis.is_blank``).

    ``marker`` (the deploy's bootstrap marker), ``replicaof`` (redis.conf names a primary:
    written at bootstrap or by Sentinel/Redis since), ``rewrite`` (Redis rewrote redis.conf:
    CONFIG REWRITE only happens after a bootstrap), ``data:<path>`` (an RDB/AOF file).
    """

    def command(self, marker: str, conf: str) -> str:
        checks = [
            f"test -e {_safe_path(marker)} && echo marker",
            f"grep -qE '^[[:space:]]*(replicaof|slaveof)[[:space:]]' {_safe_path(conf)} 2>/dev/null && echo replicaof",
            f"grep -q '^# Generated by CONFIG REWRITE' {_safe_path(conf)} 2>/dev/null && echo rewrite",
        ]
        checks += [f"test -e {_safe_path(p)} && echo data:{_safe_path(p)}" for p in BOOTSTRAP_EVIDENCE_FILES]
        return "; ".join(f"{{ {c}; }}" for c in checks) + "; true"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


def _safe_path(path: str) -> str:
    if not path.startswith("/") or not all(c.isalnum() or c in "/._-" for c in path):
        raise ValueError(f"not a plain path: {path!r}")
    return path


SECTION = "--- ooha "
"""Separator of the sections of one address's answer in ``SentinelTopology``."""


def parse_entries(lines: list[str]) -> list[dict[str, str]]:
    """``SENTINEL replicas|sentinels`` in redis-cli's flat rendering: key/value lines, each
    entry starting with ``name``.  Empty on an error or an odd number of lines."""
    values = [line.rstrip("\r") for line in lines if line.strip() != ""]
    if not values or len(values) % 2 or values[0] != "name":
        return []
    entries: list[dict[str, str]] = []
    for i in range(0, len(values), 2):
        key, value = values[i], values[i + 1]
        if key == "name":
            entries.append({})
        entries[-1][key] = value
    return entries


def parse_topology(lines: list[str]) -> dict[str, Any]:
    """One address's sections (see ``SentinelTopology``) as a dict."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        if line.startswith(SECTION):
            current = line[len(SECTION):].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    myid = [line.strip() for line in sections.get("myid", []) if line.strip()]
    run_id = [line.strip().partition(":")[2] for line in sections.get("redis", []) if line.startswith("run_id:")]
    role = [line.strip().partition(":")[2] for line in sections.get("redis", []) if line.startswith("role:")]
    followed = [line.strip().partition(":")[2] for line in sections.get("redis", []) if line.startswith("master_host:")]
    flags = parse_flat_pairs(sections.get("master", [])).get("flags", "")
    return {
        "myid": myid[0] if len(myid) == 1 and all(c in "0123456789abcdef" for c in myid[0]) and len(myid[0]) == 40 else None,
        "primary": parse_master_addr(sections.get("primary", [])),
        "master_flags": flags,
        "replicas": parse_entries(sections.get("replicas", [])),
        "sentinels": parse_entries(sections.get("sentinels", [])),
        "redis_run_id": run_id[0] if run_id else None,
        "redis_role": role[0] if role else None,
        "redis_master_host": followed[0] if followed else None,
    }


class SentinelTopology(FactBase):
    """Every address's Sentinel and Redis as the rebuild logic needs them, asked from this host.

    ``{address: {"myid", "primary", "master_flags", "replicas", "sentinels", "redis_run_id",
    "redis_role", "redis_master_host"}}``: the Sentinel's own id (None: it does not answer), the primary it names,
    its flags for the master, the replicas and the other Sentinels it remembers (each a dict
    of SENTINEL REPLICAS/SENTINELS fields: ``ip``, ``port``, ``runid``, ``flags``...), and the
    run id, role and followed primary (``redis_master_host``) of the Redis at that address.
    """

    def command(self, addresses: list[str], master: str) -> str:
        m = _safe(master)
        parts = [
            ("myid", "sentinel", "SENTINEL myid"),
            ("primary", "sentinel", f"SENTINEL get-master-addr-by-name {m}"),
            ("master", "sentinel", f"SENTINEL master {m}"),
            ("replicas", "sentinel", f"SENTINEL replicas {m}"),
            ("sentinels", "sentinel", f"SENTINEL sentinels {m}"),
            ("redis", "redis", "INFO server replication"),
        ]
        body = "; ".join(
            f"echo '{SECTION}{name}'; {CLI} {kind} -h \"$a\" {args} 2>&1 || true" for name, kind, args in parts
        )
        quoted = " ".join(_safe(a) for a in addresses)
        return f"for a in {quoted}; do echo '{MARK}'\"$a\"; {body}; done"

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return {addr: parse_topology(lines) for addr, lines in split_per_address(output).items()}
