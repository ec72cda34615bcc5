"""The stand-in behaves like the real Document Server container in every way a deploy relies on
(shared/DS-FACTS.md), against real PostgreSQL 15, Redis and RabbitMQ."""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lab.client import wait_for

from .conftest import JWT_SECRET, REDIS_PASS, SENTINEL_PASS, V1, V1_DATE, V2, V2_DATE, BACKING_IP, \
    Backing, StandIn, exec_ok, hs256

pytestmark = pytest.mark.standin


@contextlib.contextmanager
def open_editor(node: StandIn, key: str, through_nginx: bool = True) -> Iterator[ClientConnection]:
    """An editor websocket under /doc/<key>/c/, its welcome message checked, closed on exit."""
    base = f"ws://{node.ip}" if through_nginx else f"ws://{node.ip}:8000"
    with connect(f"{base}/doc/{key}/c/?EIO=4&transport=websocket", open_timeout=10, close_timeout=2) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "welcome" and hello["key"] == key
        assert hello["node"] == node.container.name.removeprefix("ooha-standin-")
        assert hello["version"] == node.container.labels["ooha.ds.version"]
        yield ws


def editor_refused(node: StandIn) -> bool:
    """True when a new editor connection is refused (shutdown flag set on that node)."""
    try:
        with open_editor(node, "probe"):
            return False
    except InvalidStatus as exc:
        return exc.response.status_code == 503


def edit_connections(node: StandIn) -> int:
    return requests.get(node.direct + "/internal/connections/edit", timeout=5).json()


# --- health -------------------------------------------------------------------------------------

@pytest.mark.parametrize("service", ["postgres", "redis", "rabbitmq"])
def test_healthcheck_body_follows_each_backing_service(standin, backing: Backing, service: str) -> None:
    node = standin()
    assert node.health() == "true" and node.health(node.direct) == "true"
    backing.svc("stop", service)
    try:
        wait_for(f"healthcheck false with {service} down",
                 lambda: node.health() == "false",
                 30, interval=0.3, tolerate=(Exception,))
        started = time.monotonic()
        assert node.health(node.direct) == "false"  # still HTTP 200 (asserted in health())
        assert time.monotonic() - started < 8, "each check must be bounded"
    finally:
        backing.svc("start", service)
    wait_for(f"healthcheck true after {service} is back",
             lambda: node.health() == "true",
             60, interval=0.3, tolerate=(Exception,))


def test_healthcheck_is_bounded_when_backing_host_hangs(standin, backing: Backing) -> None:
    """A frozen host (accepts nothing, refuses nothing) must not hang /healthcheck."""
    node = standin()
    backing.container.pause()
    try:
        started = time.monotonic()
        assert node.health() == "false"
        assert time.monotonic() - started < 8, "each check must be bounded by a short timeout"
    finally:
        backing.container.unpause()
    wait_for("healthcheck true after the host is back",
             lambda: node.health() == "true",
             60, interval=0.3, tolerate=(Exception,))


def test_community_edition_ignores_redis(standin, backing: Backing) -> None:
    ee, community = standin(), standin("community")
    backing.svc("stop", "redis")
    try:
        wait_for("ee healthcheck false with Redis down",
                 lambda: ee.health() == "false",
                 30, interval=0.3, tolerate=(Exception,))
        assert community.health() == "true"
    finally:
        backing.svc("start", "redis")
    ee.wait_healthy()


def test_sentinel_from_local_production_linux_json(standin) -> None:
    """Redis reached only through Sentinel: REDIS_SERVER_HOST points nowhere, the config file a
    deploy mounts names the sentinels (services.CoAuthoring.redis.name = "ioredis")."""
    override = {"services": {"CoAuthoring": {"redis": {"name": "ioredis", "iooptions": {
        "sentinels": [{"host": BACKING_IP, "port": 26379}], "name": "mymaster",
        "password": REDIS_PASS, "sentinelPassword": SENTINEL_PASS}}}}}
    node = standin(REDIS_SERVER_HOST="198.18.30.254", files={
        "/etc/onlyoffice/documentserver/local-production-linux.json": json.dumps(override)})
    assert node.health() == "true"
    assert "Sentinel" in exec_ok(node.container, ["cat", "/var/log/onlyoffice/documentserver/docservice/out.log"])


# --- example, version, index ----------------------------------------------------------------------

def test_example_502_until_started(standin) -> None:
    node = standin()
    welcome = requests.get(node.url + "/", timeout=5)
    assert welcome.status_code == 200 and 'href="/example/"' in welcome.text
    assert requests.get(node.url + "/example/", timeout=5).status_code == 502
    error_log = exec_ok(node.container, ["cat", "/var/log/onlyoffice/documentserver/nginx.error.log"])
    assert "connect() failed (111: Connection refused)" in error_log
    exec_ok(node.container, ["supervisorctl", "start", "ds:example"])
    wait_for("example 200",
             lambda: requests.get(node.url + "/example/", timeout=5).status_code == 200,
             20, interval=0.3, tolerate=(Exception,))


def test_example_autostart_true_survives_restart(standin) -> None:
    node = standin()
    exec_ok(node.container, ["sed", "-i", "s/^autostart=false/autostart=true/",
                             "/etc/supervisor/conf.d/ds-example.conf"])
    node.restart()
    wait_for("example 200 after restart with autostart=true",
             lambda: requests.get(node.url + "/example/", timeout=5).status_code == 200,
             20, interval=0.3, tolerate=(Exception,))


def test_version_command_and_jwt(standin) -> None:
    node = standin()
    version = {"c": "version"}
    for path in ("/command", "/coauthoring/CommandService.ashx"):
        url = node.url + path
        assert requests.post(url, json=version, timeout=5).json() == {"error": 6}
        bad = hs256(version, "not-the-secret")
        assert requests.post(url, json={"token": bad}, timeout=5).json() == {"error": 6}
        good = hs256(version, JWT_SECRET)
        assert requests.post(url, json={"token": good}, timeout=5).json() == {"error": 0, "version": V1}
        assert requests.post(url, json=version, headers={"Authorization": "Bearer " + good},
                             timeout=5).json() == {"error": 0, "version": V1}
    index = requests.get(node.direct + "/index.html", timeout=5)
    assert index.status_code == 200 and index.text == f"Server is functioning normally. Version: {V1}"


def test_version_command_without_jwt(standin) -> None:
    node = standin(V2, JWT_ENABLED="false")
    assert requests.post(node.url + "/command", json={"c": "version"}, timeout=5).json() == {"error": 0, "version": V2}


def test_internal_only_from_localhost_through_nginx(standin) -> None:
    node = standin()
    assert requests.get(node.url + "/internal/cluster/inactive", timeout=5).status_code == 403
    assert exec_ok(node.container, ["curl", "-sf", "http://localhost/internal/cluster/inactive"]).strip() == "false"
    assert requests.get(node.direct + "/internal/cluster/inactive", timeout=5).json() is False


def test_pre_stop_is_node_local(standin) -> None:
    a, b = standin(), standin()
    assert requests.put(a.direct + "/internal/cluster/pre-stop", timeout=5).json() is True
    assert not b.inactive() and not a.inactive()
    assert not editor_refused(b)
    assert requests.delete(a.direct + "/internal/cluster/pre-stop", timeout=5).json() is False


# --- secrets and local.json ----------------------------------------------------------------------

def test_unset_secrets_change_at_every_restart(standin) -> None:
    node = standin(JWT_SECRET=None, SECURE_LINK_SECRET=None)
    before = node.local_json()
    node.restart()
    after = node.local_json()
    assert before["services"]["CoAuthoring"]["secret"]["inbox"]["string"] != \
        after["services"]["CoAuthoring"]["secret"]["inbox"]["string"]
    assert before["storage"]["fs"]["secretString"] != after["storage"]["fs"]["secretString"]


def test_set_secrets_survive_restart_and_local_json_is_rebuilt_from_env(standin) -> None:
    node = standin()
    before = node.local_json()
    assert before["services"]["CoAuthoring"]["secret"]["inbox"]["string"] == JWT_SECRET
    exec_ok(node.container, ["rm", "/etc/onlyoffice/documentserver/local.json"])
    node.restart()
    after = node.local_json()
    assert after == before
    assert after["services"]["CoAuthoring"]["sql"]["dbHost"] == BACKING_IP
    good = hs256({"c": "version"}, JWT_SECRET)
    assert requests.post(node.url + "/command", json={"token": good}, timeout=5).json()["error"] == 0


# --- cluster shutdown ----------------------------------------------------------------------------

def test_inactive_is_broadcast_to_every_node(standin) -> None:
    a, b = standin(), standin()
    exec_ok(a.container, ["curl", "-sf", "-X", "PUT", "http://localhost/internal/cluster/inactive"])
    wait_for("both nodes inactive", lambda: a.inactive() and b.inactive(), 15, interval=0.3, tolerate=(Exception,))
    assert editor_refused(a) and editor_refused(b)
    requests.delete(b.direct + "/internal/cluster/inactive", timeout=5).raise_for_status()
    wait_for("both nodes active again",
             lambda: not a.inactive() and not b.inactive(),
             15, interval=0.3, tolerate=(Exception,))
    assert not editor_refused(a) and not editor_refused(b)


def test_sigterm_of_one_node_disables_the_other(standin) -> None:
    a, b = standin(), standin()
    a.container.stop(timeout=20)
    assert "SIGTERM: shutting the cluster down" in a.logs()
    wait_for("surviving node inactive after docker stop of the other",
             b.inactive,
             15, interval=0.3, tolerate=(Exception,))
    assert editor_refused(b)


@pytest.mark.parametrize("env", [{"ONLYOFFICE_DATA_CONTAINER": "true"},
                                 {"ONLYOFFICE_DATA_CONTAINER_HOST": "ds-data"}])
def test_sigterm_without_default_data_container_vars_does_not_broadcast(standin, env: dict) -> None:
    a, b = standin(**env), standin()
    a.container.stop(timeout=20)
    assert "no cluster shutdown" in a.logs()
    # A broadcast from the trap would be published before `docker stop` returns; observe b for a
    # bounded window in which it would have arrived.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert not b.inactive(), "node became inactive although the stopped node must not broadcast"
        time.sleep(0.2)
    assert not editor_refused(b)


# --- editing sessions and schema -----------------------------------------------------------------

def test_connections_edit_counts_open_websockets(standin) -> None:
    node = standin()
    assert edit_connections(node) == 0
    with contextlib.ExitStack() as last:
        with contextlib.ExitStack() as first_two:
            for i in range(2):
                first_two.enter_context(open_editor(node, f"count-{i}", through_nginx=i == 0))
            last.enter_context(open_editor(node, "count-2"))
            wait_for("3 editing connections",
                     lambda: edit_connections(node) == 3,
                     10, interval=0.3, tolerate=(Exception,))
        wait_for("1 editing connection", lambda: edit_connections(node) == 1, 10, interval=0.3, tolerate=(Exception,))
    wait_for("0 editing connections", lambda: edit_connections(node) == 0, 10, interval=0.3, tolerate=(Exception,))


def write_changes(node: StandIn, key: str, count: int) -> None:
    """Send `count` changes in one editing session; each must be acknowledged in order."""
    with open_editor(node, key) as ws:
        for i in range(count):
            ws.send(json.dumps({"type": "saveChanges", "changes": [f"change {i}"]}))
            ack = json.loads(ws.recv(timeout=10))
            assert ack == {"type": "ack", "key": key, "change_id": i}


def test_version_change_drops_the_editing_tables(standin, backing: Backing, data_volume: str) -> None:
    db = backing.create_database(f"schema_{int(time.time() * 1000)}")
    volumes = {data_volume: {"bind": "/var/www/onlyoffice/Data", "mode": "rw"}}
    count = "SELECT (SELECT count(*) FROM doc_changes) || ',' || (SELECT count(*) FROM task_result)"

    old = standin(V1, DB_NAME=db, volumes=volumes)
    assert "first start" in old.logs()
    write_changes(old, "doc-survives", 3)
    assert backing.psql(count, db) == "3,1"
    old.restart()
    assert backing.psql(count, db) == "3,1", "same version: rows survive a restart"
    assert f"release date {V1_DATE} unchanged" in old.logs()
    old.container.stop(timeout=20)

    new = standin(V2, DB_NAME=db, volumes=volumes)
    assert f"release date changed {V1_DATE} -> {V2_DATE}" in new.logs()
    assert backing.psql(count, db) == "0,0", "upgrade drops and recreates the tables"
    assert exec_ok(new.container, ["cat", "/var/www/onlyoffice/Data/.private/ds_release_date"]).strip() == V2_DATE
    assert backing.psql("SELECT count(*) FROM pg_proc WHERE proname = 'merge_db'", db) == "1"

    write_changes(new, "doc-rollback", 2)
    assert backing.psql(count, db) == "2,1"
    new.container.stop(timeout=20)
    rolled_back = standin(V1, DB_NAME=db, volumes=volumes)
    assert f"release date changed {V2_DATE} -> {V1_DATE}" in rolled_back.logs()
    assert backing.psql(count, db) == "0,0", "a downgrade drops the tables exactly like an upgrade"
