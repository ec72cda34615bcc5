"""The base line's patch part: HostPatchState's sections parsed, and the words the report prints."""

from __future__ import annotations

import time

from ooha.facts.base import HostPatchState, parse_host_patch_state
from ooha.layers.base import patch_text

CLEAN_HOST = """\
----ooha-upgradable----
Listing...
----ooha-reboot----
no
----ooha-needrestart----
NEEDRESTART-VER: 3.6
NEEDRESTART-KSTA: 0
----ooha-lists----
{stamp}
----ooha-last----
""".splitlines()

PENDING_HOST = """\
----ooha-upgradable----
Listing...
libssl3/stable-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.11-1~deb12u2]
ooha-lab-canary/ooha-lab 1.1 all [upgradable from: 1.0]
----ooha-reboot----
yes
libc6
----ooha-needrestart----
NEEDRESTART-VER: 3.6
NEEDRESTART-SVC: patroni.service
----ooha-lists----
----ooha-last----
{"finished": "2026-12-05T16:00:00Z", "outcome": "done"}
""".splitlines()


def test_a_clean_host_has_nothing_pending_and_no_reboot() -> None:
    now = int(time.time())
    state = parse_host_patch_state([line.format(stamp=now - 7200) for line in CLEAN_HOST])
    assert state["pending"] == () and not state["reboot"].reboot and state["last_run"] is None
    assert patch_text(state) == "0 pending update(s), no reboot required, last patch run: never, apt lists 2 h old"


def test_pending_security_updates_the_flag_file_and_services_on_deleted_libraries() -> None:
    state = parse_host_patch_state(PENDING_HOST)
    assert [p.name for p in state["pending"]] == ["libssl3", "ooha-lab-canary"]
    assert state["reboot"].reboot
    text = patch_text(state)
    assert text.startswith("2 pending update(s) (1 security), reboot required (/run/reboot-required (libc6); "
                           "service(s) using deleted libraries: patroni.service)"), text
    assert "last patch run: 2026-12-05T16:00:00Z (done)" in text and text.endswith("apt lists never fetched")


def test_a_cut_short_output_is_unknown_never_clean() -> None:
    state = parse_host_patch_state(["----ooha-upgradable----", "Listing..."])
    assert state["pending"] == ()
    assert state["reboot"].reboot, "an unread flag file and no needrestart answer mean: reboot to be sure"
    assert "could not be read" in "; ".join(state["reboot"].reasons)
    assert parse_host_patch_state([])["pending"] is None


def test_an_unreadable_record_is_said_so() -> None:
    lines = [line.format(stamp="") for line in CLEAN_HOST] + ["{not json"]
    assert parse_host_patch_state(lines)["last_run"] == "record unreadable"


def test_the_command_reads_every_section_in_one_round_trip() -> None:
    command = HostPatchState().command()
    for section in ("upgradable", "reboot", "needrestart", "lists", "last"):
        assert f"----ooha-{section}----" in command
    assert "needrestart -b" in command and "apt list --upgradable" in command


def test_a_tool_that_failed_or_timed_out_leaves_its_section_unknown() -> None:
    lines = ["----ooha-upgradable----", "Listing...", "libssl3/stable-security 3.0.15 amd64 [upgradable from: 3.0.11]",
             "----ooha-cut----", "----ooha-reboot----", "no", "----ooha-needrestart----", "NEEDRESTART-VER: 3.6",
             "----ooha-cut----", "----ooha-lists----", "----ooha-last----"]
    state = parse_host_patch_state(lines)
    assert state["pending"] is None
    assert state["reboot"].reboot and any("needrestart -b gave no answer" in r for r in state["reboot"].reasons)
    assert "timeout 60 needrestart -b" in HostPatchState().command()
