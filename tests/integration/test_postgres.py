"""etcd and PostgreSQL/Patroni layers on the lab: converge, the report's lines, a no-op rerun,
and what the hosts look like (TLS-only etcd, secrets files, pg_hba, the DS role)."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from lab.client import changed_operations, explain, output_of, put_private_file, report_lines, secrets, ssh
from lab.workload import cluster_view, healthy, leader_psql, PgWriter, wait_healthy
from tests.integration.deploytools import deploy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1500)]

DATA = ("data1", "data2", "data3")
LAYERS = ("--data", "layers=etcd,postgres")


@pytest.fixture(scope="module")
def first_run(lab: dict[str, Any], pyinfra_cli) -> subprocess.CompletedProcess[str]:
    # Earlier lab tests (an AZ cut, drills) may have just caused a failover: let the cluster
    # settle so the report describes a steady state, not a replica still switching timeline.
    if cluster_view(lab) is not None:
        wait_healthy(lab)
    return deploy(pyinfra_cli, "deploys/ha.py", *LAYERS)


def test_layers_converge_and_report(first_run) -> None:
    output = output_of(first_run)
    assert first_run.returncode == 0, explain(first_run)
    lines = report_lines(output)
    for name in DATA:
        assert lines[(name, "etcd")] == "OK 3 members healthy (data1, data2, data3), TLS with client certs", lines
        assert re.match(r"OK leader data\d, 2 replicas streaming, lag \d+(\.\d)? [kMG]?B, timeline \d+, sync data\d$",
                        lines[(name, "postgres")]), lines[(name, "postgres")]
    assert ("ds1", "postgres") not in lines


def test_second_run_changes_nothing(first_run, pyinfra_cli) -> None:
    rerun = deploy(pyinfra_cli, "deploys/ha.py", *LAYERS)
    output = output_of(rerun)
    assert rerun.returncode == 0, explain(rerun)
    assert changed_operations(output) == {}, changed_operations(output)


def test_no_secret_in_the_output(lab: dict[str, Any], first_run) -> None:
    values = secrets(lab)
    output = output_of(first_run)
    for key in ("postgres_superuser_password", "postgres_replication_password", "postgres_ds_password", "patroni_rest_password"):
        assert str(values[key]) not in output, key


def test_etcd_speaks_tls_with_client_certificates_only(lab: dict[str, Any], first_run) -> None:
    rc, out = ssh(lab, "data1", "curl -s --max-time 5 http://198.18.2.31:2379/health; echo rc=$?")
    assert "rc=0" not in out or '"health"' not in out, out
    rc, out = ssh(lab, "data1", "curl -sk --max-time 5 https://198.18.2.31:2379/health; echo rc=$?")
    assert '"health":"true"' not in out, f"etcd answered without a client certificate: {out}"
    rc, out = ssh(lab, "data1", "sudo curl -s --max-time 5 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/host.crt "
                                "--key /etc/etcd/pki/host.key https://198.18.2.31:2379/health")
    assert '"health":"true"' in out, out


def test_files_and_services(lab: dict[str, Any], first_run) -> None:
    for name in DATA:
        rc, out = ssh(lab, name, "sudo stat -c '%a %U %n' /etc/patroni/config.yml /etc/patroni/pki/host.key "
                                 "/etc/etcd/pki/host.key /etc/default/etcd")
        assert rc == 0 and out.split("\n")[:4] == [
            "600 postgres /etc/patroni/config.yml", "600 postgres /etc/patroni/pki/host.key",
            "600 etcd /etc/etcd/pki/host.key", "600 etcd /etc/default/etcd"], out
        rc, out = ssh(lab, name, "systemctl is-active postgresql@15-main; ls /etc/postgresql/ 2>/dev/null | wc -l")
        assert out.split()[0] != "active", out


def test_pg_hba_scram_and_the_ds_role(lab: dict[str, Any], first_run) -> None:
    view = cluster_view(lab)
    assert healthy(view), view
    leader = view["leader"]
    rc, out = leader_psql(lab, leader, "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'onlyoffice';"
                                       "select pg_get_userbyid(datdba) from pg_database where datname = 'onlyoffice';"
                                       "show password_encryption;")
    assert out.split() == ["t", "onlyoffice", "scram-sha-256"], out
    rc, hba = ssh(lab, leader, "sudo cat /var/lib/postgresql/15/onlyoffice/pg_hba.conf")
    rules = [line for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert all(" trust" not in r and " md5" not in r for r in rules), rules
    assert "host onlyoffice onlyoffice 198.18.1.21/32 scram-sha-256" in rules
    assert not any("0.0.0.0/0" in r or "lb" in r for r in rules), rules

    # The DS role logs in from a Document Server host through the stable endpoint...
    writer = PgWriter(lab, host="ds1")
    writer.prepare(secrets(lab)["postgres_ds_password"])
    rc, out = ssh(lab, "ds1", "PGPASSFILE=$HOME/.ooha-pgpass psql -h 127.0.0.1 -U onlyoffice -d onlyoffice -XAtc "
                              "'select current_user, pg_is_in_recovery()'")
    assert out.strip() == "onlyoffice|f", out
    # ...and is refused from a host that is not a Document Server host (pg_hba lists none).
    other = next(n for n in DATA if n != leader)
    address = next(m["host"] for m in view["members"] if m["name"] == leader)
    put_private_file(lab, other, ".ooha-pgpass", f"*:*:onlyoffice:onlyoffice:{secrets(lab)['postgres_ds_password']}\n")
    try:
        rc, out = ssh(lab, other, f"PGPASSFILE=$HOME/.ooha-pgpass psql -h {address} -U onlyoffice -d onlyoffice -XAtc 'select 1'")
        assert rc != 0 and "no pg_hba.conf entry" in out, out
    finally:
        ssh(lab, other, "rm -f .ooha-pgpass")
