"""Fixtures for the Document Server stand-in: images built once per session, real PostgreSQL,
Redis and RabbitMQ in a backing container, stand-in containers on a dedicated network
(198.18.30.0/24), everything removed afterwards.

Helpers poll conditions against deadlines; none sleeps blindly.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import pytest
import requests
from docker.models.containers import Container

from lab.client import wait_for
from lab.registry import DS_BROKEN, DS_VERSIONS
from lab.standin import build_backing, build_standin

V1, V1_DATE = "9.3.0.1", "2026-02-10"
V2, V2_DATE = "9.3.1.2", "2026-03-17"
# The lab's deliberately broken build (lab/registry.py), as the registry holds it.
BROKEN = next(iter(DS_BROKEN))
BROKEN_DATE = dict(DS_VERSIONS)[BROKEN]
NETWORK = "ooha-standin-test"
SUBNET = "198.18.30.0/24"
BACKING_IP = "198.18.30.10"
LABEL = {"ooha.standin-test": "1"}
DB_NAME, DB_USER, DB_PWD = "onlyoffice", "onlyoffice", "standin-db-pw"
REDIS_PASS, SENTINEL_PASS = "standin-redis-pw", "standin-sentinel-pw"
AMQP_USER, AMQP_PASS = "ds", "standin-amqp-pw"
JWT_SECRET = "standin-jwt-secret-for-tests"


def hs256(payload: dict, secret: str) -> str:
    """An HS256 JWT, as an integrator's backend would sign a command."""
    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + enc(json.dumps(payload).encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + enc(sig)


def exec_ok(container: Container, cmd: list[str] | str, user: str = "root") -> str:
    """Run a command in a container and return its output; fail the test on a non-zero exit."""
    result = container.exec_run(cmd, user=user)
    out = result.output.decode(errors="replace")
    assert result.exit_code == 0, f"{cmd!r} in {container.name} exited {result.exit_code}: {out}"
    return out


@dataclass
class Backing:
    """The backing-services container (PostgreSQL 15, Redis + Sentinel, RabbitMQ)."""
    container: Container
    ip: str = BACKING_IP

    def svc(self, action: str, name: str) -> None:
        """Stop or start one backing service in place (`svc` script in the image)."""
        exec_ok(self.container, ["svc", action, name])

    def psql(self, sql: str, db: str = DB_NAME) -> str:
        """Run SQL as the postgres superuser and return unaligned tuples-only output."""
        return exec_ok(self.container, ["psql", "-tAq", "-d", db, "-c", sql], user="postgres").strip()

    def create_database(self, name: str) -> str:
        """A fresh database owned by the stand-in's user (the DS needs it to exist)."""
        exec_ok(self.container, ["createdb", "-O", DB_USER, name], user="postgres")
        return name


@dataclass
class StandIn:
    """One running stand-in container and how to reach it from the test host."""
    container: Container
    ip: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.ip}"

    @property
    def direct(self) -> str:
        return f"http://{self.ip}:8000"

    def health(self, base: str | None = None) -> str:
        """Body of /healthcheck, asserting the real server's HTTP 200 in every case."""
        resp = requests.get((base or self.url) + "/healthcheck", timeout=15)
        assert resp.status_code == 200, resp.text
        return resp.text

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(f"{self.container.name} healthcheck true",
                 lambda: self.health() == "true",
                 timeout, interval=0.3, tolerate=(Exception,))

    def inactive(self) -> bool:
        return requests.get(self.direct + "/internal/cluster/inactive", timeout=5).json() is True

    def local_json(self) -> dict:
        return json.loads(exec_ok(self.container, ["cat", "/etc/onlyoffice/documentserver/local.json"]))

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def restart(self) -> None:
        """docker restart (SIGTERM, then start) and wait until it is healthy again."""
        self.container.restart(timeout=20)
        self.container.reload()
        self.wait_healthy()


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env(version="auto")


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Both good stand-in versions (ee), the broken one, community of V1 and the backing image; cached builds."""
    return {
        "backing": build_backing(docker_client),
        V1: build_standin(docker_client, V1, V1_DATE),
        V2: build_standin(docker_client, V2, V2_DATE),
        BROKEN: build_standin(docker_client, BROKEN, BROKEN_DATE, defect=DS_BROKEN[BROKEN]),
        "community": build_standin(docker_client, V1, V1_DATE, edition="community"),
    }


def _remove_leftovers(client: docker.DockerClient) -> None:
    """Containers and the network of an earlier, interrupted run of this suite (ours only)."""
    for c in client.containers.list(all=True, filters={"label": "ooha.standin-test=1"}):
        c.remove(force=True, v=True)
    for net in client.networks.list(names=[NETWORK]):
        net.remove()


@pytest.fixture(scope="session")
def network(docker_client: docker.DockerClient, images: dict[str, str]) -> Iterator[str]:
    _remove_leftovers(docker_client)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=SUBNET)])
    net = docker_client.networks.create(NETWORK, driver="bridge", ipam=ipam, labels=LABEL)
    yield NETWORK
    _remove_leftovers(docker_client)
    for vol in docker_client.volumes.list(filters={"label": "ooha.standin-test=1"}):
        vol.remove(force=True)
    del net


def run_container(client: docker.DockerClient, image: str, name: str, ip: str, env: dict[str, str],
                  volumes: dict | None = None) -> Container:
    """Create the container on the test network with a fixed address, then start it."""
    networking = client.api.create_networking_config({NETWORK: client.api.create_endpoint_config(ipv4_address=ip)})
    host_config = client.api.create_host_config(binds=volumes or {})
    created = client.api.create_container(image, name=name, hostname=name.removeprefix("ooha-standin-"),
                                          environment=env, labels=LABEL, networking_config=networking,
                                          host_config=host_config)
    container = client.containers.get(created["Id"])
    container.start()
    return container


@pytest.fixture(scope="session")
def backing(docker_client: docker.DockerClient, images: dict[str, str], network: str) -> Backing:
    container = run_container(docker_client, images["backing"], "ooha-standin-backing", BACKING_IP, {
        "DB_NAME": DB_NAME, "DB_USER": DB_USER, "DB_PWD": DB_PWD, "REDIS_PASS": REDIS_PASS,
        "SENTINEL_PASS": SENTINEL_PASS, "AMQP_USER": AMQP_USER, "AMQP_PASS": AMQP_PASS})
    wait_for("backing services ready",
             lambda: container.exec_run(["test", "-f", "/run/backing-ready"]).exit_code == 0,
             120, interval=0.3, tolerate=(Exception,))
    return Backing(container)


def ds_env(**overrides: str) -> dict[str, str]:
    """The env a deploy gives the Document Server, pointed at the backing container."""
    env = {
        "DB_TYPE": "postgres", "DB_HOST": BACKING_IP, "DB_PORT": "5432", "DB_NAME": DB_NAME,
        "DB_USER": DB_USER, "DB_PWD": DB_PWD,
        "AMQP_URI": f"amqp://{AMQP_USER}:{AMQP_PASS}@{BACKING_IP}:5672",
        "REDIS_SERVER_HOST": BACKING_IP, "REDIS_SERVER_PORT": "6379", "REDIS_SERVER_PASS": REDIS_PASS,
        "JWT_ENABLED": "true", "JWT_SECRET": JWT_SECRET, "SECURE_LINK_SECRET": "standin-secure-link",
        "SOME_UNKNOWN_VARIABLE": "accepted",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture
def standin(docker_client: docker.DockerClient, images: dict[str, str], backing: Backing) -> Iterator[Callable[..., StandIn]]:
    """Factory: start a stand-in (version or 'community') with env overrides; removed after the test.

    `env` values of None remove a variable (e.g. JWT_SECRET=None for a random secret).
    """
    started: list[Container] = []

    def start(version: str = V1, *, wait: bool = True, volumes: dict | None = None,
              files: dict[str, str] | None = None, **env: str | None) -> StandIn:
        ip = f"198.18.30.{21 + len(started) + 10 * _test_slot()}"
        name = f"ooha-standin-ds-{uuid.uuid4().hex[:6]}"
        full_env = ds_env(**env)
        if files:
            # Files a deploy would mount (e.g. local-production-linux.json) are copied in before start.
            networking = docker_client.api.create_networking_config(
                {NETWORK: docker_client.api.create_endpoint_config(ipv4_address=ip)})
            created = docker_client.api.create_container(
                images[version], name=name, hostname=name.removeprefix("ooha-standin-"), environment=full_env,
                labels=LABEL, networking_config=networking,
                host_config=docker_client.api.create_host_config(binds=volumes or {}))
            container = docker_client.containers.get(created["Id"])
            for path, content in files.items():
                container.put_archive("/", _tar({path.lstrip("/"): content}))
            container.start()
        else:
            container = run_container(docker_client, images[version], name, ip, full_env, volumes)
        started.append(container)
        node = StandIn(container, ip, full_env)
        if wait:
            node.wait_healthy()
        return node

    yield start
    for container in started:
        container.remove(force=True, v=True)


_slot = [0]


def _test_slot() -> int:
    """Addresses .21-.29, .31-.39, ... rotate per test so a removed container's ARP entry never
    points a new test at a stale MAC."""
    return _slot[0]


@pytest.fixture(autouse=True)
def _next_slot() -> Iterator[None]:
    yield
    _slot[0] = (_slot[0] + 1) % 20


def _tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def data_volume(docker_client: docker.DockerClient, network: str) -> Iterator[str]:
    """A named volume for /var/www/onlyoffice/Data, persisted across containers like a deploy's."""
    vol = docker_client.volumes.create(f"ooha-standin-data-{uuid.uuid4().hex[:6]}", labels=LABEL)
    yield vol.name
    try:
        vol.remove(force=True)
    except docker.errors.APIError:
        pass
