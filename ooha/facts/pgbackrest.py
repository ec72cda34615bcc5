"""Facts for the backup layer: the pgBackRest repository (``pgbackrest info``) and the
local PostgreSQL's WAL archiver (``pg_stat_archiver`` and the ``.ready`` files waiting)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra.api import FactBase

# pgbackrest info's stanza status codes (2.45, doc "info command"):
STATUS_OK = 0
STATUS_MISSING_STANZA = 1
STATUS_NO_BACKUP = 2
STATUS_MISSING_STANZA_DATA = 3
STATUS_OTHER = 99


class PgBackRestInfo(FactBase):
    """The stanza as ``pgbackrest --output=json info`` reports it, run as postgres.

    ``None`` when pgBackRest is not installed or printed nothing; else a dict from
    ``parse_pgbackrest_info``.
    """

    def command(self, stanza: str, timeout: int = 45) -> str:
        # An unreachable S3 endpoint makes pgBackRest 2.45 retry for minutes: bound it, and
        # say so (a ``timeout`` line) instead of printing nothing.
        return (
            "command -v pgbackrest >/dev/null || exit 0; "
            f"runuser -u postgres -- timeout {int(timeout)} pgbackrest --stanza={shlex.quote(stanza)} "
            f"--output=json info 2>/dev/null; [ $? = 124 ] && echo 'timeout {int(timeout)}'; true"
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        timed_out = next((line for line in output if line.startswith("timeout ")), None)
        if timed_out:
            return unanswered_info(int(timed_out.split()[1]))
        return parse_pgbackrest_info("\n".join(output))


def unanswered_info(seconds: int) -> dict[str, Any]:
    """PgBackRestInfo's value when ``pgbackrest info`` did not answer in time."""
    return {"name": None, "status_code": STATUS_OTHER, "status_message": "no answer", "cipher": None,
            "repo_errors": [f"pgbackrest info gave no answer within {seconds} s"], "backups": [],
            "archive_min": None, "archive_max": None}


def _backup(raw: dict[str, Any]) -> dict[str, Any]:
    timestamp = raw.get("timestamp") or {}
    info = raw.get("info") or {}
    repository = info.get("repository") or {}
    archive = raw.get("archive") or {}
    return {
        "label": raw.get("label"),
        "type": raw.get("type"),
        "start": timestamp.get("start"),
        "stop": timestamp.get("stop"),
        "size": info.get("size"),
        "delta": info.get("delta"),
        "repo_size": repository.get("size"),
        "repo_delta": repository.get("delta"),
        "archive_start": archive.get("start"),
        "archive_stop": archive.get("stop"),
        "error": bool(raw.get("error")),
    }


def parse_pgbackrest_info(text: str) -> dict[str, Any] | None:
    """The first stanza of ``pgbackrest --output=json info`` as a flat dict.

    Keys: ``status_code``/``status_message`` (stanza status), ``repo_errors`` (list of
    messages of repositories whose status is not OK: unreachable S3, bad key...),
    ``backups`` (oldest first: label, type full/diff/incr, start/stop unix times,
    size/delta/repo_size/repo_delta bytes, archive_start/stop WAL names, error),
    ``archive_min``/``archive_max`` (WAL range in the repository), ``cipher``.
    """
    try:
        raw = json.loads(text or "null")
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], dict):
        return None
    stanza = raw[0]
    status = stanza.get("status") or {}
    repo_errors = []
    for repo in stanza.get("repo") or []:
        repo_status = repo.get("status") or {}
        # Missing stanza / no backup yet are states of a reachable repository, not errors.
        if repo_status.get("code") not in (STATUS_OK, STATUS_MISSING_STANZA, STATUS_NO_BACKUP, None):
            repo_errors.append(str(repo_status.get("message") or f"code {repo_status.get('code')}"))
    archives = [a for a in stanza.get("archive") or [] if isinstance(a, dict)]
    return {
        "name": stanza.get("name"),
        "status_code": status.get("code"),
        "status_message": status.get("message"),
        "repo_errors": repo_errors,
        "cipher": stanza.get("cipher"),
        "backups": [_backup(b) for b in stanza.get("backup") or [] if isinstance(b, dict)],
        "archive_min": min((a.get("min") for a in archives if a.get("min")), default=None),
        "archive_max": max((a.get("max") for a in archives if a.get("max")), default=None),
    }


_ARCHIVER_SQL = (
    "select pg_is_in_recovery()::text, current_setting('archive_mode'),"
    " coalesce(last_archived_wal, ''), coalesce(extract(epoch from last_archived_time)::bigint::text, ''),"
    " coalesce(last_failed_wal, ''), coalesce(extract(epoch from last_failed_time)::bigint::text, ''),"
    " archived_count, failed_count, extract(epoch from now())::bigint,"
    " case when pg_is_in_recovery() then '' else pg_walfile_name(pg_current_wal_lsn()) end"
    " from pg_stat_archiver"
)
_FIELDS = ("in_recovery", "archive_mode", "last_archived_wal", "last_archived_time", "last_failed_wal",
           "last_failed_time", "archived_count", "failed_count", "now", "current_wal")


class PgArchiver(FactBase):
    """The local PostgreSQL's WAL archiving (needs root: reads pg_wal/archive_status).

    ``None`` when PostgreSQL does not answer; else a dict: ``in_recovery``,
    ``archive_mode``, ``last_archived_wal``/``last_archived_time``,
    ``last_failed_wal``/``last_failed_time`` (unix seconds or None), ``archived_count``,
    ``failed_count``, ``now`` (server time), ``current_wal`` (primary only),
    ``ready`` (WAL files waiting for archive_command) and ``oldest_ready_age`` (seconds
    the oldest of them has waited, None if none).
    """

    def command(self, data_dir: str) -> str:
        status = shlex.quote(f"{data_dir}/pg_wal/archive_status")
        return (
            "command -v psql >/dev/null || exit 0; "
            f"echo {shlex.quote(_ARCHIVER_SQL)} | runuser -u postgres -- psql -h /var/run/postgresql "
            "-XAtq -F '|' 2>/dev/null | sed 's/^/row|/'; "
            f"echo \"ready|$(find {status} -name '*.ready' 2>/dev/null | wc -l)"
            f"|$(find {status} -name '*.ready' -printf '%T@\\n' 2>/dev/null | sort -n | head -n1)|$(date +%s)\""
        )

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_archiver(output)


def _int(value: str) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_archiver(lines: list[str]) -> dict[str, Any] | None:
    """Parse PgArchiver's output (a ``row|...`` line and a ``ready|count|oldest|now`` line)."""
    row = next((line.split("|")[1:] for line in lines if line.startswith("row|")), None)
    if not row or len(row) != len(_FIELDS):
        return None
    values = dict(zip(_FIELDS, row))
    result: dict[str, Any] = {
        "in_recovery": values["in_recovery"] == "true",
        "archive_mode": values["archive_mode"],
        "last_archived_wal": values["last_archived_wal"] or None,
        "last_archived_time": _int(values["last_archived_time"]),
        "last_failed_wal": values["last_failed_wal"] or None,
        "last_failed_time": _int(values["last_failed_time"]),
        "archived_count": _int(values["archived_count"]) or 0,
        "failed_count": _int(values["failed_count"]) or 0,
        "now": _int(values["now"]),
        "current_wal": values["current_wal"] or None,
        "ready": 0,
        "oldest_ready_age": None,
    }
    ready = next((line.split("|")[1:] for line in lines if line.startswith("ready|")), None)
    if ready and len(ready) == 3:
        result["ready"] = _int(ready[0]) or 0
        oldest, now = _int(ready[1]), _int(ready[2])
        if result["ready"] and oldest is not None and now is not None:
            result["oldest_ready_age"] = max(0, now - oldest)
    return result
