"""The Document Server layer on the lab: per-node objects, private files, closed ports, idempotence.

Non-disruptive (shared lab lock): nothing here recreates or stops a container.  The drills
that do (env/version changes, the example switch, SIGTERM and table-reset traps) are in
test_drill_documentserver.py under the exclusive lock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from lab.client import changed_operations, explain, lab_lock, output_of, report_lines, ssh
from tests.integration.dstools import (
    CONTAINER,
    DOCS,
    DS_LAYERS,
    address,
    container_id,
    converge_ds_stack,
    deploy_ds,
    docker,
    http,
    inside,
    sql,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def ds_lab(lab: dict[str, Any], pyinfra_cli) -> dict[str, Any]:
    """The layers the Document Server layer needs, and it, converged (shared lock)."""
    with lab_lock(exclusive=False):
        converge_ds_stack(pyinfra_cli)
    return lab


def _secrets(lab: dict[str, Any]) -> dict[str, Any]:
    with open(lab["secrets_file"], encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_rerun_changes_nothing_and_keeps_every_container(ds_lab: dict[str, Any], pyinfra_cli) -> None:
    before = {host: container_id(ds_lab, host) for host in DOCS}
    with lab_lock(exclusive=False):
        result = deploy_ds(pyinfra_cli, layers=DS_LAYERS)
    output = output_of(result)
    assert result.returncode == 0, explain(result)
    assert changed_operations(output) == {}, changed_operations(output)
    assert {host: container_id(ds_lab, host) for host in DOCS} == before
    lines = report_lines(output)
    for host in DOCS:
        line = lines[(host, "documentserver")]
        assert line.startswith("OK documentserver-ee:9.3.0.1 running, healthcheck true, version 9.3.0.1"), line
        assert "example off: /example/ answers 502" in line and line.endswith("fix: set ds_example_enabled=true"), line
    leaked = [key for key, value in _secrets(ds_lab).items() if isinstance(value, str) and len(value) >= 8 and value in output]
    assert leaked == [], f"secrets printed by the deploy: {leaked}"


def test_each_node_uses_its_own_database_vhost_and_prefix(ds_lab: dict[str, Any]) -> None:
    owners = sql(ds_lab, "postgres", "select datname || '=' || pg_get_userbyid(datdba) from pg_database "
                                     "where datname like 'onlyoffice%' order by 1").split()
    for host in DOCS:
        assert f"onlyoffice_{host}=onlyoffice" in owners, owners
        rc, out = inside(ds_lab, host, 'echo "$DB_NAME ${AMQP_URI##*/} $DB_HOST"')
        assert rc == 0 and out.split() == [f"onlyoffice_{host}", f"onlyoffice_{host}", "198.19.0.1"], out
        rc, out = inside(ds_lab, host, "cat /etc/onlyoffice/documentserver/local-production-linux.json")
        redis = json.loads(out)["services"]["CoAuthoring"]["redis"]
        assert rc == 0 and redis["name"] == "ioredis" and redis["prefix"] == f"ds:{host}:", redis["prefix"]
        assert [s["port"] for s in redis["iooptions"]["sentinels"]] == [26379, 26379, 26379]
    rc, out = ssh(ds_lab, "data1", "sudo rabbitmqctl list_vhosts --formatter json")
    vhosts = {row["name"] for row in json.loads(out)}
    assert {f"onlyoffice_{host}" for host in DOCS} <= vhosts, vhosts
    for host in DOCS:
        rc, out = ssh(ds_lab, "data1", f"sudo rabbitmqctl list_permissions -p onlyoffice_{host} --formatter json")
        assert [row["user"] for row in json.loads(out)] == ["onlyoffice"], out
        rc, out = ssh(ds_lab, "data1", f"sudo rabbitmqctl list_policies -p onlyoffice_{host} --formatter json")
        assert [row["name"] for row in json.loads(out)] == ["ha-onlyoffice"], out
        # The node's own pubsub subscriber lives in its own vhost (DocService declared it there).
        rc, out = ssh(ds_lab, "data1", f"sudo rabbitmqctl list_exchanges -p onlyoffice_{host} name --formatter json")
        assert "ds.pubsub" in {row["name"] for row in json.loads(out)}, out


def test_files_are_private_and_secrets_only_in_the_env_file(ds_lab: dict[str, Any]) -> None:
    rc, out = ssh(ds_lab, "ds2", "sudo stat -c '%n %a %U %G' /etc/onlyoffice-ha/documentserver "
                                 "/etc/onlyoffice-ha/documentserver/documentserver.env "
                                 "/etc/onlyoffice-ha/documentserver/local-production-linux.json")
    assert rc == 0, out
    assert out.split("\n")[:3] == [
        "/etc/onlyoffice-ha/documentserver 700 root root",
        "/etc/onlyoffice-ha/documentserver/documentserver.env 600 root root",
        "/etc/onlyoffice-ha/documentserver/local-production-linux.json 644 root root",
    ], out
    secrets = _secrets(ds_lab)
    rc, out = ssh(ds_lab, "ds2", "ps -eo args")
    assert rc == 0 and secrets["jwt_secret"] not in out and secrets["postgres_ds_password"] not in out
    # Identical JWT and secure-link secrets on every node (compared as digests, never printed).
    digests = set()
    for host in DOCS:
        rc, out = inside(ds_lab, host, 'printf %s "$JWT_SECRET/$SECURE_LINK_SECRET" | sha256sum')
        assert rc == 0, out
        digests.add(out.split()[0])
    assert len(digests) == 1


def test_port_8000_and_internal_endpoints_are_closed_to_other_hosts(ds_lab: dict[str, Any]) -> None:
    ds1 = address(ds_lab, "ds1")
    for source in ("ds2", "lb1"):
        # Control: the source reaches ds1's published port 80 (so the refusals below mean something).
        rc, out = ssh(ds_lab, source, f"curl -s -m 5 http://{ds1}/healthcheck")
        assert rc == 0 and out.strip() == "true", (source, out)
        rc, out = ssh(ds_lab, source, f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{ds1}:8000/index.html")
        assert rc != 0 and out.strip() == "000", (source, rc, out)
        rc, out = ssh(ds_lab, source, f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' http://{ds1}/internal/cluster/inactive")
        assert out.strip() in ("403", "404"), (source, out)
    # On the host itself nothing listens on 8000 either (only 80 is published, on the private address).
    rc, out = ssh(ds_lab, "ds1", "curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/index.html")
    assert out.strip() == "000", out
    rc, out = docker(ds_lab, "ds1", f"port {CONTAINER}")
    assert rc == 0 and out.split("\n")[0].strip() == f"80/tcp -> {ds1}:80", out


def test_command_service_needs_the_shared_jwt(ds_lab: dict[str, Any]) -> None:
    """The version the report shows comes from /command, which refuses an unsigned request."""
    answer = http(ds_lab, "ds3", "/healthcheck")
    assert answer is not None and answer.text == "true"
    rc, out = ssh(ds_lab, "ds3", f"curl -s -m 5 -X POST -H 'Content-Type: application/json' --data '{{\"c\":\"version\"}}' "
                                 f"http://{address(ds_lab, 'ds3')}/command")
    assert rc == 0 and json.loads(out) == {"error": 6}, out


def test_a_ds_host_reaches_only_its_own_node_database(ds_lab: dict[str, Any]) -> None:
    """pg_hba: ds1 (through its endpoint) may open onlyoffice_ds1 but not ds2's database."""
    from tests.integration.test_endpoints import ssh_stdin

    password = _secrets(ds_lab)["postgres_ds_password"] + "\n"
    psql = ("read -r PGPASSWORD; export PGPASSWORD; psql -h 127.0.0.1 -p 5432 -U onlyoffice -d {db} "
            "-XAtc 'select current_database()'")
    rc, out = ssh_stdin(ds_lab, "ds1", psql.format(db="onlyoffice_ds1"), password)
    assert rc == 0 and out.strip() == "onlyoffice_ds1", out
    rc, out = ssh_stdin(ds_lab, "ds1", psql.format(db="onlyoffice_ds2"), password)
    assert rc != 0 and "no pg_hba.conf entry" in out and 'database "onlyoffice_ds2"' in out, out
