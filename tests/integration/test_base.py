"""The main job against the lab over real SSH: converge, rerun as a no-op, break, repair.

Order matters inside this module (each test builds on the hosts the previous one
left); the whole module is bounded by pytest-timeout.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from lab.client import changed_operations, explain, output_of, report_lines, ssh, TARGETS
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1800)]

@pytest.fixture(scope="module")
def first_run(lab: dict[str, Any], pyinfra_cli) -> subprocess.CompletedProcess[str]:
    return deploy(pyinfra_cli)


def test_main_job_converges_and_reports_every_host(first_run) -> None:
    output = output_of(first_run)
    assert first_run.returncode == 0, explain(first_run)
    lines = report_lines(output)
    for name in TARGETS:
        line = lines.get((name, "base"), "missing")
        assert line.startswith("OK chrony synced to 198.18.20.10"), f"{name}: {line}"
        assert "sysctl baseline applied" in line
    assert re.search(r"^front door: https://198\.18\.10\.100/ \(VIP on lb[12]\)$", output, re.M), output[-4000:]
    summary = re.search(r"^validation: (\d+)/(\d+) checks OK on (\d+) host\(s\)$", output, re.M)
    assert summary, output[-4000:]
    assert summary[1] == summary[2] and summary[3] == str(len(TARGETS)), summary[0]
    assert all(line.startswith("OK") for line in lines.values()), lines


def test_rerun_changes_nothing(first_run, pyinfra_cli) -> None:
    rerun = deploy(pyinfra_cli)
    output = output_of(rerun)
    assert rerun.returncode == 0, explain(rerun)
    assert "--> Results:" in output
    assert changed_operations(output) == {}, output[-4000:]


def test_rerun_right_after_the_sessions_first_converge_changes_nothing(converge_runs) -> None:
    """The suite's first converge (cold on a fresh lab) is followed at once by a rerun: 0 changed."""
    rerun = converge_runs["rerun"]
    output = output_of(rerun)
    assert rerun.returncode == 0, explain(rerun)
    assert "--> Results:" in output
    assert changed_operations(output) == {}, output[-4000:]


def test_hosts_have_the_base_layer(lab: dict[str, Any], first_run) -> None:
    rc, sources = ssh(lab, "data2", "chronyc -n sources")
    assert rc == 0 and re.search(r"^\^\*\s+198\.18\.20\.10\s", sources, re.M), sources
    rc, proxy = ssh(lab, "ds1", "cat /etc/apt/apt.conf.d/01proxy")
    assert rc == 0 and 'Acquire::http::Proxy "http://198.18.20.10:3142";' in proxy
    rc, values = ssh(lab, "lb1", "/usr/sbin/sysctl -n net.ipv4.tcp_keepalive_time net.ipv4.ip_nonlocal_bind net.core.somaxconn")
    assert rc == 0 and values.split() == ["60", "1", "4096"], values
    rc, persisted = ssh(lab, "lb1", "cat /etc/sysctl.d/60-onlyoffice-ha.conf")
    assert "net.ipv4.ip_nonlocal_bind = 1" in persisted
    rc, zone = ssh(lab, "ds2", "readlink -f /etc/localtime")
    assert zone.strip() == "/usr/share/zoneinfo/Etc/UTC"


def test_validation_names_a_broken_host_and_the_deploy_repairs_it(lab: dict[str, Any], first_run, pyinfra_cli) -> None:
    rc, out = ssh(lab, "data2", "sudo systemctl stop chrony")
    assert rc == 0, out

    broken = deploy(pyinfra_cli, "deploys/validate.py")
    output = output_of(broken)
    assert broken.returncode != 0, output[-4000:]
    lines = report_lines(output)
    assert lines[("data2", "base")].startswith("FAIL chrony not answering"), lines
    assert all(lines[(name, "base")].startswith("OK") for name in TARGETS if name != "data2"), lines

    repaired = deploy(pyinfra_cli)
    output = output_of(repaired)
    assert repaired.returncode == 0, explain(repaired)
    assert "Base | chrony running and enabled" in changed_operations(output)
    assert report_lines(output)[("data2", "base")].startswith("OK chrony synced to 198.18.20.10")
