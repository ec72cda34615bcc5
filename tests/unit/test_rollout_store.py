"""ooha/rollout/live/store.py without a lab: the SQL it composes (literals that cannot break out,
writes fenced by the lock token, nothing in argv) and how it reads/writes the cluster (leader
found again after a failover, LockLost on 0 rows, acquire's compare-and-set), through a fake
``remote.run``."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from ooha.facts.ooha_ops import OPS_SCHEMA_COMMENT, OPS_TABLES, parse_ops_schema, schema_missing, schema_sql
from ooha.rollout import journal as J
from ooha.rollout.ledger import NodeRelease
from ooha.rollout.live import store as S
from ooha.rollout.live.remote import Result
from ooha.rollout.lock import LockLost, LockRecord
from ooha.rollout.release import ImageRef

OLD = ImageRef("onlyoffice/documentserver-ee", "9.0.0")
NEW = ImageRef("onlyoffice/documentserver-ee", "9.0.1")
TOKEN = "tok-3f9a1c"


def _journal(reason: str = "") -> J.Journal:
    journal = J.new_journal("r-20261205-1", "patch", NEW, [["ds1"], ["ds2"]], {"ds1": OLD, "ds2": OLD}, True,
                            "ops@laptop", 1000.25)
    journal.reason = reason
    return journal


def _record(token: str = TOKEN, heartbeat: float = 1000.1) -> LockRecord:
    return LockRecord("r-20261205-1", token, "ops@laptop", 4242, "patch 9.0.1", 1000.1, heartbeat, 300.0, "")


def split_literals(sql: str) -> tuple[list[str], str]:
    """(bodies of the dollar-quoted literals of ``sql``, the text outside them), read the way
    PostgreSQL's lexer does: after ``$tag$``, up to the FIRST ``$tag$`` that follows."""
    bodies, outside, pos = [], [], 0
    while True:
        m = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\$").search(sql, pos)
        if not m:
            return bodies, "".join(outside) + sql[pos:]
        end = sql.index(m.group(0), m.end())
        bodies.append(sql[m.end():end])
        outside.append(sql[pos:m.start()])
        pos = end + len(m.group(0))


def dollar_literals(sql: str) -> list[str]:
    return split_literals(sql)[0]


# --- literals -------------------------------------------------------------------------------


def test_a_tag_never_closes_early() -> None:
    assert S.closes_only_at_end("plain", "ooha_ab")
    assert not S.closes_only_at_end("x $ooha_ab$ y", "ooha_ab")
    assert not S.closes_only_at_end("ends in $ooha_ab", "ooha_ab")  # + "$ooha_ab$" would close one char early
    assert S.closes_only_at_end("$ooha_abc$", "ooha_ab")


def test_dollar_quote_draws_another_tag_on_a_collision() -> None:
    tags = iter(["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    value = "hostile $ooha_aaaaaaaaaaaa$; DROP TABLE rollout; --"
    quoted = S.dollar_quote(value, token=lambda n: next(tags))
    assert quoted == f"$ooha_bbbbbbbbbbbb${value}$ooha_bbbbbbbbbbbb$"
    assert dollar_literals(quoted) == [value]


@pytest.mark.parametrize("value", ["", "$", "$$", "a'b\"c\\d", "line1\nline2", ":var :'x' \\q \\! rm", "$ooha_",
                                   "x$ooha_00", "$ooha_0$", "ünïcode ✓", "--;/* */"])
def test_dollar_quote_round_trips_hostile_text(value: str) -> None:
    # A token generator that keeps suggesting tags the value contains first.
    candidates = itertools.chain(["0", "00"], (f"{i:012x}" for i in itertools.count()))
    assert dollar_literals(S.dollar_quote(value, token=lambda n: next(candidates))) == [value]


def test_literals() -> None:
    assert S.literal(None) == "NULL" and S.literal(True) == "true" and S.literal(7) == "7"
    assert S.literal(1764937700.123456) == "'1764937700.123456'::double precision"
    assert float(S.literal(0.1 + 0.2).split("'")[1]) == 0.1 + 0.2  # repr reads back as the same double
    with pytest.raises(ValueError):
        S.literal(float("inf"))
    with pytest.raises(ValueError):
        S.literal("nul\x00")
    jsonb = S.literal({"b": 1, "a": "it's $x$"})
    assert jsonb.endswith("::jsonb") and json.loads(dollar_literals(jsonb)[0]) == {"a": "it's $x$", "b": 1}


# --- statements -------------------------------------------------------------------------------


def _fence_tokens(sql: str) -> list[str]:
    """The values compared with ``token = `` in ``sql``."""
    return [dollar_literals(m.group(1))[0] for m in re.finditer(r"token = (\$(\w+)\$.*?\$\2\$)", sql, re.S)]


def test_every_holder_write_is_fenced_by_the_token() -> None:
    journal = _journal()
    assert _fence_tokens(S.sql_save(journal, TOKEN, 1001.0)) == [TOKEN]
    assert _fence_tokens(S.sql_heartbeat(TOKEN, "soak ds1", 1001.0)) == [TOKEN]
    assert _fence_tokens(S.sql_release(TOKEN)) == [TOKEN]
    assert _fence_tokens(S.sql_put_releases([], TOKEN)) == [TOKEN]
    assert "rollout_lock" not in S.sql_put_releases([], None)
    # The rollout row is written only for the lock row the fenced UPDATE returned.
    save = S.sql_save(journal, TOKEN, 1001.0)
    assert "FROM l ON CONFLICT (rollout_id)" in save and save.index("UPDATE rollout_lock") < save.index("INSERT INTO rollout ")


def test_acquire_writes_only_over_the_row_it_decided_on() -> None:
    journal = _journal()
    free = S.sql_acquire(_record(), journal, None)
    assert "DO UPDATE SET" in free and "WHERE false RETURNING 1" in free
    held = S.sql_acquire(_record("mine"), journal, _record("theirs", heartbeat=1000.5))
    assert _fence_tokens(held) == ["theirs"] and "rollout_lock.heartbeat_at = '1000.5'::double precision" in held
    assert "FROM l ON CONFLICT (rollout_id)" in held


def test_the_journal_goes_in_whole_and_hostile_text_stays_inside_its_literal() -> None:
    journal = _journal(reason="health failed: '$$; DROP DATABASE ooha_ops; -- \\q")
    sql = S.sql_save(journal, TOKEN, 1001.0)
    bodies, outside = split_literals(sql)
    assert journal.to_dict() in [json.loads(b) for b in bodies if b.startswith("{")]
    # Outside the literals only our own SQL remains: no DROP, no psql backslash command.
    assert "DROP" not in outside and "\\" not in outside


def test_scripts_guard_against_a_replica_and_answer_one_line() -> None:
    for sql in (S.sql_lock(), S.sql_ready(), S.sql_records(5), S.sql_releases(), S.sql_open_journal(), S.sql_journal("x")):
        assert sql.startswith(S.GUARD) and sql.rstrip().endswith(";")
    assert sorted(dollar_literals(S.sql_open_journal())[1:]) == ["failed", "interrupted", "running"]  # failed: host patching
    assert S.answer("\n{\"lock\": 1}\n") == {"lock": 1}
    with pytest.raises(S.StoreError):
        S.answer("")


def test_put_releases_keeps_one_row_per_node() -> None:
    rows = [NodeRelease("ds1", OLD, 1.0, None), NodeRelease("ds1", NEW, 2.0, "r1", OLD, True)]
    sql = S.sql_put_releases(rows, None)
    body = next(json.loads(b) for b in dollar_literals(sql) if b.startswith("["))
    assert body == [rows[1].to_dict()]


def test_transient_failures() -> None:
    assert S.transient("psql:<stdin>:1: ERROR:  ooha-store: not the leader (in recovery)")
    assert S.transient("psql:<stdin>:5: ERROR:  cannot execute INSERT in a read-only transaction")
    assert S.transient('psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed')
    assert S.transient("SSHException: timed out")
    assert not S.transient('psql: error: connection to server failed: FATAL:  database "ooha_ops" does not exist')
    assert not S.transient('psql:<stdin>:3: ERROR:  relation "rollout" does not exist')
    assert not S.transient("psql:<stdin>:3: ERROR:  syntax error at or near \"x\"")


def test_ready_verdicts() -> None:
    assert S.not_ready_reason({"tables": list(OPS_TABLES), "comment": OPS_SCHEMA_COMMENT}) is None
    assert "lacks table(s) node_release" in S.not_ready_reason({"tables": ["rollout", "rollout_lock"],
                                                               "comment": OPS_SCHEMA_COMMENT})
    assert "run the main job" in S.not_ready_reason({"tables": list(OPS_TABLES), "comment": None})


def test_schema_file_and_the_layers_fact() -> None:
    text = schema_sql()
    for table in OPS_TABLES:
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in text
    assert f"COMMENT ON DATABASE ooha_ops IS '{OPS_SCHEMA_COMMENT}';" in text
    seen = parse_ops_schema([f"ooha_ops|{OPS_SCHEMA_COMMENT}|false", "----ooha-ops-tables----", "node_release,rollout,rollout_lock"])
    assert seen == {"db_exists": True, "comment": OPS_SCHEMA_COMMENT, "tables": list(sorted(OPS_TABLES)), "in_recovery": False}
    assert schema_missing(seen) == []
    assert schema_missing(parse_ops_schema(["||false", "----ooha-ops-tables----"])) == ["database ooha_ops"]
    old = parse_ops_schema(["ooha_ops||false", "----ooha-ops-tables----", "rollout"])
    assert schema_missing(old) == ["table rollout_lock", "table node_release", f"schema version {OPS_SCHEMA_COMMENT.split()[-1]} (found none)"]
    assert parse_ops_schema([]) is None


# --- the store over a fake remote.run -----------------------------------------------------------


@dataclass
class FakeHost:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeCluster:
    """Answers ``remote.run``: which host is primary, and a queue of psql answers."""

    primary: str
    answers: list[Result]
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    def run(self, host: FakeHost, command: str, *, stdin: str | None = None, timeout: int = 60, sudo: bool = True) -> Result:
        self.calls.append((host.name, command, stdin))
        if "/primary" in command:
            return Result(True, "200" if host.name == self.primary else "503", "")
        assert command == S.PSQL
        return self.answers.pop(0)


def _ok(value: Any) -> Result:
    return Result(True, json.dumps(value), "")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster("data2", [])
    monkeypatch.setattr(S.remote, "run", fake.run)
    monkeypatch.setattr(S.time, "sleep", lambda s: None)
    return fake


def _store() -> S.Store:
    return S.Store([FakeHost("data1"), FakeHost("data2"), FakeHost("data3")], retry_window_s=0.5)


def test_no_value_ever_in_argv(cluster: FakeCluster) -> None:
    cluster.answers = [_ok(None), _ok({"lock": 1, "rollout": 1}), _ok({"lock": 1, "rollout": 1}),
                       _ok({"lock": 1, "rows": 1}), _ok({"lock": 1})]
    store, journal = _store(), _journal(reason="secret-ish reason")
    assert store.acquire(_record(), journal, 1000.2).action == "acquire"
    store.save(journal, TOKEN, 1001.0)
    store.put_releases([NodeRelease("ds1", NEW, 1.0, journal.rollout_id)], TOKEN)
    store.release(TOKEN)
    for _, command, stdin in cluster.calls:
        for value in (TOKEN, journal.rollout_id, "secret-ish reason", "ops@laptop"):
            assert value not in command
    scripts = [stdin for _, command, stdin in cluster.calls if command == S.PSQL]
    assert len(scripts) == 5 and all(stdin and TOKEN in stdin for stdin in scripts[1:])  # the first: the lock read
    assert {name for name, command, _ in cluster.calls if command == S.PSQL} == {"data2"}


def test_save_and_heartbeat_raise_lock_lost_on_zero_rows(cluster: FakeCluster) -> None:
    other = _record("theirs")
    cluster.answers = [_ok({"lock": 0, "rollout": 0}), _ok(other.to_dict()), _ok({"lock": 0}), _ok(None)]
    store = _store()
    with pytest.raises(LockLost, match="belongs to rollout r-20261205-1"):
        store.save(_journal(), TOKEN, 1001.0)
    with pytest.raises(LockLost, match="broken"):
        store.heartbeat(TOKEN, "soak ds1", 1001.0)
    cluster.answers = [_ok({"lock": 0, "rows": 0})]
    with pytest.raises(LockLost):
        store.put_releases([NodeRelease("ds1", NEW, 1.0, None)], TOKEN)


def test_acquire_refuses_a_held_lock_without_writing(cluster: FakeCluster) -> None:
    cluster.answers = [_ok(_record("theirs").to_dict())]
    decision = _store().acquire(_record("mine"), _journal(), 1010.0)
    assert decision.action == "refuse" and "held by ops@laptop" in decision.message
    assert sum(1 for _, c, _ in cluster.calls if c == S.PSQL) == 1


def test_acquire_decides_again_when_the_row_changed_under_it(cluster: FakeCluster) -> None:
    # Free when read; someone else's row when written (0 rows); then read again: theirs -> refuse.
    cluster.answers = [_ok(None), _ok({"lock": 0, "rollout": 0}), _ok(_record("theirs").to_dict())]
    decision = _store().acquire(_record("mine"), _journal(), 1010.0)
    assert decision.action == "refuse" and "alive" in decision.message


def test_acquire_finds_its_own_commit_after_a_lost_answer(cluster: FakeCluster) -> None:
    cluster.answers = [_ok(_record(TOKEN).to_dict())]
    assert _store().acquire(_record(TOKEN), _journal(), 1010.0).action == "acquire"


def test_a_failover_is_survived_by_finding_the_leader_again(cluster: FakeCluster) -> None:
    store = _store()
    demoted = Result(False, "", "psql:<stdin>:1: ERROR:  ooha-store: not the leader (in recovery)")

    def failover(host: FakeHost, command: str, **kw: Any) -> Result:
        if command == S.PSQL and host.name == "data2":
            cluster.primary = "data3"
            cluster.calls.append((host.name, command, kw.get("stdin")))
            return demoted
        return FakeCluster.run(cluster, host, command, **kw)

    S.remote.run = failover  # type: ignore[assignment]  (monkeypatched by the fixture, restored after)
    cluster.answers = [_ok({"lock": 1})]
    store.heartbeat(TOKEN, "drain ds1", 1001.0)
    assert [name for name, c, _ in cluster.calls if c == S.PSQL] == ["data2", "data3"]
    assert store.leader().name == "data3"


def test_no_leader_within_the_window_is_a_store_error(cluster: FakeCluster) -> None:
    cluster.primary = "nobody"
    with pytest.raises(S.StoreError, match="no postgres host answers as the running Patroni primary"):
        _store().lock()


def test_a_missing_database_is_not_retried_and_ready_says_how_to_fix(cluster: FakeCluster) -> None:
    cluster.answers = [Result(False, "", 'psql: error: connection to server failed: FATAL:  database "ooha_ops" does not exist')]
    reason = _store().ready()
    assert reason and "does not exist" in reason and "run the main job" in reason


def test_reads_decode_the_pure_types(cluster: FakeCluster) -> None:
    journal = _journal()
    row = NodeRelease("ds1", NEW, 5.5, "r1", OLD, True)
    cluster.answers = [_ok(journal.to_dict()), _ok([journal.to_dict()]), _ok([row.to_dict()]), _ok(None)]
    store = _store()
    assert store.open_journal() == journal
    [rec] = store.records(5)
    assert rec.rollout_id == journal.rollout_id and rec.outcome == "running"
    assert store.releases() == [row]
    assert store.journal("nope") is None
