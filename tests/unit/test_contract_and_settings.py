"""ooha/contract.py (each cross-layer default defined once) and ooha/settings.py (one lookup rule)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api.exceptions import DeployError

from ooha import contract
from ooha.contract import CONTRACT_DEFAULTS, peer_address
from ooha.layers import (documentserver, endpoints, etcd, loadbalancer, pgbackrest, postgres, rabbitmq, redis)
from ooha.settings import Settings, data_value, required, required_secret, secret, setting

OOHA = Path(__file__).resolve().parents[2] / "ooha"


def _target(name: str = "h1", **data: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, data=dict(data))


# --- contract -------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(CONTRACT_DEFAULTS))
def test_each_contract_default_is_written_once_in_ooha(key: str) -> None:
    """A '"key": <literal number or string>' definition appears only in ooha/contract.py."""
    literal = re.compile(rf"""["']{re.escape(key)}["']\s*:\s*(\d|["']|f["']|postgres_data_dir\()""")
    found = [f"{path.relative_to(OOHA)}:{n}" for path in sorted(OOHA.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    # postgres_version's literal is POSTGRES_VERSION = 15 (everything derived from it): none elsewhere
    assert found == ([] if key == "postgres_version" else [f"contract.py:{_line_of(key)}"]), found


def _line_of(key: str) -> int:
    lines = (OOHA / "contract.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.strip().startswith(f'"{key}":'))


def test_no_layer_repeats_a_service_port_literal_as_a_default() -> None:
    text = "\n".join(p.read_text() for p in (OOHA / "layers").glob("*.py"))
    for literal in ('"postgres_port": 5432', '"redis_port": 6379', '"rabbitmq_amqp_port": 5672', '"ds_http_port": 80',
                    '"patroni_rest_port": 8008', '"rabbitmq_user": "onlyoffice"', '"postgres_ds_role": "onlyoffice"'):
        assert literal not in text


def test_owning_layers_take_their_defaults_from_the_contract() -> None:
    for defaults, keys in (
        (postgres.POSTGRES_DEFAULTS, ("postgres_version", "postgres_port", "patroni_rest_port", "postgres_data_dir", "postgres_ds_role")),
        (redis.REDIS_DEFAULTS, ("redis_port", "redis_sentinel_port", "redis_master_name")),
        (rabbitmq.RABBITMQ_DEFAULTS, ("rabbitmq_amqp_port", "rabbitmq_user")),
        (etcd.ETCD_DEFAULTS, ("etcd_client_port",)),
        (endpoints.ENDPOINTS_DEFAULTS, ("endpoint_pg_primary_port", "endpoint_pg_replicas_port", "endpoint_redis_port",
                                        "endpoint_amqp_port", "endpoint_stats_port")),
        (documentserver.DS_DEFAULTS, ("ds_http_port",)),
    ):
        for key in keys:
            assert defaults[key] == CONTRACT_DEFAULTS[key], key
    # readers do not re-declare them
    for key in ("postgres_port", "patroni_rest_port", "redis_port", "rabbitmq_amqp_port"):
        assert key not in endpoints.ENDPOINTS_DEFAULTS
    assert "ds_http_port" not in loadbalancer.LOADBALANCER_DEFAULTS


def test_defaults_are_unchanged() -> None:
    assert CONTRACT_DEFAULTS["postgres_port"] == 5432 and CONTRACT_DEFAULTS["patroni_rest_port"] == 8008
    assert CONTRACT_DEFAULTS["redis_port"] == 6379 and CONTRACT_DEFAULTS["redis_sentinel_port"] == 26379
    assert CONTRACT_DEFAULTS["rabbitmq_amqp_port"] == 5672 and CONTRACT_DEFAULTS["ds_http_port"] == 80
    assert postgres.POSTGRES_DEFAULTS["postgres_packages"] == ["postgresql-15", "postgresql-client-15", "patroni", "python3-etcd"]
    assert postgres.POSTGRES_DEFAULTS["postgres_data_dir"] == "/var/lib/postgresql/15/onlyoffice"
    assert contract.postgres_bin_dir(15) == "/usr/lib/postgresql/15/bin"
    assert loadbalancer.LOADBALANCER_DEFAULTS["lb_redis_port"] == 6379
    assert documentserver.DS_DEFAULTS["ds_sentinel_port"] == 26379
    assert documentserver.DS_DEFAULTS["ds_redis_master_name"] == "onlyoffice"


def test_readers_follow_an_overridden_contract_key() -> None:
    assert loadbalancer._value(_target(), "ds_http_port") == 80
    assert loadbalancer._value(_target(ds_http_port=8080), "ds_http_port") == 8080
    assert pgbackrest.setting(_target(postgres_port=5434), "postgres_port") == 5434
    assert pgbackrest.setting(_target(), "postgres_data_dir") == "/var/lib/postgresql/15/onlyoffice"


def test_peer_address_prefers_private_then_ssh_then_name() -> None:
    assert peer_address(_target("a", private_address="10.0.0.1", ssh_hostname="x")) == "10.0.0.1"
    assert peer_address(_target("a", ssh_hostname="x")) == "x"
    assert peer_address(_target("a")) == "a"


# --- settings -------------------------------------------------------------------------


class HostDataLike:
    """Like pyinfra's HostData: ``get`` cannot tell None from absent, ``dict()`` can."""

    def __init__(self, **values: Any) -> None:
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def dict(self) -> dict[str, Any]:
        return dict(self.values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None


def test_setting_falls_back_through_the_defaults_in_order() -> None:
    first, second = {"a": 1}, {"a": 2, "b": 3}
    assert setting(_target(), "a", first, second) == 1
    assert setting(_target(), "b", first, second) == 3
    assert setting(_target(a=9), "a", first, second) == 9
    assert setting(_target(a=None), "a", first) == 1  # None counts as unset by default
    assert setting(_target(a=0), "a", first) == 0 and setting(_target(a=""), "a", first) == ""
    with pytest.raises(KeyError):
        setting(_target(), "typo", first)
    assert setting(_target(), "typo", first, optional=True) is None


def test_keep_explicit_none_keeps_a_none_the_inventory_set() -> None:
    defaults = {"apt_proxy": "http://proxy:3142"}
    assert setting(SimpleNamespace(data=HostDataLike(apt_proxy=None)), "apt_proxy", defaults, keep_explicit_none=True) is None
    assert setting(SimpleNamespace(data=HostDataLike()), "apt_proxy", defaults, keep_explicit_none=True) == "http://proxy:3142"
    assert setting(_target(apt_proxy=None), "apt_proxy", defaults, keep_explicit_none=True) is None  # plain dict data
    assert setting(SimpleNamespace(data=HostDataLike(apt_proxy=None)), "apt_proxy", defaults) == "http://proxy:3142"


def test_bound_settings_and_data_value() -> None:
    value = Settings({"a": 1}, {"b": 2})
    assert value(_target(), "a") == 1 and value(_target(), "b") == 2 and value.default("b") == 2
    assert Settings({"a": 1}, optional=True)(_target(), "zz") is None
    assert data_value({"a": None}, "a", {"a": 5}) == 5


def test_secrets_and_required_values() -> None:
    assert secret(_target(secrets={"x": "s3cr3t"}), "x") == "s3cr3t"
    assert secret(_target(secrets={}), "x") == "" and secret(_target(), "x") == "" and secret(_target(secrets=None), "x") == ""
    with pytest.raises(DeployError, match=r"^h1: secrets\.x: missing; fix: add x to the secrets file$"):
        required_secret(_target(secrets={}), "x")
    assert required(_target(k="v"), "k", {}) == "v"
    with pytest.raises(DeployError, match=r"^h1: k: missing; fix: set it$"):
        required(_target(), "k", {"k": None}, fix="set it")


def test_the_lookup_rule_is_defined_only_in_settings() -> None:
    pattern = re.compile(r"^\s*def (_value|_layer_value|setting|_secret)\b")
    found = [str(p.relative_to(OOHA)) for p in OOHA.rglob("*.py") for line in p.read_text().splitlines() if pattern.match(line)]
    assert found == ["settings.py"]


# --- input_problems: every layer with input rules has one taking a host -----------------


def test_postgres_and_redis_input_problems_read_host_data_only() -> None:
    secrets = {k: "x" * 24 for k in postgres.SECRETS + redis.SECRETS}
    assert postgres.input_problems(_target("data1", secrets=secrets)) == []
    bad = postgres.input_problems(_target("data1", secrets={}, patroni_dcs={"ttl": 10, "loop_wait": 2, "retry_timeout": 5}))
    assert bad[0] == "data1: patroni_dcs: loop_wait 2 + 2 * retry_timeout 5 > ttl 10; fix: lower loop_wait/retry_timeout or raise ttl"
    assert "all: secrets.postgres_ds_password: missing; fix: set it in the secrets file" in bad
    def host(**data: Any) -> SimpleNamespace:
        return SimpleNamespace(name="data1", data=HostDataLike(**data))

    assert redis.input_problems(host(private_address="198.18.1.31", secrets=secrets)) == []
    problems = redis.input_problems(host(secrets=secrets))
    assert "data1: private_address: missing; fix: set it to the host's peer address" in problems
    problems = redis.input_problems(host(private_address="198.18.1.31", secrets={"redis_password": "short"},
                                         redis_settings={"replicaof": "x"}))
    assert len(problems) == 3 and all(re.match(r"^data1: [a-z_.]+: .+; fix: .+", p) for p in problems)
