"""Facts for the PostgreSQL layer: the Patroni cluster as its members report it, Patroni's
dynamic (DCS) configuration, and the Document Server role and database in PostgreSQL."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

# Runs on the host (python3 is a base package): /cluster from the local Patroni, then
# each member's own /patroni, so a member that believes it is primary is seen even when
# the DCS names another leader (split brain shows as two leaders).
_CLUSTER_SCRIPT = r"""
import json, sys, urllib.request
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return json.load(r)
    except Exception as e:
        try:
            return json.load(e)  # Patroni answers 503 with a JSON body on some endpoints
        except Exception:
            return None
base = sys.argv[1]
cluster = get(base + "/cluster")
local = get(base + "/patroni")
status = {}
for m in (cluster or {}).get("members", []):
    if m.get("api_url"):
        status[m["name"]] = get(m["api_url"].rsplit("/", 1)[0] + "/patroni")
print(json.dumps({"cluster": cluster, "local": local, "status": status}))
"""


class PatroniCluster(FactBase):
    """The Patroni cluster seen from this host's REST API.

    ``None`` when the local Patroni does not answer; else a dict:
    ``leader`` (DCS leader name or None), ``members`` (list of ``name``, ``role``
    (leader / sync_standby / replica), ``state``, ``host``, ``timeline``, ``lag``
    (bytes, None when unknown), ``self_role`` (what the member itself reports:
    master/primary/replica, None if unreachable), ``streaming`` (True when the leader
    lists it in pg_stat_replication as streaming)), ``local`` (this member's name,
    role, state, timeline), ``primaries`` (members that report themselves primary),
    ``sync_standbys`` (names).
    """

    def command(self, address: str = "127.0.0.1", port: int = 8008) -> str:
        url = f"http://{address}:{int(port)}"
        return f"python3 -c {shlex.quote(_CLUSTER_SCRIPT)} {shlex.quote(url)} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_patroni_cluster("\n".join(output))


def _lag(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def parse_patroni_cluster(text: str) -> dict[str, Any] | None:
    """Turn the script's JSON into PatroniCluster's value (kept apart for unit tests)."""
    try:
        raw = json.loads(text or "null")
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("cluster"), dict):
        return None
    status: dict[str, Any] = raw.get("status") or {}
    members = raw["cluster"].get("members") or []
    leader = next((m["name"] for m in members if m.get("role") in ("leader", "master", "standby_leader")), None)
    streaming: set[str] = set()
    if leader and isinstance(status.get(leader), dict):
        for rep in status[leader].get("replication") or []:
            if rep.get("state") == "streaming":
                streaming.add(rep.get("application_name"))
    out_members = []
    for m in members:
        own = status.get(m["name"]) if isinstance(status.get(m["name"]), dict) else None
        out_members.append(
            {
                "name": m["name"],
                "role": m.get("role"),
                "state": m.get("state"),
                "host": m.get("host"),
                "timeline": m.get("timeline") or (own or {}).get("timeline"),
                "lag": _lag(m.get("lag")) if m.get("role") not in ("leader", "master") else 0,
                "self_role": (own or {}).get("role"),
                "streaming": m["name"] in streaming,
            }
        )
    local = raw.get("local") or {}
    return {
        "leader": leader,
        "members": out_members,
        "local": {
            "name": (local.get("patroni") or {}).get("name") or local.get("name"),
            "role": local.get("role"),
            "state": local.get("state"),
            "timeline": local.get("timeline"),
        },
        "primaries": sorted(m["name"] for m in out_members if m["self_role"] in ("master", "primary")),
        "sync_standbys": sorted(m["name"] for m in out_members if m["role"] == "sync_standby"),
    }


class PatroniDynamicConfig(FactBase):
    """Patroni's dynamic configuration (``GET /config``: what is stored in the DCS), or None."""

    def command(self, address: str = "127.0.0.1", port: int = 8008) -> str:
        return f"curl -sf --max-time 5 http://{shlex.quote(address)}:{int(port)}/config || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        try:
            value = json.loads("\n".join(output) or "null")
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


_SEP = "|"


class PostgresDsObjects(FactBase):
    """The Document Server role and database in the local PostgreSQL (needs root).

    ``None`` when PostgreSQL does not answer on its socket; else ``{"role_exists",
    "can_login", "verifier" (the stored SCRAM verifier, compared on the controller,
    never printed), "db_exists", "db_owner", "in_recovery"}``.
    """

    def command(self, role: str, database: str) -> str:
        sql = (
            "select coalesce((select rolname from pg_authid where rolname = :'r'), ''),"
            " coalesce((select rolcanlogin::text from pg_authid where rolname = :'r'), ''),"
            " coalesce((select rolpassword from pg_authid where rolname = :'r'), ''),"
            " coalesce((select datname from pg_database where datname = :'d'), ''),"
            " coalesce((select pg_get_userbyid(datdba) from pg_database where datname = :'d'), ''),"
            " pg_is_in_recovery()::text"
        )
        return (
            "command -v psql >/dev/null || exit 0; "
            f"echo {shlex.quote(sql)} | runuser -u postgres -- psql -h /var/run/postgresql -XAtq -F '{_SEP}' "
            f"-v r={shlex.quote(role)} -v d={shlex.quote(database)} 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_ds_objects(output)


def parse_ds_objects(lines: list[str]) -> dict[str, Any] | None:
    """Parse PostgresDsObjects' single row."""
    rows = [line for line in lines if line.count(_SEP) == 5]
    if not rows:
        return None
    role, login, verifier, db, owner, recovery = rows[0].split(_SEP)
    return {
        "role_exists": bool(role),
        "can_login": login == "true",
        "verifier": verifier or None,
        "db_exists": bool(db),
        "db_owner": owner or None,
        "in_recovery": recovery == "true",
    }
