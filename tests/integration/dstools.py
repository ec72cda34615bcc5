"""Helpers for the Document Server lab tests: containers over SSH, editors over websockets, deploys."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from typing import Any

import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lab.client import explain, host_entry, ssh
from tests.integration.deploytools import deploy

CONTAINER = "onlyoffice-documentserver"
DOCS = ("ds1", "ds2", "ds3")
DS_LAYERS = "docker,endpoints,documentserver"
# Everything the documentserver layer needs, without the app tier's other layers (see converge_ds_stack).
DATA_TIER = "etcd,postgres,redis,rabbitmq"


def address(lab: dict[str, Any], host: str) -> str:
    return host_entry(lab, host)["address"]


def docker(lab: dict[str, Any], host: str, args: str, timeout: float = 120) -> tuple[int, str]:
    """``sudo docker ARGS`` on a DS host."""
    return ssh(lab, host, f"sudo docker {args}", timeout=timeout)


def container_id(lab: dict[str, Any], host: str) -> str:
    rc, out = docker(lab, host, f"inspect -f '{{{{.Id}}}}' {CONTAINER}")
    assert rc == 0, out
    return out.strip()


def container_logs(lab: dict[str, Any], host: str) -> str:
    rc, out = docker(lab, host, f"logs {CONTAINER} 2>&1")
    assert rc == 0, out
    return out


def inside(lab: dict[str, Any], host: str, command: str, timeout: float = 60) -> tuple[int, str]:
    """A shell command inside the host's container (docker exec)."""
    return docker(lab, host, f"exec {CONTAINER} sh -c {shlex.quote(command)}", timeout=timeout)


def inactive(lab: dict[str, Any], host: str) -> Any:
    """GET /internal/cluster/inactive inside the container (127.0.0.1:8000): the shutdown flag."""
    rc, out = inside(lab, host, "curl -s -m 5 http://127.0.0.1:8000/internal/cluster/inactive")
    return json.loads(out) if rc == 0 and out.strip() else None


def http(lab: dict[str, Any], host: str, path: str) -> requests.Response | None:
    """GET http://<host>:80<path> from this machine (None when nothing answers)."""
    try:
        return requests.get(f"http://{address(lab, host)}{path}", timeout=5)
    except requests.RequestException:
        return None


def healthy(lab: dict[str, Any], host: str) -> bool:
    answer = http(lab, host, "/healthcheck")
    return answer is not None and answer.status_code == 200 and answer.text.strip() == "true"


@contextlib.contextmanager
def editor(lab: dict[str, Any], host: str, key: str) -> Iterator[ClientConnection]:
    """An editor websocket under /doc/<key>/c/ through the node's port 80; the welcome is checked."""
    url = f"ws://{address(lab, host)}/doc/{key}/c/?EIO=4&transport=websocket"
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "welcome" and hello["key"] == key and hello["node"] == host, hello
        yield ws


def accepts_editors(lab: dict[str, Any], host: str) -> bool | None:
    """True: a new editor websocket opens; False: refused with 503 (shutting down); None: other error."""
    try:
        with editor(lab, host, f"probe-{int(time.time() * 1000)}"):
            return True
    except InvalidStatus as exc:
        return False if exc.response.status_code == 503 else None
    except OSError:
        return None


def send_change(ws: ClientConnection, data: str) -> int:
    """One change through an open editor; returns the acknowledged change_id."""
    ws.send(data)
    while True:
        message = json.loads(ws.recv(timeout=15))
        if message.get("type") == "ack":
            return int(message["change_id"])
        assert message.get("type") != "error", message


def deploy_ds(pyinfra_cli, *extra: str, layers: str = "documentserver"):
    """The main job limited to ``layers`` (base always runs), with extra CLI arguments."""
    return deploy(pyinfra_cli, "deploys/ha.py", "--data", f"layers={layers}", *extra)


def leader(lab: dict[str, Any]) -> str:
    """The data host whose PostgreSQL is the primary now."""
    for host in ("data1", "data2", "data3"):
        rc, out = ssh(lab, host, "sudo -u postgres psql -h /var/run/postgresql -XAtc 'select pg_is_in_recovery()'")
        if rc == 0 and out.strip() == "f":
            return host
    raise AssertionError("no PostgreSQL primary found")


def sql(lab: dict[str, Any], database: str, query: str) -> str:
    """Run ``query`` as the superuser in ``database`` on the primary (peer auth, no password)."""
    cmd = (f"echo {shlex.quote(query)} | sudo -u postgres timeout 10 psql -h /var/run/postgresql "
           f"-d {shlex.quote(database)} -XAtq -v ON_ERROR_STOP=1")
    rc, out = ssh(lab, leader(lab), cmd, timeout=30)
    assert rc == 0, out
    return out.strip()


def doc_changes(lab: dict[str, Any], database: str, key: str) -> int:
    """Rows of doc_changes for document ``key`` in one node's database."""
    return int(sql(lab, database, f"select count(*) from doc_changes where id = '{key}'"))


def converge_ds_stack(pyinfra_cli) -> None:
    """The data tier, docker, endpoints and documentserver in ONE run (layers run in LAYERS order).

    One run is safe: deploys/ha.py calls each layer inside ``host.loop``, which adds the
    layer's position to every operation's identity, so two layers' operations at the same
    line numbers of their modules no longer collide (they once did, and this took two runs).
    """
    result = deploy_ds(pyinfra_cli, layers=f"{DATA_TIER},{DS_LAYERS}")
    assert result.returncode == 0, explain(result)
