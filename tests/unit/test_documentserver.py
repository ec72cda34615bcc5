"""Document Server layer without a lab: the container comparison, inputs, env, config, 502 causes, JWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from ooha.layers import documentserver as ds
from ooha.ops.containers import ContainerSpec, Mount, Port, env_file_text, env_sha256, memory_bytes, nano_cpus, spec_differences
from ooha.facts.documentserver import _INSPECT_SCRIPT, parse_example, parse_http

SECRETS = {"jwt_secret": "j" * 32, "secure_link_secret": "s" * 32, "postgres_ds_password": "p@ss/word:1",
           "rabbitmq_password": "r@b:b/it?", "redis_password": "x" * 24, "redis_sentinel_password": "y" * 24}


class Data(dict):
    def __getattr__(self, key: str) -> Any:
        return self.get(key)


def target(name: str = "ds1", groups: tuple[str, ...] = ("docs",), **data: Any) -> SimpleNamespace:
    base = {"private_address": "198.18.1.21", "docker_bip": "198.19.0.1/24", "ds_version": "9.3.0.1",
            "ds_image": "198.18.20.10:5000/onlyoffice/documentserver-ee", "secrets": dict(SECRETS)}
    base.update(data)
    return SimpleNamespace(name=name, groups=list(groups), data=Data(base))


@pytest.fixture(autouse=True)
def _inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    redis_hosts = [target(f"data{i}", ("redis",), private_address=f"198.18.{i}.31") for i in (1, 2, 3)]
    fake = SimpleNamespace(get_group=lambda group: redis_hosts if group == "redis" else [target("ds1"), target("ds2")])
    monkeypatch.setattr(ds, "inventory", fake)


def spec(**over: Any) -> ContainerSpec:
    values = dict(name="onlyoffice-documentserver", image="reg:5000/ds:9.3.0.1", env_file="/e", env_keys=("A", "B"),
                  env_sha256=env_sha256({"A": "1", "B": "2"}), hostname="ds1",
                  mounts=(Mount("volume", "onlyoffice-data", "/var/www/onlyoffice/Data"),
                          Mount("bind", "/etc/x.json", "/etc/y.json", read_only=True)),
                  ports=(Port("198.18.1.21", 80, 80),), restart_policy="unless-stopped", memory=0, nano_cpus=0,
                  labels={"ooha.deploy.layer": "documentserver"})
    values.update(over)
    return ContainerSpec(**values)


def inspected(**over: Any) -> dict[str, Any]:
    """What DsContainer returns for a container made from spec() (plus an anonymous volume, image labels)."""
    values = {"id": "abc", "status": "running", "running": True, "image": "reg:5000/ds:9.3.0.1",
              "env_sha256": env_sha256({"A": "1", "B": "2"}), "hostname": "ds1",
              "mounts": [["volume", "onlyoffice-data", "/var/www/onlyoffice/Data", True],
                         ["bind", "/etc/x.json", "/etc/y.json", False],
                         ["volume", "3f2a...anonymous", "/usr/share/fonts/truetype/custom", True]],
              "ports": ["198.18.1.21:80->80/tcp"], "restart_policy": "unless-stopped", "memory": 0, "nano_cpus": 0,
              "labels": {"ooha.deploy.layer": "documentserver", "ooha.ds.version": "9.3.0.1"}}
    values.update(over)
    return values


def test_same_spec_means_no_recreate() -> None:
    assert spec_differences(inspected(), spec()) == []


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("image", "reg:5000/ds:9.3.1.2", "image"),
    ("env_sha256", env_sha256({"A": "1", "B": "3"}), "environment"),
    ("hostname", "other", "hostname"),
    ("ports", ["0.0.0.0:80->80/tcp"], "ports"),
    ("ports", ["198.18.1.21:80->80/tcp", "198.18.1.21:8000->8000/tcp"], "ports"),
    ("restart_policy", "no", "restart policy"),
    ("memory", 1024, "memory"),
    ("nano_cpus", 2_000_000_000, "cpu"),
    ("labels", {"ooha.deploy.layer": "other"}, "labels"),
    ("mounts", [["volume", "onlyoffice-data", "/var/www/onlyoffice/Data", True]], "mounts"),
    ("mounts", [["volume", "onlyoffice-data", "/var/www/onlyoffice/Data", True], ["bind", "/etc/x.json", "/etc/y.json", True]], "mounts"),
])
def test_each_difference_recreates(field: str, value: Any, reason: str) -> None:
    reasons = spec_differences(inspected(**{field: value}), spec())
    assert reasons and reason in reasons[0], reasons


def test_missing_container_is_created() -> None:
    assert spec_differences(None, spec()) == ["no container"]


def test_run_command_never_holds_env_values_and_publishes_only_the_wanted_port() -> None:
    text = spec(memory=memory_bytes("1g"), nano_cpus=nano_cpus(1.5)).run_command().get_raw_value()
    assert "--env-file /e" in text and "-p 198.18.1.21:80:80" in text
    assert "-v onlyoffice-data:/var/www/onlyoffice/Data" in text and "-v /etc/x.json:/etc/y.json:ro" in text
    assert "--memory 1073741824" in text and "--cpus 1.5" in text and "8000" not in text
    assert text.endswith("reg:5000/ds:9.3.0.1")


def test_sizes() -> None:
    assert memory_bytes("512m") == 512 * 1024**2 and memory_bytes(None) == 0
    assert nano_cpus(2) == 2_000_000_000 and nano_cpus(None) == 0
    with pytest.raises(ValueError):
        memory_bytes("lots")


def test_env_file_refuses_line_breaks() -> None:
    assert env_file_text({"B": "2", "A": "x=y"}) == "A=x=y\nB=2\n"
    with pytest.raises(ValueError):
        env_file_text({"A": "one\ntwo"})


def test_host_side_digest_equals_controller_digest() -> None:
    """The inspect script (run here with the host's python) digests only the managed keys."""
    env = {"A": "1", "B": "p=2"}
    inspect = [{"Id": "x", "State": {"Status": "running", "Running": True}, "Image": "sha256:1",
                "Config": {"Image": "i:1", "Hostname": "ds1", "Env": ["PATH=/usr/bin", "A=1", "B=p=2"], "Labels": {}},
                "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "198.18.1.21", "HostPort": "80"}]},
                               "RestartPolicy": {"Name": "unless-stopped"}, "Memory": 0, "NanoCpus": 0},
                "Mounts": [{"Type": "volume", "Name": "v", "Destination": "/d", "RW": True}]}]
    out = subprocess.run([sys.executable, "-c", _INSPECT_SCRIPT, "A,B"], input=json.dumps(inspect),
                         capture_output=True, text=True, check=True).stdout
    fact = json.loads(out)
    assert fact["env_sha256"] == env_sha256(env)
    assert fact["ports"] == ["198.18.1.21:80->80/tcp"] and fact["mounts"] == [["volume", "v", "/d", True]]
    assert "p=2" not in out
    absent = subprocess.run([sys.executable, "-c", _INSPECT_SCRIPT, "A"], input="[]", capture_output=True, text=True).stdout
    assert absent.strip() == "null"


def test_env_points_at_the_gateway_and_this_nodes_objects() -> None:
    env = ds.container_env(target("DS-2", private_address="198.18.2.21"))
    assert env["DB_HOST"] == env["REDIS_SERVER_HOST"] == "198.19.0.1"
    assert env["DB_NAME"] == "onlyoffice_ds_2" and env["DB_PWD"] == SECRETS["postgres_ds_password"]
    assert env["AMQP_URI"] == "amqp://onlyoffice:r%40b%3Ab%2Fit%3F@198.19.0.1:5672/onlyoffice_ds_2"
    assert env["JWT_SECRET"] == SECRETS["jwt_secret"] and env["SECURE_LINK_SECRET"] == SECRETS["secure_link_secret"]
    assert "ONLYOFFICE_DATA_CONTAINER_HOST" not in env


def test_env_is_identical_in_secrets_on_every_node() -> None:
    one, two = ds.container_env(target("ds1")), ds.container_env(target("ds2"))
    for key in ("JWT_SECRET", "SECURE_LINK_SECRET", "JWT_HEADER"):
        assert one[key] == two[key]


def test_local_config_for_ee_has_sentinels_and_node_prefix() -> None:
    config = json.loads(ds.local_config(target("ds1")))
    redis = config["services"]["CoAuthoring"]["redis"]
    assert redis["name"] == "ioredis" and redis["prefix"] == "ds:ds1:"
    assert redis["iooptions"]["sentinels"] == [{"host": f"198.18.{i}.31", "port": 26379} for i in (1, 2, 3)]
    assert redis["iooptions"]["name"] == "onlyoffice"
    assert ds.local_config(target("ds1", ds_edition="community")) is None


def test_spec_labels_change_with_the_config_and_not_with_secrets_in_clear() -> None:
    env = ds.container_env(target())
    one = ds.container_spec(target(), env, ds.local_config(target()))
    assert one.image == "198.18.20.10:5000/onlyoffice/documentserver-ee:9.3.0.1"
    assert SECRETS["jwt_secret"] not in repr(one)
    other = ds.container_spec(target(), env, ds.local_config(target(ds_sentinel_port=26380)))
    assert spec_differences(inspected(labels=one.labels), other)[-1].startswith("labels")
    digest = ds.container_spec(target(ds_image_digest="sha256:" + "a" * 64), env, None)
    assert digest.image.endswith(":9.3.0.1@sha256:" + "a" * 64)


def test_good_inputs_pass() -> None:
    assert ds.input_problems(target()) == []


@pytest.mark.parametrize(("data", "field"), [
    ({"ds_version": None}, "ds_version"), ({"ds_version": "latest"}, "ds_version"),
    ({"ds_image": "Bad Image"}, "ds_image"), ({"ds_image_digest": "sha256:xyz"}, "ds_image_digest"),
    ({"ds_edition": "pro"}, "ds_edition"), ({"ds_http_port": 0}, "ds_http_port"),
    ({"ds_restart_policy": "sometimes"}, "ds_restart_policy"), ({"ds_memory_limit": "lots"}, "ds_memory_limit"),
    ({"ds_cpus": -1}, "ds_cpus"), ({"ds_example_enabled": "yes"}, "ds_example_enabled"),
    ({"docker_bip": None}, "docker_bip"), ({"docker_bip": "nope"}, "docker_bip"),
    ({"ds_extra_env": {"lower": "x"}}, "ds_extra_env"),
    ({"ds_drain_seconds": -1}, "ds_drain_seconds"), ({"ds_drain_seconds": "60"}, "ds_drain_seconds"),
    ({"ds_stop_grace_seconds": 0}, "ds_stop_grace_seconds"), ({"ds_stop_grace_seconds": True}, "ds_stop_grace_seconds"),
])
def test_each_bad_input_names_host_field_and_fix(data: dict[str, Any], field: str) -> None:
    problems = ds.input_problems(target(**data))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"ds1: {field}:") and "fix:" in problems[0]


def test_missing_secret_and_line_break_secret() -> None:
    secrets = dict(SECRETS, jwt_secret="", redis_sentinel_password="a\nb")
    problems = ds.input_problems(target(secrets=secrets))
    assert any("secrets.jwt_secret: missing" in p for p in problems)
    assert any("secrets.redis_sentinel_password" in p and "line break" in p for p in problems)
    assert all("a\nb" not in p for p in problems)


def test_community_warning_only_for_several_nodes() -> None:
    assert ds.community_warning("ee", 3) is None and ds.community_warning("community", 1) is None
    text = ds.community_warning("community", 3)
    assert "cannot share" in text and "ee or de" in text


LOG_EXAMPLE = ('2026/12/02 10:00:00 [error] 20#20: *5 connect() failed (111: Connection refused) while connecting to '
               'upstream, client: 127.0.0.1, server: , request: "GET /example/ HTTP/1.1", upstream: "http://127.0.0.1:3000/", host: "x"')
LOG_DOCSERVICE = ('2026/12/02 10:00:01 [error] 20#20: *6 connect() failed (111: Connection refused) while connecting to '
                  'upstream, client: 198.18.1.11, server: , request: "GET /healthcheck HTTP/1.1", upstream: "http://127.0.0.1:8000/healthcheck"')
LOG_RESOLVE = '2026/12/02 10:00:02 [error] 20#20: *7 docservice could not be resolved (3: Host not found)'


@pytest.mark.parametrize(("lines", "enabled", "cause"), [
    ([LOG_EXAMPLE], False, "example off"),
    ([LOG_EXAMPLE], True, "upstream refused (the example is not running)"),
    ([LOG_EXAMPLE, LOG_DOCSERVICE], False, "upstream refused"),
    ([LOG_RESOLVE], False, "name not resolved"),
    ([], False, "unknown (no matching nginx error line)"),
])
def test_502_causes_name_the_log_line(lines: list[str], enabled: bool, cause: str) -> None:
    found, line = ds.classify_502(lines, enabled)
    assert found == cause
    assert line == (lines[-1] if lines else "")


def test_example_off_text_says_why_and_how() -> None:
    text = ds.example_text(502, "example off", LOG_EXAMPLE)
    assert text.startswith("example off: /example/ answers 502 (")
    assert text.endswith("fix: set ds_example_enabled=true") and "connect() failed (111" in text


def test_command_token_is_hs256_signed_with_the_secret() -> None:
    token = ds.command_token("secret", {"payload": {"c": "version"}}, lifetime=60, now=1000)
    head, body, sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(base64.urlsafe_b64decode(pad(body))) == {"payload": {"c": "version"}, "iat": 1000, "exp": 1060}
    expected = hmac.new(b"secret", f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(pad(sig)) == expected


def test_fact_parsers() -> None:
    assert parse_http(["true", "200"]) == {"status": 200, "body": "true"}
    assert parse_http(["", "000"]) == {"status": 0, "body": ""}
    assert parse_example(["running", "autostart=false", "ds:example                       STOPPED   Not started"]) == \
        {"autostart": False, "state": "STOPPED"}
    assert parse_example(["running", "autostart=true"]) == {"autostart": True, "state": None}
    assert parse_example([]) is None


def test_example_script_never_runs_supervisorctl_update() -> None:
    on = ds.example_script("onlyoffice-documentserver", True, 60)
    off = ds.example_script("onlyoffice-documentserver", False, 60)
    assert "autostart=true" in on and "supervisorctl start ds:example" in on
    assert "autostart=false" in off and "supervisorctl stop ds:example" in off
    assert "update" not in on + off


def test_endpoints_bind_the_gateway_on_ds_hosts_only() -> None:
    from ooha.layers.endpoints import bind_addresses

    assert bind_addresses(target("ds1")) == ["127.0.0.1", "198.19.0.1"]
    assert bind_addresses(target("lb1", ("lb",))) == ["127.0.0.1"]
    assert bind_addresses(target("ds1", docker_bip=None)) == ["127.0.0.1"]


def _run_drain(tmp_path, counts: list[int], seconds: int, pre_stop_ok: bool = True) -> tuple[str, str]:
    """drain_script under sh with a fake ``docker`` that answers connections/edit from ``counts``."""
    state = tmp_path / "counts"
    state.write_text(" ".join(str(c) for c in counts))
    calls = tmp_path / "calls"
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {calls}\n"
        "case \"$*\" in\n"
        f"  *pre-stop*) exit {0 if pre_stop_ok else 7};;\n"
        f"  *connections/edit*) set -- $(cat {state}); echo \"$1\"; [ $# -gt 1 ] && shift; echo \"$*\" > {state};;\n"
        "esac\n")
    fake.chmod(0o755)
    result = subprocess.run(["sh", "-c", ds.drain_script(seconds), "drain", "onlyoffice-documentserver"],
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout, calls.read_text()


def test_drain_sends_pre_stop_then_waits_for_sessions_to_end(tmp_path) -> None:
    out, calls = _run_drain(tmp_path, [2, 1, 0], seconds=30)
    assert calls.splitlines()[0].startswith("exec onlyoffice-documentserver curl") and "PUT" in calls.splitlines()[0]
    assert "pre-stop" in calls.splitlines()[0] and calls.count("connections/edit") == 3
    assert out.splitlines() == ["drain: pre-stop sent", "drain: no editing session left; stopping"]


def test_drain_gives_up_after_its_bound_and_says_how_many_remained(tmp_path) -> None:
    out, _ = _run_drain(tmp_path, [1], seconds=1, pre_stop_ok=False)
    assert "pre-stop not accepted" in out
    assert out.splitlines()[-1] == "drain: 1 editing session(s) still open after 1 s (ds_drain_seconds); stopping anyway"


def test_drain_does_not_wait_when_the_service_does_not_answer(tmp_path) -> None:
    out, _ = _run_drain(tmp_path, [], seconds=30)
    assert out.splitlines()[-1].startswith("drain: connections/edit did not answer a number")


def test_version_fact_reads_the_token_from_stdin_not_argv() -> None:
    from ooha.facts.documentserver import DsVersion

    command = DsVersion().command(url="http://198.18.1.21:80/command").get_raw_value()
    assert "-H @-" in command and "Bearer" not in command and "Authorization" not in command


def test_release_guard_refuses_to_move_a_node_off_the_release_a_rollout_put_it_on() -> None:
    from pyinfra.api.exceptions import DeployError

    from ooha.layers.documentserver import release_guard

    node = target(ds_image="reg:5000/ds", ds_version="9.3.0.1")
    marker = ['{"ref": "reg:5000/ds:9.3.1.2", "rollout_id": "r20261205-1200-ab12"}']
    with pytest.raises(DeployError, match=r"ds1: ds_version: the node runs reg:5000/ds:9\.3\.1\.2 .*fix: set ds_version=9\.3\.1\.2"):
        release_guard(node, marker)
    release_guard(target(ds_image="reg:5000/ds", ds_version="9.3.1.2"), marker)   # inventory caught up
    release_guard(target(ds_image="reg:5000/ds", ds_version="9.3.0.1", ds_release_change="r1"), marker)  # the driver's wave
    release_guard(node, None)            # never rolled out: the main job owns the version
    release_guard(node, ["not json"])    # unreadable marker: the container rules apply


def test_same_release_is_exact_and_the_fix_names_every_key() -> None:
    from pyinfra.api.exceptions import DeployError

    from ooha.layers.documentserver import release_guard, release_keys, same_release

    pinned = "reg:5000/ds:9.3.0.1@sha256:" + "a" * 64
    assert same_release(pinned, pinned)
    assert not same_release(pinned, "reg:5000/ds:9.3.0.1")   # the spec would recreate every node
    assert not same_release("reg:5000/ds:9.3.1.2", "reg:5000/ds:9.3.0.1")
    assert release_keys(pinned) == f"ds_version=9.3.0.1 and ds_image_digest=sha256:{'a' * 64}"
    with pytest.raises(DeployError, match="ds_image_digest=sha256:a"):
        release_guard(target(ds_image="reg:5000/ds", ds_version="9.3.0.1"), ['{"ref": "%s", "rollout_id": "r1"}' % pinned])
