"""Endpoints layer: the HAProxy template, the Redis AUTH check, the stats parser, the check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import re
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest

from ooha import contract
from ooha.layers import endpoints
from ooha.layers.endpoints import redis_auth_hex
from ooha.facts.haproxy import parse_stats_csv

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

STATS = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
stats,FRONTEND,,,0,1,,1,0,0,0,0,0,,,,,OPEN,
pg-primary,FRONTEND,,,0,0,,0,0,0,0,0,0,,,,,OPEN,
pg-primary,data1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
pg-primary,data2,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1
pg-primary,data3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2,1
pg-primary,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP,1
rabbitmq,data1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/2,1
""".splitlines()


def test_stats_csv_gives_server_states_per_proxy() -> None:
    assert parse_stats_csv(STATS) == {
        "pg-primary": {"data1": "DOWN", "data2": "UP", "data3": "DOWN 1/2"},
        "rabbitmq": {"data1": "UP 1/2"},
    }


def test_no_stats_page_gives_nothing() -> None:
    assert parse_stats_csv([]) == {}
    assert parse_stats_csv(["curl: (7) Failed to connect"]) == {}


def test_redis_auth_is_a_resp_array_so_any_password_byte_survives() -> None:
    password = 'p a$s"w\\rd'
    raw = bytes.fromhex(redis_auth_hex(password))
    assert raw == b'*2\r\n$4\r\nAUTH\r\n$10\r\np a$s"w\\rd\r\n'


def render(**overrides) -> str:
    variables = {
        "bind_addresses": ["127.0.0.1", "198.19.0.1"], "stats_port": 8404, "pg_primary_port": 5432,
        "pg_replicas_port": 5433, "redis_endpoint_port": 6379, "amqp_endpoint_port": 5672, "pg_backend_port": 5432,
        "redis_backend_port": 6379, "amqp_backend_port": 5672, "patroni_rest_port": 8008, "check_timing": "inter 1s fastinter 500ms downinter 1s fall 2 rise 2",
        "redis_auth_hex": redis_auth_hex("secret"),
        "postgres": [{"name": f"data{i}", "address": f"198.18.{i}.31"} for i in (1, 2, 3)],
        "redis": [{"name": f"data{i}", "address": f"198.18.{i}.31"} for i in (1, 2, 3)],
        "rabbitmq": [{"name": f"data{i}", "address": f"198.18.{i}.31"} for i in (1, 2, 3)],
    }
    variables.update(overrides)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string((TEMPLATES / "endpoints/haproxy.cfg.j2").read_text()).render(**variables)


def test_template_has_each_endpoint_on_each_bind_address() -> None:
    text = render()
    for port in (5432, 5433, 6379, 5672):
        assert f"bind 127.0.0.1:{port}" in text and f"bind 198.19.0.1:{port}" in text
    assert "bind 127.0.0.1:8404" in text and "198.19.0.1:8404" not in text
    assert "http-check send meth GET uri /primary" in text and "uri /replica" in text
    # only a primary with a connected replica takes traffic (an isolated old primary has none)
    assert "tcp-check expect rstring role:master\\r\\nconnected_slaves:[1-9]" in text
    assert text.count("on-marked-down shutdown-sessions") == 4
    assert "server data2 198.18.2.31:5432 check port 8008" in text
    assert "secret" not in text  # only its hex


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed on this machine (the lab test validates on ds1)")
def test_template_passes_haproxy_check(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render().replace("chroot /var/lib/haproxy", "").replace("stats socket /run/haproxy/admin.sock", f"stats socket {tmp_path}/s.sock"))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the real template with the real template_vars(): frontend vs backend ports -------------


def _host(name: str, groups: tuple[str, ...], **data: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, groups=groups, data=dict(data))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch):
    """A DS host with the lab's data tier in a fake inventory; returns a factory taking data overrides."""
    data_hosts = [_host(f"data{i}", ("postgres", "redis", "rabbitmq"), private_address=f"198.18.{i}.31") for i in (1, 2, 3)]
    groups = {"postgres": data_hosts, "redis": data_hosts, "rabbitmq": data_hosts}
    monkeypatch.setattr(endpoints, "inventory", SimpleNamespace(get_group=lambda group: groups.get(group, [])))

    def make(**data: Any) -> SimpleNamespace:
        return _host("ds1", ("docs",), docker_bip="198.19.0.1/24", secrets={"redis_password": "r" * 24}, **data)

    return make


def render_real(target: SimpleNamespace) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string((TEMPLATES / "endpoints/haproxy.cfg.j2").read_text())
    return template.render(**endpoints.template_vars(target))


def sections(text: str) -> dict[str, str]:
    """The text of each ``listen NAME`` section."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^listen (\S+)\n(.*?)(?=^listen |\Z)", text, re.S | re.M)}


def bind_ports(section: str) -> set[int]:
    return {int(port) for port in re.findall(r"^\s*bind \S+:(\d+)$", section, re.M)}


def server_ports(section: str) -> set[int]:
    """The port of each server line (server NAME ADDRESS:PORT ...)."""
    ports = re.findall(r"^\s*server \S+ [0-9.]+:(\d+)\b", section, re.M)
    assert len(ports) == 3, section
    return {int(port) for port in ports}


C = contract.CONTRACT_DEFAULTS


def test_real_template_backends_use_the_service_ports_from_the_contract(client) -> None:
    listen = sections(render_real(client()))
    assert server_ports(listen["pg-primary"]) == server_ports(listen["pg-replicas"]) == {C["postgres_port"]}
    assert server_ports(listen["redis-primary"]) == {C["redis_port"]}
    assert server_ports(listen["rabbitmq"]) == {C["rabbitmq_amqp_port"]}
    assert "check port 8008" in listen["pg-primary"] and C["patroni_rest_port"] == 8008
    assert bind_ports(listen["pg-primary"]) == {C["endpoint_pg_primary_port"]}
    assert bind_ports(listen["pg-replicas"]) == {C["endpoint_pg_replicas_port"]}
    assert bind_ports(listen["redis-primary"]) == {C["endpoint_redis_port"]}
    assert bind_ports(listen["rabbitmq"]) == {C["endpoint_amqp_port"]}
    assert bind_ports(listen["stats"]) == {C["endpoint_stats_port"]}


def test_moving_a_service_moves_its_backend_lines_not_the_endpoint(client) -> None:
    listen = sections(render_real(client(rabbitmq_amqp_port=5673, redis_port=6380, postgres_port=5434)))
    assert server_ports(listen["rabbitmq"]) == {5673}
    assert server_ports(listen["redis-primary"]) == {6380}
    assert server_ports(listen["pg-primary"]) == server_ports(listen["pg-replicas"]) == {5434}
    # the clients keep their stable local ports
    assert bind_ports(listen["rabbitmq"]) == {C["endpoint_amqp_port"]} == {5672}
    assert bind_ports(listen["redis-primary"]) == {C["endpoint_redis_port"]} == {6379}
    assert bind_ports(listen["pg-primary"]) == {C["endpoint_pg_primary_port"]} == {5432}
    assert bind_ports(listen["pg-replicas"]) == {5433}
    # both bind addresses: loopback and the Docker bridge gateway of the DS host
    assert "bind 198.19.0.1:5672" in listen["rabbitmq"] and "bind 127.0.0.1:5672" in listen["rabbitmq"]


def test_moving_an_endpoint_leaves_the_backends_alone(client) -> None:
    listen = sections(render_real(client(endpoint_amqp_port=15672, endpoint_redis_port=16379)))
    assert bind_ports(listen["rabbitmq"]) == {15672} and server_ports(listen["rabbitmq"]) == {5672}
    assert bind_ports(listen["redis-primary"]) == {16379} and server_ports(listen["redis-primary"]) == {6379}
