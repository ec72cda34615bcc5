"""The rollout lock, the journals and the release ledger, kept in the cluster (database ``ooha_ops``).

Why in PostgreSQL (docs/architecture.md "Lock", "Journal", "Release ledger"): the lock, the
journal and the ledger then change together in one transaction, survive the controller, are the
same for every operator and are in the pgBackRest backups.  The database and its tables are made
by the postgres layer (``ooha.layers.postgres.ops_database``, templates/postgres/ooha_ops.sql).

How: ``psql`` as the postgres OS user over the local socket of the current Patroni leader, through
the pyinfra CLI's own connections (``remote.run``).  Every script goes on stdin, one transaction
(``psql -1``), and starts with a guard that fails on a member in recovery, so a write can never
land on a replica.  Values are SQL literals built here: text and JSON as dollar-quoted strings
with a random tag that provably does not close early (:func:`dollar_quote`), numbers from
``repr`` (exact round trip), so nothing the operator or the journal says is ever in argv or able
to break out of its literal.

Failover: the leader is found through Patroni's ``GET /primary`` (200 only on the running primary
that holds the leader key), cached, and found again after any failure; a failing call is retried
for ``retry_window_s`` (30 s: a Patroni failover here takes ~14 s), so a PostgreSQL failover during
a rollout does not kill the driver.  Every write is safe to repeat (a retry after a commit whose
answer was lost finds its own token, or writes the same values again).

Fencing: every write of the holder is conditional on its token (``WHERE token = <mine>``); 0 rows
= the lock was broken (:class:`ooha.rollout.lock.LockLost`).  Taking the lock: read the row,
decide with the pure ``decide_acquire``, then ONE statement writes the lock row and the rollout row
only if the lock row is still the one decided on (compare-and-set on token and heartbeat; the
primary key serialises two takers of a free lock), else read and decide again.  Same outcome as
deciding inside a ``SELECT ... FOR UPDATE`` transaction, without holding a transaction open
across SSH round trips.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any, Callable

from ooha.contract import CONTRACT_DEFAULTS
from ooha.facts.ooha_ops import OPS_DATABASE, OPS_SCHEMA_COMMENT, OPS_TABLES
from ooha.rollout.journal import OPEN, Journal
from ooha.rollout.ledger import NodeRelease, RolloutRecord, rollout_record
from ooha.rollout.live import remote
from ooha.rollout.lock import LockDecision, LockLost, LockRecord, decide_acquire
from ooha.settings import setting

ATTEMPT_TIMEOUT_S = 15
"""One psql call (a sync commit waits for the standby; longer = the leader is going away)."""
RETRY_WINDOW_S = 30.0
"""How long a failing call is retried on the (re-found) leader: a failover takes ~14 s here."""
RETRY_PAUSE_S = 1.0
ACQUIRE_ROUNDS = 5
"""Read-decide-write rounds when the lock row keeps changing between the read and the write."""

PSQL = (f"runuser -u postgres -- psql -h /var/run/postgresql -X -q -A -t -v ON_ERROR_STOP=1 -1 "
        f"-d {OPS_DATABASE} -f -")
"""The command: constant; the SQL (with every value) is on stdin."""

GUARD = ("DO $ooha_guard$BEGIN IF pg_is_in_recovery() THEN "
         "RAISE EXCEPTION 'ooha-store: not the leader (in recovery)'; END IF; END$ooha_guard$;")
"""First statement of every script: a replica (a stale leader cache) fails, never answers."""
SETTINGS = "SET LOCAL lock_timeout = '10s';"

FIX = "fix: run the main job on the postgres hosts (pyinfra INVENTORY deploys/ha.py), which creates it"

_TRANSIENT = ("not the leader", "read-only transaction", "in recovery", "starting up", "shutting down",
              "terminating connection", "server closed the connection", "connection to server", "could not connect",
              "lock timeout", "canceling statement", "could not serialize", "deadlock detected", "no connection")


class StoreError(RuntimeError):
    """The store could not be read or written (after retries): the driver stops and says why."""


# --- SQL literals (pure) ----------------------------------------------------------------------


def closes_only_at_end(value: str, tag: str) -> bool:
    """True when ``$tag$value$tag$`` ends exactly at the closing tag: the lexer takes the FIRST
    ``$tag$`` after the opening one, so the tag must not occur in the value, nor straddle the
    end (a value ending in ``$tag`` would close one character early)."""
    delimiter = f"${tag}$"
    return (value + delimiter).find(delimiter) == len(value)


def dollar_quote(value: str, token: Callable[[int], str] = secrets.token_hex) -> str:
    """``value`` as a dollar-quoted literal with a random tag checked not to collide."""
    if "\x00" in value:
        raise ValueError("PostgreSQL text cannot hold a NUL character")
    while True:
        tag = f"ooha_{token(6)}"
        if closes_only_at_end(value, tag):
            return f"${tag}${value}${tag}$"


def literal(value: Any) -> str:
    """A SQL literal: NULL, boolean, exact number, text (dollar-quoted) or jsonb (dict/list)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return f"'{value!r}'::double precision"  # repr: the shortest text that reads back as the same double
    if isinstance(value, str):
        return dollar_quote(value)
    if isinstance(value, (dict, list, tuple)):
        return f"{dollar_quote(json.dumps(value, sort_keys=True))}::jsonb"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def script(*statements: str) -> str:
    """One transaction's text for ``psql -1 -f -``: the leader guard, then ``statements``.

    The last statement must SELECT exactly one jsonb value: that line is the answer.
    """
    return "\n".join((GUARD, SETTINGS, *statements)) + "\n"


def phase_label(journal: Journal) -> str:
    """What the lock row's ``phase`` says while a journal is saved: ``drain ds2`` / ``preflight``."""
    return " ".join(filter(None, (journal.phase.value, ",".join(journal.current_nodes()))))


# --- statements (pure) ------------------------------------------------------------------------


def _rollout_upsert(journal: Journal, source: str) -> str:
    """INSERT the rollout row of ``journal`` for each row of ``source`` (a CTE: the lock write),
    replacing it if it exists; the earliest ``started`` is kept (a resume restarts no clock)."""
    rec = rollout_record(journal)
    values = ", ".join(literal(v) for v in (rec.rollout_id, rec.kind, rec.target.to_dict(), rec.outcome,
                                            float(rec.started), None if rec.ended is None else float(rec.ended),
                                            rec.who, rec.reason, journal.to_dict()))
    return (f"INSERT INTO rollout (rollout_id, kind, target, status, started, ended, who, reason, journal) "
            f"SELECT {values} FROM {source} "
            "ON CONFLICT (rollout_id) DO UPDATE SET kind = EXCLUDED.kind, target = EXCLUDED.target, "
            "status = EXCLUDED.status, started = LEAST(rollout.started, EXCLUDED.started), ended = EXCLUDED.ended, "
            "who = EXCLUDED.who, reason = EXCLUDED.reason, journal = EXCLUDED.journal RETURNING 1")


def sql_lock() -> str:
    return script("SELECT coalesce((SELECT to_jsonb(l) - 'id' FROM rollout_lock l WHERE id), 'null'::jsonb);")


def sql_acquire(record: LockRecord, journal: Journal, expected: LockRecord | None) -> str:
    """Write the lock row and the journal's rollout row, only if the lock row is still ``expected``
    (None: absent).  Answers ``{"lock": 0|1, "rollout": 0|1}``; 0 = it changed, decide again."""
    columns = ("rollout_id", "token", "holder", "pid", "command", "acquired_at", "heartbeat_at", "stale_after_s", "phase")
    row = record.to_dict()
    values = ", ".join(literal(float(row[c]) if c.endswith(("_at", "_s")) else row[c]) for c in columns)
    if expected is None:
        still = "false"  # a row appeared since the read: not the one decided on
    else:
        still = (f"rollout_lock.token = {literal(expected.token)} "
                 f"AND rollout_lock.heartbeat_at = {literal(float(expected.heartbeat_at))}")
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    return script(
        f"WITH l AS (INSERT INTO rollout_lock (id, {', '.join(columns)}) VALUES (true, {values}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {still} RETURNING 1), "
        f"r AS ({_rollout_upsert(journal, 'l')}) "
        "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l), 'rollout', (SELECT count(*) FROM r));")


def _fenced_lock_update(token: str, phase: str, now: float) -> str:
    return (f"UPDATE rollout_lock SET heartbeat_at = {literal(float(now))}, phase = {literal(phase)} "
            f"WHERE id AND token = {literal(token)} RETURNING 1")


def sql_save(journal: Journal, token: str, now: float) -> str:
    """Heartbeat + phase of the lock AND the rollout row, both only while ``token`` holds the lock."""
    return script(
        f"WITH l AS ({_fenced_lock_update(token, phase_label(journal), now)}), "
        f"r AS ({_rollout_upsert(journal, 'l')}) "
        "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l), 'rollout', (SELECT count(*) FROM r));")


def sql_heartbeat(token: str, phase: str, now: float) -> str:
    return script(f"WITH l AS ({_fenced_lock_update(token, phase, now)}) "
                  "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l));")


def sql_release(token: str) -> str:
    return script(f"WITH l AS (DELETE FROM rollout_lock WHERE id AND token = {literal(token)} RETURNING 1) "
                  "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l));")


def _open_statuses() -> str:
    return ", ".join(literal(s.value) for s in sorted(OPEN, key=lambda s: s.value))


def sql_open_journal() -> str:
    return script(f"SELECT coalesce((SELECT journal FROM rollout WHERE status IN ({_open_statuses()}) "
                  "ORDER BY started DESC, rollout_id DESC LIMIT 1), 'null'::jsonb);")


def sql_journal(rollout_id: str) -> str:
    return script(f"SELECT coalesce((SELECT journal FROM rollout WHERE rollout_id = {literal(rollout_id)}), 'null'::jsonb);")


def sql_records(limit: int) -> str:
    return script("SELECT coalesce(jsonb_agg(journal ORDER BY started DESC, rollout_id DESC), '[]'::jsonb) FROM "
                  f"(SELECT journal, started, rollout_id FROM rollout ORDER BY started DESC, rollout_id DESC "
                  f"LIMIT {max(0, int(limit))}) s;")


def sql_releases() -> str:
    return script("SELECT coalesce(jsonb_agg(to_jsonb(n) ORDER BY node), '[]'::jsonb) FROM node_release n;")


def sql_put_releases(rows: list[NodeRelease], token: str | None) -> str:
    """Upsert ``rows`` (one per node, the last wins); with ``token`` only while it holds the lock.
    Answers ``{"lock": 0|1, "rows": n}``."""
    by_node = {row.node: row.to_dict() for row in rows}
    fence = (f"SELECT 1 FROM rollout_lock WHERE id AND token = {literal(token)} FOR UPDATE" if token is not None
             else "SELECT 1")
    return script(
        f"WITH l AS ({fence}), "
        "w AS (INSERT INTO node_release (node, current, since, rollout_id, previous, healthy_verified, previous_verified) "
        "SELECT r.node, r.current, r.since, r.rollout_id, NULLIF(r.previous, 'null'::jsonb), r.healthy_verified, "
        "coalesce(r.previous_verified, false) "
        f"FROM jsonb_to_recordset({literal(list(by_node.values()))}) AS r(node text, current jsonb, "
        "since double precision, rollout_id text, previous jsonb, healthy_verified boolean, previous_verified boolean) "
        "WHERE EXISTS (SELECT 1 FROM l) "
        "ON CONFLICT (node) DO UPDATE SET current = EXCLUDED.current, since = EXCLUDED.since, "
        "rollout_id = EXCLUDED.rollout_id, previous = EXCLUDED.previous, healthy_verified = EXCLUDED.healthy_verified, "
        "previous_verified = EXCLUDED.previous_verified "
        "RETURNING 1) "
        "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l), 'rows', (SELECT count(*) FROM w));")


def sql_drop_releases(nodes: list[str], token: str) -> str:
    """Delete the ledger rows of ``nodes`` (retired by scale-in), only while ``token`` holds the lock.
    Answers ``{"lock": 0|1, "rows": n}``."""
    fence = f"SELECT 1 FROM rollout_lock WHERE id AND token = {literal(token)} FOR UPDATE"
    return script(
        f"WITH l AS ({fence}), "
        f"w AS (DELETE FROM node_release WHERE node = ANY (SELECT jsonb_array_elements_text({literal(list(nodes))})) "
        "AND EXISTS (SELECT 1 FROM l) RETURNING 1) "
        "SELECT jsonb_build_object('lock', (SELECT count(*) FROM l), 'rows', (SELECT count(*) FROM w));")


def sql_ready() -> str:
    return script("SELECT jsonb_build_object("
                  "'tables', (SELECT coalesce(jsonb_agg(tablename ORDER BY tablename), '[]'::jsonb) FROM pg_tables "
                  "WHERE schemaname = 'public'), "
                  "'comment', (SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                  "WHERE datname = current_database()));")


def answer(stdout: str) -> Any:
    """The script's answer: the last non-empty line, one jsonb value."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise StoreError("psql answered nothing")
    return json.loads(lines[-1])


def transient(why: str) -> bool:
    """Worth retrying on a (re-found) leader: a connection, a failover, a replica, a timeout.
    A missing database or table, or any other SQL error, is not: retrying would not help."""
    text = why.lower()
    if "does not exist" in text:
        return False
    if "error:" in text and "psql: error:" not in text:
        return any(marker in text for marker in _TRANSIENT)
    return True


def not_ready_reason(seen: dict[str, Any]) -> str | None:
    """``ready()``'s verdict on what ``sql_ready`` answered."""
    missing = [t for t in OPS_TABLES if t not in seen.get("tables", [])]
    if missing:
        return f"database {OPS_DATABASE} lacks table(s) {', '.join(missing)}; {FIX}"
    if seen.get("comment") != OPS_SCHEMA_COMMENT:
        return f"database {OPS_DATABASE} has schema {seen.get('comment') or 'none'!r}, not {OPS_SCHEMA_COMMENT!r}; {FIX}"
    return None


# --- the store (I/O) --------------------------------------------------------------------------


class Store:
    """Lock, journals and ledger in ``ooha_ops`` on the Patroni leader among ``postgres_hosts``
    (connected pyinfra Hosts of the postgres group)."""

    def __init__(self, postgres_hosts: list[Any], *, retry_window_s: float = RETRY_WINDOW_S) -> None:
        if not postgres_hosts:
            raise ValueError("the store needs the postgres hosts (none given)")
        self.hosts = list(postgres_hosts)
        self.retry_window_s = retry_window_s
        self._leader: Any = None

    # --- plumbing -----------------------------------------------------------------------------

    def _is_primary(self, host: Any) -> bool:
        port = int(setting(host, "patroni_rest_port", CONTRACT_DEFAULTS))
        result = remote.run(host, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 http://127.0.0.1:{port}/primary",
                            timeout=10, sudo=False)
        return result.ok and result.stdout.strip() == "200"

    def leader(self) -> Any | None:
        """The Patroni leader's Host (cached; found again when the cache was dropped), or None."""
        if self._leader is None:
            self._leader = next((h for h in self.hosts if self._is_primary(h)), None)
        return self._leader

    def _call(self, sql: str) -> Any:
        """Run one script on the leader and return its answer; retry a transient failure on the
        re-found leader for ``retry_window_s``; raise StoreError otherwise."""
        deadline = time.monotonic() + self.retry_window_s
        last = ""
        while True:
            host = self.leader()
            if host is None:
                last = "no postgres host answers as the running Patroni primary (a failover in progress?)"
            else:
                result = remote.run(host, PSQL, stdin=sql, timeout=ATTEMPT_TIMEOUT_S)
                if result.ok:
                    return answer(result.stdout)
                why = result.why()
                self._leader = None
                if not transient(why):
                    raise StoreError(f"{OPS_DATABASE} on {host.name}: {why}")
                last = f"{host.name}: {why}"
            if time.monotonic() >= deadline:
                raise StoreError(f"{OPS_DATABASE}: no answer within {self.retry_window_s:.0f} s ({last})")
            time.sleep(RETRY_PAUSE_S)  # pacing between attempts while Patroni elects a leader

    # --- readiness ------------------------------------------------------------------------------

    def ready(self) -> str | None:
        """None when ``ooha_ops`` exists with its tables at this schema version; else why and the fix."""
        try:
            seen = self._call(sql_ready())
        except StoreError as error:
            if "does not exist" in str(error):
                return f"database {OPS_DATABASE} does not exist; {FIX}"
            return f"database {OPS_DATABASE} cannot be read: {error}"
        return not_ready_reason(seen)

    # --- lock ---------------------------------------------------------------------------------

    def lock(self) -> LockRecord | None:
        row = self._call(sql_lock())
        return LockRecord.from_dict(row) if row else None

    def acquire(self, record: LockRecord, journal: Journal, now: float, break_id: str | None = None) -> LockDecision:
        """Take the lock for ``record`` and store ``journal`` with it, atomically, or refuse (why).

        Decided by the pure ``decide_acquire`` on the row as read; written only if the row is still
        that one (else read and decide again).  Finding our own token = an earlier attempt whose
        answer was lost did commit.
        """
        for _ in range(ACQUIRE_ROUNDS):
            existing = self.lock()
            if existing is not None and existing.token == record.token:
                return LockDecision("acquire", f"rollout lock already held by this run (rollout {record.rollout_id})")
            decision = decide_acquire(existing, now, break_id)
            if decision.action == "refuse":
                return decision
            written = self._call(sql_acquire(record, journal, existing))
            if written["lock"] == 1:
                return decision
        return LockDecision("refuse", f"the rollout lock changed while this run tried to take it, {ACQUIRE_ROUNDS} "
                                      "times; fix: look at who else runs a rollout, then rerun")

    def save(self, journal: Journal, token: str, now: float) -> None:
        """Store ``journal`` and heartbeat the lock with its phase; LockLost if ``token`` lost the lock."""
        if self._call(sql_save(journal, token, now))["lock"] != 1:
            raise LockLost(self._lost_message(now))

    def heartbeat(self, token: str, phase: str, now: float) -> None:
        if self._call(sql_heartbeat(token, phase, now))["lock"] != 1:
            raise LockLost(self._lost_message(now))

    def release(self, token: str) -> None:
        """Free the lock if ``token`` still holds it (a broken lock is someone else's now)."""
        self._call(sql_release(token))

    def _lost_message(self, now: float) -> str:
        try:
            holder = self.lock()
        except StoreError:
            holder = None
        if holder is None:
            return "the rollout lock was broken (no lock is held now): this run stops before the next wave"
        return (f"the rollout lock now belongs to rollout {holder.rollout_id} ({holder.holder}, pid {holder.pid}): "
                "this run stops before the next wave")

    # --- journals -----------------------------------------------------------------------------

    def open_journal(self) -> Journal | None:
        """The newest rollout whose status is open (running/interrupted): what a rerun resumes."""
        row = self._call(sql_open_journal())
        return Journal.from_dict(row) if row else None

    def journal(self, rollout_id: str) -> Journal | None:
        row = self._call(sql_journal(rollout_id))
        return Journal.from_dict(row) if row else None

    def records(self, limit: int = 50) -> list[RolloutRecord]:
        """The newest ``limit`` rollouts, newest first (the audit trail)."""
        return [rollout_record(Journal.from_dict(row)) for row in self._call(sql_records(limit))]

    # --- release ledger -------------------------------------------------------------------------

    def releases(self) -> list[NodeRelease]:
        return [NodeRelease.from_dict(row) for row in self._call(sql_releases())]

    def put_releases(self, rows: list[NodeRelease], token: str | None) -> None:
        """Upsert the nodes' rows; with ``token``, only while it holds the lock (else LockLost)."""
        if not rows and token is None:
            return
        written = self._call(sql_put_releases(rows, token))
        if token is not None and written["lock"] != 1:
            raise LockLost("the rollout lock was broken before the release ledger was written: this run stops")

    def drop_releases(self, nodes: list[str], token: str) -> None:
        """Remove retired nodes' rows from the release ledger (the rollout row keeps the event)."""
        written = self._call(sql_drop_releases(nodes, token))
        if written["lock"] != 1:
            raise LockLost("the rollout lock was broken before the release ledger was written: this run stops")
