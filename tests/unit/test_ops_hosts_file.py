"""ooha/ops/hosts_file.py: one owner per /etc/hosts line, order-stable and idempotent with two
owners (RabbitMQ's peers and pgBackRest's S3 endpoint), the plan as a function and the
operation end to end through the pyinfra CLI on @local against a temp file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pyinfra.api.exceptions import OperationValueError

from ooha.ops.hosts_file import entry_line, plan
from ooha.templating import TEMPLATES, JINJA
from tests.conftest import PYINFRA
from tests.integration.deploytools import changed_operations

DOCKER = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "172.18.0.5\tdata1"]
PEERS = {"data2": "198.18.21.21", "data1": "198.18.20.21", "data3": "198.18.22.21"}
S3 = [("198.18.20.10", "svc1")]


def converge(lines: list[str], *owners: tuple) -> tuple[list[str], list[str]]:
    """Apply each (entries, owner[, adopt]) in turn; returns the file and the owners that changed it."""
    changed = []
    for entries, owner, *adopt in owners:
        new = plan(lines, entries, owner, *adopt)
        if new is not None:
            lines, changed = new, changed + [owner]
    return lines, changed


def test_a_cold_run_then_a_rerun_changes_nothing() -> None:
    """The issue: RabbitMQ's lines were dropped and re-appended at the end, after the S3 line
    the pgBackRest layer had appended in the cold run, so the rerun moved them again."""
    first, changed = converge(DOCKER, (PEERS, "rabbitmq"), (S3, "pgbackrest"))
    assert changed == ["rabbitmq", "pgbackrest"]
    assert first == DOCKER + [
        "198.18.20.21 data1  # onlyoffice-ha rabbitmq",
        "198.18.21.21 data2  # onlyoffice-ha rabbitmq",
        "198.18.22.21 data3  # onlyoffice-ha rabbitmq",
        "198.18.20.10 svc1  # onlyoffice-ha pgbackrest",
    ]
    assert converge(first, (PEERS, "rabbitmq"), (S3, "pgbackrest")) == (first, [])
    # Either owner first: neither moves the other's lines.
    assert converge(first, (S3, "pgbackrest"), (PEERS, "rabbitmq")) == (first, [])
    other_order, _ = converge(DOCKER, (S3, "pgbackrest"), (PEERS, "rabbitmq"))
    assert converge(other_order, (PEERS, "rabbitmq"), (S3, "pgbackrest")) == (other_order, [])


def test_changed_entries_are_edited_in_place() -> None:
    lines, _ = converge(DOCKER, (PEERS, "rabbitmq"), (S3, "pgbackrest"))
    moved = dict(PEERS, data2="198.18.21.99")
    new, changed = converge(lines, (moved, "rabbitmq"), (S3, "pgbackrest"))
    assert changed == ["rabbitmq"]
    assert new == lines[:4] + ["198.18.21.99 data2  # onlyoffice-ha rabbitmq"] + lines[5:]
    # pgBackRest's line first in the file: a RabbitMQ change keeps it first.
    swapped = DOCKER + [lines[-1]] + lines[3:-1]
    new, changed = converge(swapped, (moved, "rabbitmq"), (S3, "pgbackrest"))
    assert changed == ["rabbitmq"] and new[3] == lines[-1] and new[5] == "198.18.21.99 data2  # onlyoffice-ha rabbitmq"


def test_lines_of_the_old_formats_are_kept_or_adopted() -> None:
    # RabbitMQ's earlier lines (tab, same marker) are the same entries: no rewrite.
    old_rabbit = [f"{a}\t{n}  # onlyoffice-ha rabbitmq" for n, a in sorted(PEERS.items())]
    assert plan(DOCKER + old_rabbit, PEERS, "rabbitmq") is None
    # pgBackRest's earlier untagged line is taken over where it is, not duplicated.
    legacy = DOCKER + ["198.18.20.10 svc1"] + old_rabbit
    new = plan(legacy, S3, "pgbackrest", adopt=["198.18.20.10 svc1"])
    assert new == DOCKER + ["198.18.20.10 svc1  # onlyoffice-ha pgbackrest"] + old_rabbit
    assert plan(new, S3, "pgbackrest", adopt=["198.18.20.10 svc1"]) is None


def test_other_lines_are_never_touched_and_empty_entries_remove_the_owners_lines() -> None:
    lines, _ = converge(DOCKER + ["", "# a comment", "10.0.0.1 db  # onlyoffice-ha rabbitmq-other"], (PEERS, "rabbitmq"))
    assert lines[:6] == DOCKER + ["", "# a comment", "10.0.0.1 db  # onlyoffice-ha rabbitmq-other"]
    assert plan(lines, {}, "rabbitmq") == DOCKER + ["", "# a comment", "10.0.0.1 db  # onlyoffice-ha rabbitmq-other"]


@pytest.mark.parametrize("entries, owner", [
    ({"data1": "1.2.3.4; rm -rf /"}, "rabbitmq"),
    ({"data1 # x": "1.2.3.4"}, "rabbitmq"),
    ({"data1": "1.2.3.4"}, "Rabbit MQ"),
    ([("1.2.3.4", [])], "rabbitmq"),
])
def test_bad_input_is_refused(entries, owner) -> None:
    with pytest.raises(OperationValueError):
        plan(DOCKER, entries, owner)


def test_the_boot_unit_writes_the_line_the_operation_writes() -> None:
    from pyinfra.api.util import get_template

    line = entry_line("198.18.20.10", "svc1", "pgbackrest")
    unit = get_template(str(TEMPLATES / "pgbackrest/pgbackrest-s3-hosts.service.j2"), dict(JINJA)).render(
        endpoint_name="svc1", address="198.18.20.10", line=line)
    assert f"ExecStart=/bin/sh -c 'grep -qxF \"{line}\" /etc/hosts || echo \"{line}\" >> /etc/hosts'" in unit
    assert plan(DOCKER + [line], S3, "pgbackrest") is None


# --- end to end: the pyinfra CLI on @local ----------------------------------------------------

DEPLOY = '''
import os

from ooha.ops.hosts_file import hosts_entries

PATH = os.environ["HOSTS"]
hosts_entries(name="RabbitMQ | Peers in /etc/hosts", path=PATH, owner="rabbitmq",
              entries={"data1": "198.18.20.21", "data2": "198.18.21.21", "data3": "198.18.22.21"})
hosts_entries(name="svc1 resolves to 198.18.20.10 (/etc/hosts)", path=PATH, owner="pgbackrest",
              entries=[("198.18.20.10", "svc1")], adopt=["198.18.20.10 svc1"])
'''


def _run(tmp_path: Path, *args: str) -> str:
    result = subprocess.run(
        [PYINFRA, "@local", "deploy.py", "-y", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOSTS": str(tmp_path / "hosts"), "PYINFRA_PROGRESS": "off"}, stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_cli_cold_run_rerun_and_restart(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    (tmp_path / "deploy.py").write_text(DEPLOY)
    hosts.write_text("\n".join(DOCKER) + "\n")
    inode = hosts.stat().st_ino

    cold = _run(tmp_path)
    assert set(changed_operations(cold)) - {"Grand total"} == {
        "RabbitMQ | Peers in /etc/hosts", "svc1 resolves to 198.18.20.10 (/etc/hosts)"}, cold[-3000:]
    converged = hosts.read_text()
    assert converged.splitlines()[-1] == "198.18.20.10 svc1  # onlyoffice-ha pgbackrest"
    assert hosts.stat().st_ino == inode  # rewritten in place (a bind mount cannot be replaced)

    again = _run(tmp_path)
    assert changed_operations(again) == {}, again[-3000:]
    assert hosts.read_text() == converged

    # A restart in the lab: Docker writes a fresh file, the boot unit appends the S3 line.
    line = entry_line("198.18.20.10", "svc1", "pgbackrest")
    hosts.write_text("\n".join(DOCKER + [line]) + "\n")
    restarted = _run(tmp_path)
    assert set(changed_operations(restarted)) - {"Grand total"} == {"RabbitMQ | Peers in /etc/hosts"}, restarted[-3000:]
    assert changed_operations(_run(tmp_path)) == {}
