"""The compat gate's throwaway container without a lab: what it gets (the live node's env
contract with scratch database, vhost and Redis prefix; no port, no named volume) and how a
watch's samples become the observation the gate reads."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from ooha.layers import documentserver as ds
from ooha.rollout.gates import CompatObservation, compat_gate
from ooha.rollout.live import compat
from ooha.rollout.release import ImageRef

SECRETS = {"jwt_secret": "j" * 32, "secure_link_secret": "s" * 32, "postgres_ds_password": "p@ss/word:1",
           "rabbitmq_password": "r@b:b/it?", "redis_password": "x" * 24, "redis_sentinel_password": "y" * 24}
TARGET = ImageRef("198.18.20.10:5000/onlyoffice/documentserver-ee", "9.3.2.9")


class Data(dict):
    def __getattr__(self, key: str) -> Any:
        return self.get(key)


def host(name: str = "ds1", **data: Any) -> SimpleNamespace:
    base = {"private_address": "198.18.1.21", "docker_bip": "198.19.0.1/24", "ds_version": "9.3.0.1",
            "ds_image": "198.18.20.10:5000/onlyoffice/documentserver-ee", "secrets": dict(SECRETS)}
    base.update(data)
    return SimpleNamespace(name=name, groups=["docs"], data=Data(base))


@pytest.fixture(autouse=True)
def _inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    redis_hosts = [host(f"data{i}", private_address=f"198.18.{i}.31") for i in (1, 2, 3)]
    monkeypatch.setattr(ds, "inventory", SimpleNamespace(get_group=lambda group: redis_hosts if group == "redis" else [host()]))


SCRATCH = compat.Scratch("0123456789ab", "ooha_compat_ds1")


def test_scratch_names_never_meet_the_live_nodes() -> None:
    fresh = compat.new_scratch("DS-1")
    assert fresh.database == "ooha_compat_ds_1" and len(fresh.token) == 12
    assert fresh.container.startswith("ooha-compat-") and fresh.container != ds.CONTAINER
    assert compat.new_scratch("ds1").token != compat.new_scratch("ds1").token
    assert SCRATCH.vhost == "ooha_compat_0123456789ab" and SCRATCH.redis_prefix == "ooha:compat:0123456789ab:"


def test_scratch_env_is_the_layers_env_on_the_scratch_database_and_vhost() -> None:
    live, env = ds.container_env(host()), compat.scratch_env(host(), SCRATCH)
    assert set(env) == set(live)
    assert env["DB_NAME"] == "ooha_compat_ds1" and live["DB_NAME"] == "onlyoffice_ds1"
    assert env["AMQP_URI"] == live["AMQP_URI"].rsplit("/", 1)[0] + "/ooha_compat_0123456789ab"
    assert env["JWT_SECRET"] == SECRETS["jwt_secret"], "the cluster's secret, never left to be generated"
    assert {k: v for k, v in env.items() if k not in ("DB_NAME", "AMQP_URI")} == \
        {k: v for k, v in live.items() if k not in ("DB_NAME", "AMQP_URI")}


def test_scratch_config_changes_only_the_redis_prefix() -> None:
    live = json.loads(ds.local_config(host()))
    scratch = json.loads(compat.scratch_config(host(), SCRATCH))
    assert scratch["services"]["CoAuthoring"]["redis"]["prefix"] == SCRATCH.redis_prefix
    live["services"]["CoAuthoring"]["redis"]["prefix"] = SCRATCH.redis_prefix
    assert scratch == live
    assert compat.scratch_config(host(ds_edition="community"), SCRATCH) is None


def test_scratch_container_publishes_nothing_and_mounts_no_volume_of_the_node() -> None:
    env = compat.scratch_env(host(), SCRATCH)
    spec = compat.scratch_spec(host(), SCRATCH, TARGET, env, compat.scratch_config(host(), SCRATCH))
    assert spec.name == spec.hostname == "ooha-compat-0123456789ab" and spec.image == TARGET.ref
    assert spec.ports == () and spec.restart_policy == "no"
    assert [(m.kind, m.source, m.read_only) for m in spec.mounts] == \
        [("bind", "/run/ooha-compat/0123456789ab/local-production-linux.json", True)]
    assert spec.env_file == "/run/ooha-compat/0123456789ab/env"
    command = spec.run_command().get_raw_value()
    assert "-p " not in command and "onlyoffice-data" not in command and "--env-file" in command
    assert all(value not in command for value in SECRETS.values()), "secrets only in the env-file"
    community = compat.scratch_spec(host(ds_edition="community"), SCRATCH, TARGET, env, None)
    assert community.mounts == ()


def test_watch_verdict_names_when_the_health_turned_and_why() -> None:
    assert compat.watch_verdict([(0.0, "true"), (2.0, "true"), (30.0, "true")], 30) == "true"
    turned = compat.watch_verdict([(0.0, "true"), (16.4, "true"), (18.5, "false")], 30,
                                  "healthcheck: false from now on: defect healthcheck-decay")
    assert turned.startswith("false 18 s into the 30 s watch (true before)") and "healthcheck-decay" in turned
    assert compat.watch_verdict([(0.0, "true"), (2.0, "")], 30).startswith("no answer 2 s")
    gate = compat_gate(CompatObservation(turned, "9.3.2.9", True, ("doc_changes", "task_result"), True), TARGET, "ds1")
    assert not gate.ok and len(gate.problems) == 1 and "healthcheck-decay" in gate.lines()[0]


def test_redact_removes_raw_and_url_quoted_secrets() -> None:
    line = f"amqp error for amqp://onlyoffice:r%40b%3Ab%2Fit%3F@gw/v and token {'j' * 32}"
    clean = compat.redact(line, host())
    assert "r%40b" not in clean and "j" * 32 not in clean and clean.count("***") == 2
