"""File backup layer: inputs, backup sets per group, the env file, the script, the status parser."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from ooha.layers.filebackup import SECRETS, backup_set, env_file, input_problems, repository, script_vars
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.filebackup import parse_restic_time, parse_status

GOOD = {
    "filebackup_repository_prefix": "s3:https://198.18.20.10:9000/ooha-backups/files",
    "secrets": {"s3_access_key": "AK", "s3_secret_key": "s'k $x", "restic_password": "pw"},
}


def target(name: str = "ds1", groups: tuple[str, ...] = ("docs",), **data: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, groups=set(groups), data={**GOOD, **data})


def test_lab_values_are_valid() -> None:
    assert input_problems(target()) == []
    assert input_problems(target("lb1", ("lb",))) == []


def test_repository_per_host() -> None:
    assert repository(target()) == "s3:https://198.18.20.10:9000/ooha-backups/files/ds1"
    assert repository(target("lb2", ("lb",), filebackup_repository_prefix="s3:https://s3.example.net/b/p/")) == "s3:https://s3.example.net/b/p/lb2"


def test_backup_sets_by_group() -> None:
    assert backup_set(target()) == (["onlyoffice-data"], ["/etc/onlyoffice-ha"])
    assert backup_set(target("lb1", ("lb",))) == ([], ["/etc/nginx", "/etc/keepalived", "/etc/onlyoffice-ha"])
    both = backup_set(target("x", ("docs", "lb")))
    assert both == (["onlyoffice-data"], ["/etc/onlyoffice-ha", "/etc/nginx", "/etc/keepalived"])


def test_missing_prefix_and_secrets_are_named() -> None:
    problems = input_problems(SimpleNamespace(name="ds1", groups={"docs"}, data={"secrets": {}}))
    assert problems[0].startswith("ds1: filebackup_repository_prefix: missing; fix: ")
    assert [p.split(":")[1].strip() for p in problems[1:]] == [f"secrets.{k}" for k in SECRETS]
    assert all("required by the filebackup layer" in p for p in problems[1:])


@pytest.mark.parametrize("key, value", [
    ("filebackup_repository_prefix", "/srv/restic"), ("filebackup_repository_prefix", "s3:https://host-only"),
    ("filebackup_s3_bucket_lookup", "virtual"), ("filebackup_s3_region", "US East"),
    ("filebackup_keep_daily", 0), ("filebackup_keep_weekly", -1), ("filebackup_max_age", True),
    ("filebackup_on_calendar", ""), ("filebackup_paths", ["/etc"]),
    ("filebackup_paths", {"docs": ["etc/relative"]}), ("filebackup_paths", {"docs": ["/etc/with space"]}),
    ("filebackup_volumes", {"docs": ["bad name"]}), ("filebackup_s3_ca_cert", "/nonexistent/ca.crt"),
])
def test_each_bad_value_names_its_field(key: str, value: Any) -> None:
    problems = input_problems(target(**{key: value}))
    assert len(problems) == 1 and problems[0].startswith(f"ds1: {key}: ") and "fix: " in problems[0], problems


def test_nothing_to_back_up() -> None:
    problems = input_problems(target(filebackup_paths={"docs": []}, filebackup_volumes={}))
    assert len(problems) == 1 and problems[0].startswith("ds1: filebackup_paths: nothing to back up")


def test_env_file_quotes_secrets_for_the_shell(tmp_path: Path) -> None:
    text = env_file(target())
    path = tmp_path / "env"
    path.write_text(text)
    out = subprocess.run(["sh", "-c", f'set -a; . {shlex.quote(str(path))}; printf "%s|%s|%s" "$AWS_SECRET_ACCESS_KEY" "$RESTIC_REPOSITORY" "$RESTIC_PASSWORD_FILE"'],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "s'k $x|s3:https://198.18.20.10:9000/ooha-backups/files/ds1|/etc/ooha-filebackup/password"
    assert "pw" not in text  # the repository password lives in its own file


def _render(name: str, **variables: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined, **JINJA)
    return env.get_template(name).render(**variables)


@pytest.mark.parametrize("host, groups, ca", [("ds1", ("docs",), "/x/ca.crt"), ("lb1", ("lb",), None)])
def test_script_renders_valid_shell_without_secrets(tmp_path: Path, host: str, groups: tuple[str, ...], ca: Any) -> None:
    script = _render("filebackup/ooha-filebackup.sh.j2", **script_vars(target(host, groups, filebackup_s3_ca_cert=ca, filebackup_s3_region="us-east-1")))
    path = tmp_path / "ooha-filebackup"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True, timeout=10).returncode == 0
    for secret in GOOD["secrets"].values():
        assert secret not in script
    assert ("--cacert /etc/ooha-filebackup/s3-ca.crt" in script) is bool(ca)
    assert "-o s3.bucket-lookup=path -o s3.region=us-east-1" in script
    assert "--keep-daily 7 --keep-weekly 4 --prune" in script
    assert "{{.Mountpoint}}" in script or host == "lb1"


def test_units_render() -> None:
    timer = _render("filebackup/ooha-filebackup.timer.j2", on_calendar="*-*-* 02:30:00", randomized_delay="30min")
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    service = _render("filebackup/ooha-filebackup.service.j2", script="/usr/local/sbin/ooha-filebackup", what="x")
    assert "Type=oneshot" in service and "ExecStart=/usr/local/sbin/ooha-filebackup backup" in service


def test_restic_time() -> None:
    assert parse_restic_time("2026-12-02T09:40:36.123456789Z") == pytest.approx(1796204436.123456)
    assert parse_restic_time("2026-12-02T10:40:36+01:00") == parse_restic_time("2026-12-02T09:40:36Z")
    with pytest.raises(ValueError):
        parse_restic_time("yesterday")


def test_status_with_snapshots() -> None:
    snapshots = [
        {"time": "2026-12-02T09:00:00.5Z", "paths": ["/etc/onlyoffice-ha"]},
        {"time": "2026-12-02T09:40:36.1Z", "paths": ["/etc/onlyoffice-ha", "/var/lib/docker/volumes/onlyoffice-data/_data"]},
    ]
    now = int(parse_restic_time("2026-12-02T09:45:36Z"))
    status = parse_status([f"now {now}", "present 2", "timer enabled active", "snapshots " + json.dumps(snapshots)])
    assert status is not None
    assert status["repository"] == "ok" and status["snapshots"] == 2 and status["present"] == 2
    assert status["timer_enabled"] and status["timer_active"]
    assert status["age_seconds"] == pytest.approx(299.9, abs=0.01) and len(status["latest_paths"]) == 2


def test_status_missing_error_and_not_installed() -> None:
    missing = parse_status(["now 1", "present 0", "timer disabled inactive", "missing"])
    assert missing is not None and missing["repository"] == "missing" and not missing["timer_enabled"]
    error = parse_status(["now 1", "present 1", "timer enabled active", "error Fatal: unable to open config file: x509"])
    assert error is not None and error["repository"] == "error" and "x509" in error["error"]
    assert parse_status(["not-installed"]) is None
