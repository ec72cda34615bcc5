"""Pure parts of the full preflight (ooha/preflight.py) that config.py runs before pyinfra connects."""

from __future__ import annotations

from pathlib import Path

from ooha.preflight import (
    ALL,
    HostSpec,
    Problem,
    check_backup_job,
    check_controller_files,
    check_layers,
    check_restore_files_job,
    check_secret_lines,
    install_cli_hook,
    jobs_in,
    merge_problem_lines,
)


def _hosts(**data: object) -> list[HostSpec]:
    return [
        HostSpec("ds1", frozenset({"docs"}), dict(data)),
        HostSpec("lb1", frozenset({"lb"}), dict(data)),
        HostSpec("data1", frozenset({"postgres"}), dict(data)),
    ]


def test_controller_files_must_exist_here(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    assert check_controller_files(_hosts(ssh_key=str(key))) == []
    public = tmp_path / "key.pub"
    public.write_text("ssh-ed25519 AAAA me@here\n")
    [problem] = check_controller_files(_hosts(ssh_key=str(public)))
    assert problem.field == "ssh_key" and "not a private key" in problem.problem and "AAAA" not in problem.line()
    [problem] = check_controller_files(_hosts(ssh_key=str(tmp_path / "nope"), ssh_known_hosts_file=None))
    assert problem.host == ALL and problem.field == "ssh_key" and "nope" in problem.problem and problem.fix
    hosts = _hosts(ssh_key=str(key))
    hosts[0] = HostSpec("ds1", frozenset({"docs"}), {"ssh_known_hosts_file": str(tmp_path / "kh")})
    [problem] = check_controller_files(hosts)
    assert problem.host == "ds1" and problem.field == "ssh_known_hosts_file"


def test_secrets_are_one_line_and_values_are_never_shown() -> None:
    problems = check_secret_lines({"a": "one", "b": "two\nlines", "c": "cr\r"})
    assert [p.field for p in problems] == ["secrets.b", "secrets.c"]
    assert all("two" not in p.line() and "lines" not in p.line() for p in problems)
    assert check_secret_lines(None) == []


def test_day2_job_keys() -> None:
    assert check_backup_job(_hosts(backup_type="diff")) == []
    [problem] = check_backup_job(_hosts(backup_type="weekly"))
    assert problem.field == "backup_type" and "weekly" in problem.problem
    assert check_restore_files_job(_hosts(restore_host="ds1", restore_paths="/etc/nginx")) == []
    fields = [p.field for p in check_restore_files_job(_hosts(restore_host="data1", restore_snapshot="x y",
                                                             restore_paths="etc"))]
    assert fields == ["restore_host", "restore_snapshot", "restore_paths"]


def test_layers_given_with_data_is_one_problem_for_every_host() -> None:
    [problem] = check_layers(_hosts(layers="redis,reddis"))
    assert problem.host == ALL and "reddis" in problem.problem


def test_merged_lines_are_one_per_problem() -> None:
    problems = [Problem(ALL, "secrets.redis_password", "missing or empty", "add it"),
                Problem("ds1", "private_address", "'x' is not an IP address", "set it")]
    layer_lines = [
        "all: secrets.redis_password: missing; fix: set it in the secrets file",  # same field: once
        "ds1: private_address: 'x' is not an IP address; fix: set it",            # an inventory rule said it
        "ds1: ds_version: 'latest' is not a pinned tag; fix: pin it",
        "ds2: ds_version: 'latest' is not a pinned tag; fix: pin it",
        "ds2: ds_version: 'latest' is not a pinned tag; fix: pin it",
        "lb1: lb_vip: bad; fix: x",
    ]
    lines = merge_problem_lines(problems, layer_lines, ["ds1", "ds2", "lb1"])
    assert lines == [p.line() for p in problems] + [
        "ds1, ds2: ds_version: 'latest' is not a pinned tag; fix: pin it",
        "lb1: lb_vip: bad; fix: x",
    ]
    assert merge_problem_lines([], ["ds1: f: p; fix: x", "ds2: f: p; fix: x"], ["ds1", "ds2"]) == ["all: f: p; fix: x"]


def test_jobs_are_read_from_the_command_line() -> None:
    argv = ["pyinfra", "-y", "inventory.py", "deploys/restore.py", "--data", "restore_force=true"]
    assert jobs_in(argv) == ["restore.py"]
    assert jobs_in(["pyinfra", "inventories/lab.py", "fact", "server.Os"]) == []


def test_the_hook_does_nothing_outside_the_cli() -> None:
    from pyinfra.context import ctx_state

    if not ctx_state.isset():
        assert install_cli_hook(["pyinfra"]) is False
