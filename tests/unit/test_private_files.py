"""ooha/ops/private_files.py: DIFF off exactly while the delegated files.* code runs, and the
operations end to end through the pyinfra CLI on the @local connector (files in a temp dir):
no secret in the output of `--diff -vvv --debug` runs that create, repair and re-check files,
while an ordinary files.put in the same run still prints its diff (so the check can fail)."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from pyinfra.context import ctx_state

from ooha.ops.private_files import without_diff
from tests.conftest import PYINFRA
from tests.integration.deploytools import changed_operations


@pytest.fixture
def fake_state():
    fake = SimpleNamespace(config=SimpleNamespace(DIFF=True))
    with ctx_state.use(fake):
        yield fake


def _recording(seen: list[bool], fake, steps: int = 3, fail_at: int | None = None):
    """A stand-in for files.put._inner: reads DIFF in every step, like put does."""
    for index in range(steps):
        seen.append(fake.config.DIFF)
        if index == fail_at:
            raise RuntimeError("boom")
        yield f"command {index}"
    seen.append(fake.config.DIFF)


def test_diff_is_off_inside_every_step_and_on_while_suspended(fake_state) -> None:
    seen: list[bool] = []
    outside = []
    for command in without_diff(_recording(seen, fake_state)):
        outside.append((command, fake_state.config.DIFF))
    assert seen == [False] * 4
    assert outside == [(f"command {i}", True) for i in range(3)]
    assert fake_state.config.DIFF is True


def test_diff_restored_when_abandoned_or_failing(fake_state) -> None:
    seen: list[bool] = []
    commands = without_diff(_recording(seen, fake_state))
    next(commands)  # pyinfra's prepare-time change check stops after the first command
    assert fake_state.config.DIFF is True
    commands.close()
    assert fake_state.config.DIFF is True

    with pytest.raises(RuntimeError):
        list(without_diff(_recording(seen, fake_state, fail_at=1)))
    assert fake_state.config.DIFF is True
    assert not any(seen)


def test_a_setting_left_false_stays_false(fake_state) -> None:
    fake_state.config.DIFF = False
    list(without_diff(_recording([], fake_state)))
    assert fake_state.config.DIFF is False


def test_overlapping_hosts_never_see_diff_on(fake_state) -> None:
    """Greenlets (one per host) switch inside fact reads; a host leaving its step early must
    not turn DIFF back on under a host still inside its own."""
    seen: list[bool] = []

    def slow_step(pause: float):
        seen.append(fake_state.config.DIFF)
        gevent.sleep(pause)
        seen.append(fake_state.config.DIFF)
        yield "upload"
        seen.append(fake_state.config.DIFF)

    def run(pause: float) -> None:
        with ctx_state.use(fake_state):
            list(without_diff(slow_step(pause)))

    gevent.joinall([gevent.spawn(run, 0.2), gevent.spawn(run, 0.01)], raise_error=True)
    assert seen and not any(seen), seen
    assert fake_state.config.DIFF is True


# --- end to end: the pyinfra CLI on @local ----------------------------------------------------

DEPLOY = '''
import os
from io import StringIO

from pyinfra.operations import files

from ooha.ops.private_files import private_put, private_template

OUT = os.environ["OUT"]
private_put(name="private put", src=StringIO(os.environ["SECRET_A"] + "\\n"), dest=f"{OUT}/sub/a.pass")
private_template(name="private template", src=f"{OUT}/t.j2", dest=f"{OUT}/b.conf", mode="640",
                 password=os.environ["SECRET_B"])
files.put(name="ordinary put", src=StringIO("control-marker-visible\\n"), dest=f"{OUT}/control.txt")
'''


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, "@local", "deploy.py", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "PYINFRA_PROGRESS": "off"}, stdin=subprocess.DEVNULL,
    )


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}"


def test_cli_diff_debug_never_prints_the_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "deploy.py").write_text(DEPLOY)
    (out / "t.j2").write_text('requirepass "{{ password }}"\n')
    env = {"OUT": str(out), "SECRET_A": f"sa-{secrets.token_hex(12)}", "SECRET_B": f"sb-{secrets.token_hex(12)}"}
    values = (env["SECRET_A"], env["SECRET_B"])

    def assert_quiet(result: subprocess.CompletedProcess[str], control_shown: bool) -> str:
        text = result.stdout + result.stderr
        assert result.returncode == 0, text[-3000:]
        for value in values:
            assert value not in text, f"secret printed:\n{text[-3000:]}"
        assert ("control-marker-visible" in text) is control_shown, text[-3000:]
        return text

    # Plan with change detection (no -y): the diff would be printed at prepare time.
    assert_quiet(_run(tmp_path, env, "--dry", "--diff", "-vvv", "--debug"), control_shown=True)
    assert not (out / "sub" / "a.pass").exists()

    created = assert_quiet(_run(tmp_path, env, "-y", "--diff", "-vvv", "--debug"), control_shown=True)
    assert set(changed_operations(created)) - {"Grand total"} == {"private put", "private template", "ordinary put"}, created[-3000:]
    assert (out / "sub" / "a.pass").read_text() == env["SECRET_A"] + "\n"
    assert (out / "b.conf").read_text() == f'requirepass "{env["SECRET_B"]}"\n'
    assert (_mode(out / "sub" / "a.pass"), _mode(out / "b.conf")) == ("600", "640")

    # Hand edits: content and mode drift, the control file replaced so its diff shows again.
    with open(out / "sub" / "a.pass", "a") as handle:
        handle.write("# hand edit\n")
    with open(out / "b.conf", "a") as handle:
        handle.write("# hand edit\n")
    (out / "b.conf").chmod(0o644)
    (out / "control.txt").write_text("drifted\n")

    repaired = assert_quiet(_run(tmp_path, env, "-y", "--diff", "-vvv", "--debug"), control_shown=True)
    assert set(changed_operations(repaired)) - {"Grand total"} == {"private put", "private template", "ordinary put"}, repaired[-3000:]
    assert (out / "sub" / "a.pass").read_text() == env["SECRET_A"] + "\n"
    assert (out / "b.conf").read_text() == f'requirepass "{env["SECRET_B"]}"\n'
    assert (_mode(out / "sub" / "a.pass"), _mode(out / "b.conf")) == ("600", "640")

    again = assert_quiet(_run(tmp_path, env, "-y", "--diff", "-vvv", "--debug"), control_shown=False)
    assert changed_operations(again) == {}, again[-3000:]
