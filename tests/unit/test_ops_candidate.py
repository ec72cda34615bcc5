"""ooha/ops/candidate.py: a configuration goes live only after its candidate passed the check,
end to end through the pyinfra CLI on @local (files in a temp dir, a `grep` as the check, no
service): a refused candidate is moved aside with a clear error and the live file stays as it
was; a rerun changes nothing; a hand-edited live file is repaired; a private file's content
is never printed with --diff."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from ooha.ops.candidate import check_command, reload_command
from tests.conftest import PYINFRA
from tests.integration.deploytools import changed_operations

DEPLOY = '''
import os

from ooha.ops.candidate import ConfigFile, validated_config

OUT = os.environ["OUT"]
validated_config(
    name="Demo configuration",
    config_files=[
        ConfigFile(src=f"{OUT}/main.j2", dest=f"{OUT}/live/main.conf", candidate=f"{OUT}/candidate/main.conf",
                   user=None, group=None, mode="640", private=True,
                   data={"value": os.environ["VALUE"], "where": "live"}, candidate_data={"value": os.environ["VALUE"], "where": "candidate"}),
        ConfigFile(src=f"{OUT}/extra.txt", dest=f"{OUT}/live/extra.txt", candidate=f"{OUT}/candidate/extra.txt",
                   user=None, group=None, mode="644", template=False),
    ],
    validate="grep -q '^setting good' {path}",
    label="Demo",
)
'''


def _run(tmp_path: Path, value: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "@local", "deploy.py", "-y", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OUT": str(tmp_path), "VALUE": value, "PYINFRA_PROGRESS": "off"}, stdin=subprocess.DEVNULL,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_commands() -> None:
    assert str(check_command("haproxy -c -q -f {path}", "/etc/h a.cfg", "/etc/h.rejected", "invalid X")) == (
        "{ haproxy -c -q -f '/etc/h a.cfg' ; } || { mv -f '/etc/h a.cfg' /etc/h.rejected ; echo 'invalid X' >&2 ; exit 1 ; }")
    assert str(reload_command("nginx.service")) == (
        "if systemctl is-active --quiet nginx.service ; then systemctl reload nginx.service ; fi")


def test_cli_a_refused_candidate_never_goes_live(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(DEPLOY)
    (tmp_path / "main.j2").write_text("setting {{ value }}\n# {{ where }}\n")
    (tmp_path / "extra.txt").write_text("extra\n")
    live, candidate = tmp_path / "live" / "main.conf", tmp_path / "candidate" / "main.conf"

    first = _ok(_run(tmp_path, "good"))
    assert set(changed_operations(first)) - {"Grand total"} == {"Demo configuration"}, first[-3000:]
    assert live.read_text() == "setting good\n# live\n"
    assert candidate.read_text() == "setting good\n# candidate\n"
    assert (tmp_path / "live" / "extra.txt").read_text() == "extra\n"
    assert f"{live.stat().st_mode & 0o777:o}" == "640"

    assert changed_operations(_ok(_run(tmp_path, "good"))) == {}

    # A candidate the check refuses: the operation fails, says so, and nothing goes live.
    (tmp_path / "extra.txt").write_text("extra, changed\n")
    broken = _run(tmp_path, "bad")
    output = broken.stdout + broken.stderr
    assert broken.returncode != 0, output[-3000:]
    rejected = tmp_path / "candidate" / "main.conf.rejected"
    assert f"invalid Demo configuration, live one unchanged: grep -q '^setting good' {rejected}" in output, output[-3000:]
    assert live.read_text() == "setting good\n# live\n"
    assert (tmp_path / "live" / "extra.txt").read_text() == "extra\n"
    assert rejected.read_text() == "setting bad\n# candidate\n" and not candidate.exists()

    # Fixed input: the candidate is written and checked again, then goes live.
    fixed = _ok(_run(tmp_path, "good"))
    assert set(changed_operations(fixed)) - {"Grand total"} == {"Demo configuration"}
    assert (tmp_path / "live" / "extra.txt").read_text() == "extra, changed\n"
    assert candidate.exists()

    # A hand edit of the live file is repaired (the candidate, unchanged, is checked first).
    with open(live, "a") as handle:
        handle.write("# hand edit\n")
    repaired = _ok(_run(tmp_path, "good"))
    assert set(changed_operations(repaired)) - {"Grand total"} == {"Demo configuration"}
    assert live.read_text() == "setting good\n# live\n"
    assert changed_operations(_ok(_run(tmp_path, "good"))) == {}


def test_cli_diff_never_prints_a_private_file(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(DEPLOY)
    (tmp_path / "main.j2").write_text("setting good\n# {{ value }} {{ where }}\n")
    (tmp_path / "extra.txt").write_text("extra-visible\n")
    _ok(_run(tmp_path, f"s-{secrets.token_hex(8)}"))
    (tmp_path / "extra.txt").write_text("extra-marker-visible\n")
    value = f"s-{secrets.token_hex(12)}"
    output = _ok(_run(tmp_path, value, "--diff", "-vvv"))
    assert value not in output, output[-3000:]
    assert "extra-marker-visible" in output, output[-3000:]  # the ordinary file's diff shows
    assert value in (tmp_path / "live" / "main.conf").read_text()
