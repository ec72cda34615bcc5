"""Backup layer (pgBackRest): facts parsing, the report's verdict, inputs, the rendered
configuration, and restore.py's input checks and refusal of a healthy cluster."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from ooha.layers.pgbackrest import archive_settings, config_vars, endpoint_parts, input_problems, judge_backup
from ooha.pgrestore import (backup_problem, healthy_cluster_refusal, parse_bool, parse_target_time, pg_time,
                               restore_host_name)
from ooha.pgrestore import input_problems as restore_problems
from ooha.facts.pgbackrest import parse_archiver, parse_pgbackrest_info

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NOW = 1796204300
SECRETS = {"s3_access_key": "AKIA-TEST", "s3_secret_key": "s3-secret-value", "pgbackrest_cipher_pass": "cipher-value"}


def _backup(label: str, kind: str, stop: int, error: bool = False) -> dict[str, Any]:
    return {"archive": {"start": "000000010000000000000014", "stop": "000000010000000000000015"},
            "error": error, "info": {"delta": 4940044, "repository": {"delta": 949136, "size": 10675456}, "size": 53531906},
            "label": label, "timestamp": {"start": stop - 2, "stop": stop}, "type": kind}


def _info(backups: list[dict[str, Any]], code: int = 0, message: str = "ok", repo_code: int = 0,
          repo_message: str = "ok") -> str:
    return json.dumps([{
        "archive": [{"database": {"id": 1, "repo-key": 1}, "id": "15-1", "max": "00000005000000000000001E",
                     "min": "000000010000000000000001"}],
        "backup": backups, "cipher": "aes-256-cbc", "name": "onlyoffice",
        "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": repo_code, "message": repo_message}}],
        "status": {"code": code, "lock": {"backup": {"held": False}}, "message": message},
    }])


FULL = _backup("20261202-093340F", "full", NOW - 3600)
DIFF = _backup("20261202-093340F_20261202-093726D", "diff", NOW - 60)


def _archiver(**overrides: Any) -> dict[str, Any]:
    value = {"in_recovery": False, "archive_mode": "on", "last_archived_wal": "00000005000000000000001E",
             "last_archived_time": NOW - 5, "last_failed_wal": None, "last_failed_time": None, "archived_count": 30,
             "failed_count": 0, "now": NOW, "current_wal": "00000005000000000000001F", "ready": 0,
             "oldest_ready_age": None}
    value.update(overrides)
    return value


# --- facts ------------------------------------------------------------------------------


def test_info_of_pgbackrest_245_is_flattened() -> None:
    info = parse_pgbackrest_info(_info([FULL, DIFF]))
    assert info is not None
    assert info["status_code"] == 0 and info["repo_errors"] == [] and info["cipher"] == "aes-256-cbc"
    assert [b["type"] for b in info["backups"]] == ["full", "diff"]
    assert info["backups"][1]["stop"] == NOW - 60 and info["backups"][1]["repo_delta"] == 949136
    assert info["archive_max"] == "00000005000000000000001E"


def test_missing_stanza_is_a_state_of_a_reachable_repository() -> None:
    info = parse_pgbackrest_info(_info([], code=1, message="missing stanza path", repo_code=1,
                                       repo_message="missing stanza path"))
    assert info is not None and info["repo_errors"] == [] and info["status_code"] == 1


def test_unreachable_repository_is_a_repo_error() -> None:
    info = parse_pgbackrest_info(_info([], code=99, message="other", repo_code=99,
                                       repo_message="[HostConnectError] unable to connect to 'svc1:9000'"))
    assert info is not None and info["repo_errors"] == ["[HostConnectError] unable to connect to 'svc1:9000'"]


@pytest.mark.parametrize("text", ["", "not json", "[]", "{}"])
def test_no_info_gives_none(text: str) -> None:
    assert parse_pgbackrest_info(text) is None


def test_archiver_row_and_ready_files() -> None:
    lines = ["row|false|on|00000005000000000000001E|1796204295|||30|0|1796204300|00000005000000000000001F",
             "ready|2|1796204200.5|1796204300"]
    value = parse_archiver(lines)
    assert value is not None
    assert value["last_archived_wal"] == "00000005000000000000001E" and value["last_failed_time"] is None
    assert value["ready"] == 2 and value["oldest_ready_age"] == 100
    assert parse_archiver(["psql: error"]) is None


# --- the report's verdict ------------------------------------------------------------


def test_fresh_backups_and_flowing_archive_pass() -> None:
    result = judge_backup(parse_pgbackrest_info(_info([FULL, DIFF])), _archiver(), NOW, 26 * 3600, 120)
    assert result.ok, result.text()
    assert "last full 60m ago" in result.detail and "last diff 60s ago" in result.detail
    assert "last archived WAL 00000005000000000000001E" in result.detail


def test_newest_backup_older_than_the_limit_fails() -> None:
    result = judge_backup(parse_pgbackrest_info(_info([FULL])), _archiver(), NOW, 1800, 120)
    assert not result.ok and "newest backup 20261202-093340F is 60m old" in result.detail


def test_no_backup_fails() -> None:
    result = judge_backup(parse_pgbackrest_info(_info([], code=2, message="no valid backups")), None, NOW, 3600, 120)
    assert not result.ok and "no backup" in result.detail


def test_failed_backup_does_not_count() -> None:
    broken = _backup("20261202-100000D", "diff", NOW - 10, error=True)
    result = judge_backup(parse_pgbackrest_info(_info([FULL, broken])), None, NOW, 1800, 120)
    assert not result.ok


def test_stuck_archiving_fails_on_the_primary() -> None:
    stuck = _archiver(ready=5, oldest_ready_age=300, last_failed_time=NOW - 2, last_failed_wal="000000050000000000000020")
    result = judge_backup(parse_pgbackrest_info(_info([FULL, DIFF])), stuck, NOW, 26 * 3600, 120)
    assert not result.ok and "archiving stuck: 5 WAL file(s) waiting" in result.detail


def test_failing_archiving_fails_even_before_the_lag_limit() -> None:
    failing = _archiver(ready=1, oldest_ready_age=10, last_failed_time=NOW - 2, last_failed_wal="000000050000000000000020")
    result = judge_backup(parse_pgbackrest_info(_info([FULL, DIFF])), failing, NOW, 26 * 3600, 120)
    assert not result.ok and "archiving failing" in result.detail


def test_archive_mode_off_fails() -> None:
    result = judge_backup(parse_pgbackrest_info(_info([FULL, DIFF])), _archiver(archive_mode="off"), NOW, 26 * 3600, 120)
    assert not result.ok and "archive_mode is off" in result.detail


def test_replica_is_judged_on_the_repository_only() -> None:
    result = judge_backup(parse_pgbackrest_info(_info([FULL, DIFF])), _archiver(in_recovery=True, ready=9,
                                                                                oldest_ready_age=999), NOW, 26 * 3600, 120)
    assert result.ok and result.detail.startswith("replica:")


def test_unreachable_repository_fails_with_its_message() -> None:
    info = parse_pgbackrest_info(_info([], code=99, message="other", repo_code=99,
                                       repo_message="[HostConnectError] unable to connect"))
    result = judge_backup(info, _archiver(), NOW, 3600, 120)
    assert not result.ok and "repository unreachable: [HostConnectError]" in result.detail


# --- inputs and configuration -----------------------------------------------------------


class _Data(dict):
    def __getattr__(self, key: str) -> Any:
        return self.get(key)


def _target(name: str = "data1", **data: Any) -> SimpleNamespace:
    base = {"pgbackrest_s3_endpoint": "https://svc1:9000", "pgbackrest_s3_bucket": "ooha-backups",
            "pgbackrest_s3_region": "us-east-1", "secrets": dict(SECRETS)}
    base.update(data)
    return SimpleNamespace(name=name, data=_Data(base))


def test_valid_inputs_pass() -> None:
    assert input_problems(_target()) == []


@pytest.mark.parametrize(("data", "field"), [
    ({"pgbackrest_s3_endpoint": None}, "pgbackrest_s3_endpoint"),
    ({"pgbackrest_s3_endpoint": "http://svc1:9000"}, "pgbackrest_s3_endpoint"),
    ({"pgbackrest_s3_endpoint": "https://svc1:9000/bucket"}, "pgbackrest_s3_endpoint"),
    ({"pgbackrest_s3_bucket": ""}, "pgbackrest_s3_bucket"),
    ({"pgbackrest_s3_uri_style": "virtual"}, "pgbackrest_s3_uri_style"),
    ({"pgbackrest_s3_ca_cert": "/nonexistent/ca.crt"}, "pgbackrest_s3_ca_cert"),
    ({"pgbackrest_retention_full": 0}, "pgbackrest_retention_full"),
    ({"pgbackrest_max_backup_age": "1d"}, "pgbackrest_max_backup_age"),
    ({"pgbackrest_stanza": "a b"}, "pgbackrest_stanza"),
    ({"pgbackrest_s3_connect_address": "1.2.3.4; rm -rf /"}, "pgbackrest_s3_connect_address"),
])
def test_bad_input_names_host_field_and_fix(data: dict[str, Any], field: str) -> None:
    problems = input_problems(_target(**data))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"data1: {field}:") and "fix:" in problems[0]


def test_missing_secret_is_reported_without_a_value() -> None:
    target = _target()
    target.data["secrets"] = {"s3_access_key": "AKIA-TEST"}
    problems = input_problems(target)
    assert any("secrets.s3_secret_key" in p for p in problems) and any("pgbackrest_cipher_pass" in p for p in problems)
    assert not any("AKIA-TEST" in p for p in problems)


def test_endpoint_parts() -> None:
    assert endpoint_parts("https://svc1:9000") == ("svc1", 9000)
    assert endpoint_parts("https://s3.eu-west-1.amazonaws.com") == ("s3.eu-west-1.amazonaws.com", 443)


def test_rendered_configuration_has_repository_encryption_and_path_style() -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = env.from_string((TEMPLATES / "pgbackrest/pgbackrest.conf.j2").read_text()).render(
        **config_vars(_target(pgbackrest_s3_ca_cert=str(TEMPLATES / "pgbackrest/pgbackrest.conf.j2"))))
    lines = set(text.splitlines())
    for line in ("repo1-type=s3", "repo1-s3-endpoint=svc1", "repo1-storage-port=9000", "repo1-s3-bucket=ooha-backups",
                 "repo1-s3-region=us-east-1", "repo1-s3-uri-style=path", "repo1-storage-ca-file=/etc/pgbackrest/s3-ca.crt",
                 "repo1-cipher-type=aes-256-cbc", "repo1-cipher-pass=cipher-value", "repo1-retention-full=2",
                 "[onlyoffice]", "pg1-path=/var/lib/postgresql/15/onlyoffice"):
        assert line in lines, line


def test_archive_settings_go_to_patroni_dynamic_configuration() -> None:
    settings = archive_settings(_target(pgbackrest_archive_timeout=45))
    params = settings["postgresql"]["parameters"]
    assert params == {"archive_mode": "on", "archive_command": "pgbackrest --stanza=onlyoffice archive-push %p",
                      "archive_timeout": "45s"}
    assert settings["postgresql"]["recovery_conf"]["restore_command"] == '[ -x /usr/bin/pgbackrest ] && pgbackrest --stanza=onlyoffice archive-get %f "%p"'


# --- restore.py inputs ------------------------------------------------------------------

UTC_NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc)
MEMBERS = ["data1", "data2", "data3"]


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-12-02T09:30:00Z", dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.timezone.utc)),
    ("2026-12-02 10:30:00+01:00", dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.timezone.utc)),
    ("2026-12-02T09:37:38.740524+00:00", dt.datetime(2026, 12, 2, 9, 37, 38, 740524, tzinfo=dt.timezone.utc)),
    (None, None), ("", None),
])
def test_target_time_is_parsed_to_utc(value: Any, expected: Any) -> None:
    assert parse_target_time(value, UTC_NOW) == (expected, None)


@pytest.mark.parametrize(("value", "problem"), [
    ("yesterday", "not an ISO 8601 time"),
    ("2026-12-02T09:30:00", "no time zone"),
    ("2026-12-02T11:00:00Z", "in the future"),
])
def test_bad_target_time_is_refused_before_any_host_is_touched(value: str, problem: str) -> None:
    target = SimpleNamespace(name="data1", data={"restore_target_time": value})
    problems = restore_problems(target, UTC_NOW, MEMBERS)
    assert len(problems) == 1 and problem in problems[0]
    assert problems[0].startswith("data1: restore_target_time:") and "fix:" in problems[0]


def test_other_restore_inputs() -> None:
    target = SimpleNamespace(name="data1", data={"restore_force": "perhaps", "restore_host": "data9",
                                                 "restore_deadline": "0"})
    fields = [p.split(":")[1].strip() for p in restore_problems(target, UTC_NOW, MEMBERS)]
    assert fields == ["restore_force", "restore_host", "restore_deadline"]
    assert restore_host_name(SimpleNamespace(data={}), MEMBERS) == "data1"
    assert restore_host_name(SimpleNamespace(data={"restore_host": "data2"}), MEMBERS) == "data2"
    assert parse_bool("true") is True and parse_bool(None) is False and parse_bool("x") is None


def test_pg_time_is_what_recovery_target_time_takes() -> None:
    assert pg_time(dt.datetime(2026, 12, 2, 10, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))) \
        == "2026-12-02 09:30:00.000005+00"


def _view(leader: str | None, streaming: bool = True) -> dict[str, Any]:
    members = [{"name": n, "role": "leader" if n == leader else ("sync_standby" if n == "data2" else "replica"),
                "state": "running", "host": "", "timeline": 5, "lag": 0, "self_role": "primary" if n == leader else "replica",
                "streaming": streaming or n == leader} for n in MEMBERS]
    return {"leader": leader, "members": members, "local": {}, "primaries": [leader] if leader else [],
            "sync_standbys": ["data2"]}


def test_a_healthy_cluster_is_refused_unless_forced() -> None:
    target = SimpleNamespace(name="data1", data={})
    refusal = healthy_cluster_refusal(target, _view("data1"), MEMBERS)
    assert refusal is not None and "restore_force=true" in refusal and "healthy" in refusal


@pytest.mark.parametrize("view", [None, _view(None), _view("data1", streaming=False)])
def test_a_broken_cluster_may_be_restored(view: Any) -> None:
    assert healthy_cluster_refusal(SimpleNamespace(name="data1", data={}), view, MEMBERS) is None


def test_target_before_the_oldest_backup_is_refused() -> None:
    info = parse_pgbackrest_info(_info([FULL, DIFF]))
    early = dt.datetime.fromtimestamp(NOW - 7200, dt.timezone.utc)
    assert "before the end of the oldest backup" in (backup_problem(info, early) or "")
    assert backup_problem(info, dt.datetime.fromtimestamp(NOW, dt.timezone.utc)) is None
    assert backup_problem(info, None) is None
    assert "no backup" in (backup_problem(parse_pgbackrest_info(_info([], code=2, message="no valid backups")), None) or "")


def test_info_that_never_answers_is_an_unreachable_repository() -> None:
    from ooha.facts.pgbackrest import PgBackRestInfo

    info = PgBackRestInfo().process(["timeout 45"])
    result = judge_backup(info, _archiver(ready=1, oldest_ready_age=50), NOW, 3600, 120)
    assert not result.ok and "repository unreachable: pgbackrest info gave no answer within 45 s" in result.detail
    assert "1 waiting (archive lag 50s)" in result.detail


# --- Patroni REST credentials: on curl's stdin, never in argv ---------------------------


def test_curl_reads_the_credentials_from_stdin_exactly() -> None:
    """The config line curl gets on stdin (``curl -K -``) authenticates as the exact user and
    password, quotes and backslashes included, with nothing of them on the command line."""
    import base64
    import http.server
    import shutil
    import subprocess
    import threading

    from ooha.layers.postgres import curl_user_config

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine")
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    password = 'p "w\\d: $x'
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        argv = ["curl", "-K", "-", "-sSf", "--max-time", "10", "-X", "POST", f"http://127.0.0.1:{server.server_port}/restart"]
        done = subprocess.run(argv, input=curl_user_config("patroni", password), capture_output=True, text=True, timeout=20)
        thread.join(10)
    finally:
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert password not in " ".join(argv)
    assert seen == ["Basic " + base64.b64encode(f"patroni:{password}".encode()).decode()]
