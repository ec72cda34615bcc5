"""A blank Document Server host gets its files back before its container starts: the pure decision."""

from __future__ import annotations

import json

import pytest

from ooha.facts.filebackup import BlankProbe, parse_blank_probe, parse_status
from ooha.layers.filebackup import blank_decision, choose_snapshot

VOL = ["onlyoffice-data"]
C = "onlyoffice-documentserver"
DATA = "/var/lib/docker/volumes/onlyoffice-data/_data"


def snap(short: str, time: str, paths: list[str]) -> dict:
    return {"id": short * 8, "short_id": short, "time": time, "paths": paths, "hostname": "ds2"}


def status(*snapshots: dict, repository: str = "ok") -> dict:
    lines = ["now 1764928800", "present 2", "timer enabled active"]
    if repository == "ok":
        lines.append("snapshots " + json.dumps(list(snapshots)))
    elif repository == "missing":
        lines.append("missing")
    else:
        lines.append("error Fatal: unable to open config file: connection refused")
    return parse_status(lines)


def probe(docker: bool = True, container: str | None = None, files: int | None = None) -> dict:
    lines = ["docker up" if docker else "docker down"]
    if docker:
        lines.append(f"container {container or 'absent'}")
        lines.append(f"volume onlyoffice-data {'absent' if files is None else files}")
    return parse_blank_probe(lines)


GOOD = snap("aaaa1111", "2026-12-04T02:31:00.123456789Z", [DATA, "/etc/onlyoffice-ha"])
OLDER = snap("bbbb2222", "2026-12-03T02:31:00Z", [DATA, "/etc/onlyoffice-ha"])
NO_DATA = snap("cccc3333", "2026-12-05T02:31:00Z", ["/etc/onlyoffice-ha"])


def test_status_lists_snapshots_oldest_first() -> None:
    listed = status(GOOD, OLDER)["snapshot_list"]
    assert [s["short_id"] for s in listed] == ["bbbb2222", "aaaa1111"] and listed[1]["paths"][0] == DATA


def test_choose_newest_snapshot_that_holds_the_volume() -> None:
    listed = status(OLDER, GOOD, NO_DATA)["snapshot_list"]
    assert choose_snapshot(listed, VOL)["short_id"] == "aaaa1111"
    assert choose_snapshot(status(NO_DATA)["snapshot_list"], VOL) is None


def test_blank_host_with_a_snapshot_is_restored() -> None:
    for files in (None, 0):
        action, snapshot, message = blank_decision("ds2", probe(files=files), status(OLDER, GOOD, NO_DATA), VOL, C)
        assert (action, snapshot) == ("restore", "aaaa1111" * 8) and "aaaa1111" in message


@pytest.mark.parametrize("container", [None, "running", "exited", "restarting"])
def test_a_volume_with_files_is_never_restored_over(container) -> None:
    action, snapshot, message = blank_decision("ds2", probe(container=container, files=5), status(GOOD), VOL, C)
    assert action == "none" and snapshot is None and "not blank" in message


@pytest.mark.parametrize("container", ["running", "exited"])
def test_a_restarted_host_is_never_blank(container) -> None:
    """The container exists (docker keeps it across a restart): never restored, whatever the volume."""
    action, _, _ = blank_decision("ds2", probe(container=container, files=3), status(GOOD), VOL, C)
    assert action == "none"


def test_container_without_data_but_a_snapshot_is_refused_as_ambiguous() -> None:
    action, _, message = blank_decision("ds2", probe(container="exited", files=0), status(GOOD), VOL, C)
    assert action == "refuse" and message.startswith("ds2: onlyoffice-data: ") and "; fix: " in message
    assert "docker rm -f onlyoffice-documentserver" in message


def test_container_without_data_and_no_snapshot_is_a_first_start() -> None:
    action, _, _ = blank_decision("ds2", probe(container="exited", files=0), status(), VOL, C)
    assert action == "none"


def test_new_node_without_snapshot_starts_fresh() -> None:
    for st in (status(), status(repository="missing"), status(NO_DATA)):
        action, snapshot, message = blank_decision("ds4", probe(), st, VOL, C)
        assert action == "none" and snapshot is None and "new node" in message


def test_blank_host_with_unreadable_repository_is_refused() -> None:
    action, _, message = blank_decision("ds2", probe(), status(repository="error"), VOL, C)
    assert action == "refuse" and message.startswith("ds2: filebackup: host is blank") and "fix: " in message
    assert "filebackup_restore_blank=false" in message


def test_docker_down_is_refused_not_guessed() -> None:
    action, _, message = blank_decision("ds2", probe(docker=False), None, VOL, C)
    assert action == "refuse" and message.startswith("ds2: docker: ") and "fix: " in message


def test_missing_script_is_refused() -> None:
    action, _, message = blank_decision("ds2", probe(), None, VOL, C)
    assert action == "refuse" and message.startswith("ds2: filebackup: ")


def test_probe_command_is_read_only() -> None:
    command = BlankProbe().command(container=C, volumes=("onlyoffice-data",))
    for word in ("volume create", "rm ", "restore", "docker run"):
        assert word not in command
    assert "head -n 100" in command and "docker volume inspect" in command
