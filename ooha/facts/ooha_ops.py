"""The ``ooha_ops`` database: its name, its tables, its schema file, and the fact that reads it.

Why a database of its own (docs/architecture.md "Lock", "Journal", "Release ledger"): the
rollout lock, the journals and the release ledger must survive the loss of any controller, be
the same for every operator, change together in one transaction, and be in the pgBackRest
backups.  The postgres layer creates it on the Patroni leader (``ooha.layers.postgres.
ops_database``); the rollout driver reads and writes it (``ooha.rollout.live.store``).  Both
take the names from here so that "the database is ready" means the same thing to both.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from ooha.templating import TEMPLATES

OPS_DATABASE = "ooha_ops"
OPS_TABLES = ("rollout_lock", "rollout", "node_release")
OPS_SCHEMA_FILE = TEMPLATES / "postgres" / "ooha_ops.sql"
OPS_SCHEMA_VERSION = 2
OPS_SCHEMA_COMMENT = f"ooha_ops schema {OPS_SCHEMA_VERSION}"
"""Written by the schema file (COMMENT ON DATABASE) as its last statement: a database whose
comment differs gets the (idempotent) schema file again, the way a later version adds columns."""

_SEP = "|"
_MARK = "----ooha-ops-tables----"


def schema_sql() -> str:
    """The schema file's text (idempotent: CREATE ... IF NOT EXISTS, then the version comment)."""
    return OPS_SCHEMA_FILE.read_text()


class OohaOpsSchema(FactBase):
    """The ``ooha_ops`` database in the local PostgreSQL (needs root; read on the leader).

    ``None`` when PostgreSQL does not answer on its socket; else ``{"db_exists", "comment"
    (the schema version comment or None), "tables" (sorted names in schema public),
    "in_recovery"}``.
    """

    def command(self, database: str = OPS_DATABASE) -> str:
        head = ("select coalesce((select datname from pg_database where datname = :'d'), ''),"
                " coalesce((select shobj_description(oid, 'pg_database') from pg_database where datname = :'d'), ''),"
                " pg_is_in_recovery()::text")
        tables = "select coalesce(string_agg(tablename, ',' order by tablename), '') from pg_tables where schemaname = 'public'"
        psql = f"runuser -u postgres -- psql -h /var/run/postgresql -XAtq -F '{_SEP}'"
        return (
            "command -v psql >/dev/null || exit 0; "
            f"echo {shlex.quote(head)} | {psql} -v d={shlex.quote(database)} 2>/dev/null || exit 0; "
            f"echo {shlex.quote(_MARK)}; "
            f"echo {shlex.quote(tables)} | {psql} -d {shlex.quote(database)} 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_ops_schema(output)


def parse_ops_schema(lines: list[str]) -> dict[str, Any] | None:
    """Parse OohaOpsSchema's output (kept apart for unit tests)."""
    head = [line for line in lines if line.count(_SEP) == 2]
    if not head:
        return None
    db, comment, recovery = head[0].split(_SEP)
    after = lines[lines.index(_MARK) + 1:] if _MARK in lines else []
    names = next((line for line in after if line.strip()), "")
    return {
        "db_exists": bool(db),
        "comment": comment or None,
        "tables": sorted(n for n in names.strip().split(",") if n),
        "in_recovery": recovery == "true",
    }


def schema_missing(objects: dict[str, Any]) -> list[str]:
    """What the schema file must (re)make: the database, missing tables, an older version."""
    if not objects["db_exists"]:
        return [f"database {OPS_DATABASE}"]
    missing = [f"table {t}" for t in OPS_TABLES if t not in objects["tables"]]
    if objects["comment"] != OPS_SCHEMA_COMMENT:
        missing.append(f"schema version {OPS_SCHEMA_VERSION} (found {objects['comment'] or 'none'})")
    return missing
