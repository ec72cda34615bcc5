"""The firewall's apply script (templates/firewall/ooha-firewall.sh.j2), run for real.

Each test renders the script and two real rulesets (the lab's data1 with two different admin
networks), then runs the script against the real nft inside a throwaway user + network namespace
(``unshare -rn``: nothing on this machine changes).  Only systemd is faked: ``systemd-run``
records the command the rollback timer would run (the test runs that very command to "fire" the
timer) and whether the candidate was already live when the timer was armed; ``systemctl`` and
``logger`` record their calls.  nft and unshare are REQUIRED (tests fail, never skip).
"""

from __future__ import annotations

import re
import shlex
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from ooha.layers import firewall as fw
from ooha.layers.monitoring import members_of
from tests.unit.test_firewall import in_netns, lab_hosts, member

OLD_ADMIN, NEW_ADMIN = "198.18.1.1", "192.0.2.77"

FAKE_SYSTEMD_RUN = """#!/bin/sh
# Records the timer's command (the arguments after the options) and whether the candidate is live.
live=no
nft list set inet ooha_filter admin_v4 2>/dev/null | grep -q '{new}' && live=yes
echo "systemd-run $* live_at_arm=$live" >>"$FAKE/calls"
cmd=
for a in "$@"; do case "$a" in --*) ;; *) cmd="$cmd '$a'" ;; esac; done
echo "$cmd" >"$FAKE/timer_cmd"
"""
FAKE_SYSTEMCTL = '#!/bin/sh\necho "systemctl $*" >>"$FAKE/calls"\n'
FAKE_LOGGER = '#!/bin/sh\necho "logger $*" >>"$FAKE/calls"\n'


@pytest.fixture
def box(tmp_path: Path) -> SimpleNamespace:
    """The rendered script, rulesets ``old``/``new``/``broken`` and a ``run(shell)`` in a fresh netns."""
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("systemd-run", FAKE_SYSTEMD_RUN.replace("{new}", NEW_ADMIN)),
                       ("systemctl", FAKE_SYSTEMCTL), ("logger", FAKE_LOGGER)):
        path = fake / "bin" / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    target = SimpleNamespace(name="data1", groups=(), data={})
    script = tmp_path / "ooha-firewall"
    script.write_text(fw.render_script(target, state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run")))
    script.chmod(0o755)
    files = {}
    for label, admin in (("old", OLD_ADMIN), ("new", NEW_ADMIN)):
        hosts = lab_hosts(tmp_path, admin_networks=[admin])
        members = members_of(hosts)
        files[label] = tmp_path / f"{label}.nft"
        files[label].write_text(fw.render_ruleset(hosts[0], members, member(members, "data1"), hosts))
    files["broken"] = tmp_path / "broken.nft"
    files["broken"].write_text(files["new"].read_text().replace("policy drop;", "policy maybe;"))

    def run(shell: str) -> str:
        prelude = (f"export FAKE={shlex.quote(str(fake))} PATH={shlex.quote(str(fake / 'bin'))}:$PATH; "
                   f"S={shlex.quote(str(script))}; RUN={shlex.quote(str(tmp_path / 'run'))}; OLD={files['old']}; NEW={files['new']}; BROKEN={files['broken']}; "
                   "admin() { nft list set inet ooha_filter admin_v4 2>/dev/null | grep -o 'elements = {[^}]*}' || echo none; }; "
                   "fire() { eval \"$(cat \"$FAKE/timer_cmd\")\"; }; ")
        result = in_netns(prelude + shell)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return SimpleNamespace(run=run, script=script, state=tmp_path / "state", run_dir=tmp_path / "run",
                           calls=lambda: (fake / "calls").read_text() if (fake / "calls").exists() else "")


def values(output: str) -> dict[str, str]:
    """``key=value`` lines of a test's shell output."""
    return dict(re.findall(r"^(\w+)=(.*)$", output, re.M))


def test_script_is_valid_sh_and_names_its_table_and_timeout(box: SimpleNamespace) -> None:
    text = box.script.read_text()
    assert box.run(f"sh -n {box.script} && echo ok=1") == "ok=1\n"
    assert "TABLE=ooha_filter" in text and f"TIMEOUT={fw.FIREWALL_DEFAULTS['firewall_confirm_timeout']}" in text
    assert "flush ruleset" not in text


def test_apply_arms_the_rollback_first_and_the_timer_restores_the_previous_state(box: SimpleNamespace) -> None:
    out = values(box.run(
        "$S apply $NEW; echo apply=$?; echo live=\"$(admin)\"; echo status=$($S status); "
        "echo digest=$(cat \"$RUN/pending\"); "
        "fire; echo fired=$?; echo after=\"$(admin)\"; nft list tables | grep -c ooha_filter | sed 's/^/tables=/'; "
        "echo status2=$($S status); $S confirm $NEW; echo confirm=$?"))
    assert out["apply"] == "0" and NEW_ADMIN in out["live"] and out["status"] == "pending"
    assert out["digest"] == fw.ruleset_digest((box.script.parent / "new.nft").read_text())
    calls = box.calls()
    armed = [line for line in calls.splitlines() if line.startswith("systemd-run")]
    assert len(armed) == 1 and "--on-active=120s" in armed[0] and armed[0].endswith("rollback live_at_arm=no")
    # There was no ooha table before: the rollback removes ours (open, never locked out).
    assert out["fired"] == "0" and out["after"] == "none" and out["tables"] == "0"
    assert out["status2"] == "rolled-back" and out["confirm"] == "3"
    assert not (box.state / "ruleset.nft").exists()


def test_confirm_keeps_the_ruleset_and_a_later_timeout_restores_the_confirmed_one(box: SimpleNamespace) -> None:
    out = values(box.run(
        "$S apply $OLD && $S confirm $OLD; echo confirm=$?; echo status=$($S status); "
        "$S rollback; echo noop_rollback=$?; echo still=\"$(admin)\"; "
        "$S apply $NEW; echo live=\"$(admin)\"; fire; echo restored=\"$(admin)\"; echo status2=$($S status)"))
    assert out["confirm"] == "0" and out["status"] == "confirmed"
    assert (box.state / "ruleset.nft").read_text() == Path(str(box.script.parent / "old.nft")).read_text()
    assert out["noop_rollback"] == "0" and OLD_ADMIN in out["still"]
    assert NEW_ADMIN in out["live"] and OLD_ADMIN in out["restored"] and NEW_ADMIN not in out["restored"]
    assert out["status2"] == "rolled-back"
    assert "systemctl stop ooha-firewall-rollback.timer" in box.calls()


def test_a_refused_candidate_changes_nothing_and_arms_nothing(box: SimpleNamespace) -> None:
    out = values(box.run(
        "$S apply $OLD && $S confirm $OLD; : >\"$FAKE/calls\"; "
        "$S apply $BROKEN; echo apply=$?; echo live=\"$(admin)\"; echo status=$($S status); "
        "$S check $BROKEN; echo check=$?; $S check $NEW; echo check_new=$?"))
    assert out["apply"] == "1" and OLD_ADMIN in out["live"] and out["status"] == "confirmed"
    assert "systemd-run" not in box.calls()
    assert out["check"] == "1" and out["check_new"] == "0"


def test_the_deploys_own_source_must_be_an_admin_address(box: SimpleNamespace) -> None:
    out = values(box.run(
        f"$S apply $OLD && $S confirm $OLD; $S apply $NEW {OLD_ADMIN}; echo locked_out=$?; echo live=\"$(admin)\"; "
        f"echo status=$($S status); $S apply $NEW {NEW_ADMIN}; echo ok=$?; echo live2=\"$(admin)\""))
    assert out["locked_out"] == "5" and OLD_ADMIN in out["live"] and out["status"] == "rolled-back"
    assert out["ok"] == "0" and NEW_ADMIN in out["live2"]


def test_confirm_refuses_a_file_that_is_not_the_applied_one(box: SimpleNamespace) -> None:
    out = values(box.run("$S apply $NEW; $S confirm $OLD; echo confirm=$?; echo status=$($S status)"))
    assert out["confirm"] == "4" and out["status"] == "pending"


def test_boot_unit_loads_only_the_confirmed_ruleset() -> None:
    unit = fw.render_unit()
    assert f"ExecStart=/usr/sbin/nft -f {fw.STATE_DIR}/ruleset.nft" in unit
    assert f"ConditionPathExists={fw.STATE_DIR}/ruleset.nft" in unit
    assert "Before=network-pre.target" in unit and "WantedBy=sysinit.target" in unit
