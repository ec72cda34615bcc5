"""Node states at the load balancers: the layer's inputs and templates, and the driver's I/O
helpers (ooha/rollout/live/nodestate.py) against a fake Redis behind a fake connected host."""

from __future__ import annotations

import json
import shlex
from types import SimpleNamespace
from typing import Any

import pytest

import ooha.layers.loadbalancer as lb
from ooha.rollout import drain
from ooha.rollout.live import nodestate as ns
from tests.unit.test_loadbalancer import lab_like, render  # noqa: F401  (the fixture, shared)

KEY = "ooha:nodestate"


# --- the layer's inputs and templates ---------------------------------------------------------


def test_defaults_are_valid_and_documented(lab_like) -> None:  # noqa: F811
    assert lb.LOADBALANCER_DEFAULTS["lb_node_state_key"] == drain.DEFAULT_STATE_KEY == KEY
    assert lb.LOADBALANCER_DEFAULTS["lb_node_state_cache_ms"] == 1000
    assert lb.input_problems(lab_like["lb1"]) == []
    assert lb.node_state_settings(lab_like["lb1"]) == (KEY, 1000)


@pytest.mark.parametrize("field, value, expected", [
    ("lb_node_state_key", "", "lb_node_state_key"),
    ("lb_node_state_key", "ooha node state", "lb_node_state_key"),
    ("lb_node_state_key", 12, "lb_node_state_key"),
    ("lb_node_state_key", "ooha:shard:states", "inside lb_shard_key_prefix"),
    ("lb_node_state_cache_ms", 99, "lb_node_state_cache_ms"),
    ("lb_node_state_cache_ms", 10001, "lb_node_state_cache_ms"),
    ("lb_node_state_cache_ms", "1000", "lb_node_state_cache_ms"),
    ("lb_node_state_cache_ms", True, "lb_node_state_cache_ms"),
])
def test_bad_node_state_inputs_are_refused(lab_like, field: str, value: Any, expected: str) -> None:  # noqa: F811
    lab_like["lb1"].data[field] = value
    problems = lb.input_problems(lab_like["lb1"])
    assert any(expected in p and "fix:" in p for p in problems), problems


def test_bounds_of_the_cache_are_accepted(lab_like) -> None:  # noqa: F811
    for value in (100, 10000):
        lab_like["lb1"].data["lb_node_state_cache_ms"] = value
        assert lb.input_problems(lab_like["lb1"]) == []


def test_lua_reads_the_state_hash_with_its_cache(lab_like) -> None:  # noqa: F811
    lab_like["lb1"].data.update(lb_node_state_key='st"ates', lb_node_state_cache_ms=250)
    text = render("loadbalancer/ooha_shard.lua.j2", lb.nginx_vars(lab_like["lb1"], lb.CONF_DIR))
    assert 'local STATE_KEY = "st\\034ates"' in text and "local STATE_CACHE = 250 / 1000" in text
    for function in ("M.first_sight(key, states)", "M.target(key, name, states)",
                     "M.candidates(key, first, states)", "M.keyless(states, offset)", "M.route_keyless()"):
        assert f"function {function}" in text, function
    assert "red:hgetall(STATE_KEY)" in text


def test_requests_without_a_key_follow_the_states_on_both_ports(lab_like) -> None:  # noqa: F811
    text = render("loadbalancer/lb-nginx.conf.j2", lb.nginx_vars(lab_like["lb1"], lb.CANDIDATE_DIR))
    plain = text.split("listen 80 default_server;")[1].split("\n  server {")[0]
    health = plain.split("location = /healthcheck {")[1].split("\n    }")[0]
    assert "access_by_lua_block { ooha_shard.route_keyless() }" in health
    assert "proxy_pass http://$ds_upstream;" in health and "set $ds_upstream ds_all;" in plain
    tls = text.split("listen 443 ssl")[1]
    assert tls.count("access_by_lua_block { ooha_shard.route() }") == 2  # route() hands keyless ones on


# --- nodestate against a fake Redis -----------------------------------------------------------


class FakeRedisHost:
    """A connected pyinfra Host as remote.run uses it, whose shell runs the LAST line of the
    script (the redis-cli call) against an in-memory hash, as the Lua scripts would."""

    def __init__(self, hashes: dict[str, dict[str, str]] | None = None, fail: str = "") -> None:
        self.name = "data1"
        self.data = {"redis_master_name": "onlyoffice"}
        self.hashes = hashes if hashes is not None else {}
        self.fail = fail
        self.scripts: list[str] = []
        self.arguments: list[dict[str, Any]] = []
        self.before_write: Any = None

    def run_shell_command(self, command: Any, **arguments: Any) -> tuple[bool, Any]:
        assert list(command.bits[:2]) == ["sh", "-c"]
        script = shlex.split(command.bits[2])[0]
        self.scripts.append(script)
        self.arguments.append(arguments)
        if self.fail:
            return False, SimpleNamespace(stdout_lines=[], stderr_lines=[self.fail])
        call = shlex.split(script.splitlines()[-1])
        assert call[:2] == ["exec", ns.CLI] and call[2:7] == ["redis", "-h", "$addr", "-p", "$port"]
        verb, lua, _, key, *argv = call[8:]
        table = self.hashes.setdefault(key, {})
        if lua == ns.READ_SCRIPT:
            assert verb == "EVAL_RO"
            flat = [x for pair in table.items() for x in pair]
            return True, SimpleNamespace(stdout_lines=[json.dumps(flat) if flat else "{}"], stderr_lines=[])
        if callable(self.before_write):
            self.before_write(table)
        if lua == ns.WRITE_SCRIPT:
            node, expected, wanted = argv
            if table.get(node, "") != expected:
                return False, SimpleNamespace(stdout_lines=[], stderr_lines=["OOHA changed meanwhile: now x"])
            table[node] = wanted
        elif lua == ns.CLEAR_SCRIPT:
            table.pop(argv[0], None)
        else:
            raise AssertionError(lua)
        return True, SimpleNamespace(stdout_lines=["OK"], stderr_lines=[])


def test_a_full_drain_cycle_through_the_allowed_transitions() -> None:
    host = FakeRedisHost()
    assert ns.read_states(host, KEY) == {}
    ns.set_state(host, KEY, "ds2", "draining")
    assert ns.read_states(host, KEY) == {"ds2": "draining"}
    ns.set_state(host, KEY, "ds2", "out")
    ns.set_state(host, KEY, "ds2", "out")  # resume: a no-op, nothing written
    assert sum("HSET" in s for s in host.scripts) == 2
    ns.set_state(host, KEY, "ds2", "active")
    assert host.hashes[KEY] == {"ds2": "active"}
    ns.clear_state(host, KEY, "ds2")
    assert host.hashes[KEY] == {}
    # as root (the wrapper is root-only), bounded, nothing on stdin, no secret in the script
    assert all(a["_sudo"] is True and a["_timeout"] == ns.TIMEOUT_S and "_stdin" not in a for a in host.arguments)
    assert all("SENTINEL get-master-addr-by-name onlyoffice" in s and "REDISCLI_AUTH" not in s for s in host.scripts)


def test_a_transition_that_skips_the_drain_is_refused_before_any_write() -> None:
    host = FakeRedisHost()
    with pytest.raises(ns.NodeStateError, match="active -> out is not allowed"):
        ns.set_state(host, KEY, "ds1", "out")
    with pytest.raises(ns.NodeStateError, match="not a node state"):
        ns.set_state(host, KEY, "ds1", "gone")
    with pytest.raises(ns.NodeStateError, match="not a name"):
        ns.set_state(host, KEY, "ds 1", "draining")
    assert not any("HSET" in s for s in host.scripts) and host.hashes.get(KEY, {}) == {}


def test_an_unknown_value_reads_as_active_like_the_lua() -> None:
    host = FakeRedisHost({KEY: {"ds1": "typo", "ds3": "out"}})
    assert ns.read_states(host, KEY) == {"ds1": "active", "ds3": "out"}
    ns.set_state(host, KEY, "ds1", "draining")  # from the effective state, compare-and-set on the raw one
    assert host.hashes[KEY]["ds1"] == "draining"


def test_a_concurrent_writer_is_detected_not_overwritten() -> None:
    host = FakeRedisHost()
    host.before_write = lambda table: table.update(ds2="out")
    with pytest.raises(ns.NodeStateError, match="cannot set ds2 draining.*changed meanwhile"):
        ns.set_state(host, KEY, "ds2", "draining")
    assert host.hashes[KEY] == {"ds2": "out"}


def test_an_unreachable_redis_is_an_error_naming_the_host() -> None:
    host = FakeRedisHost(fail="the local Sentinel names no primary for onlyoffice: ")
    for call in (lambda: ns.read_states(host, KEY), lambda: ns.set_state(host, KEY, "ds1", "draining"),
                 lambda: ns.clear_state(host, KEY, "ds1")):
        with pytest.raises(ns.NodeStateError, match="^data1: cannot .*names no primary"):
            call()


@pytest.mark.parametrize("output", ["", "ERR something", "[1]", '["a"]', '{"a": "b"}', "[1, 2]"])
def test_an_unexpected_answer_is_an_error(output: str) -> None:
    with pytest.raises(ns.NodeStateError, match="unexpected answer"):
        ns.parse_hash(output)


def test_parse_hash_reads_the_scripts_json() -> None:
    assert ns.parse_hash("{}\n") == {}
    assert ns.parse_hash('["ds1","draining","ds 2","out"]') == {"ds1": "draining", "ds 2": "out"}


def test_the_script_refuses_a_sentinel_without_a_primary_and_quotes_everything() -> None:
    script = ns.write_command("k'ey", "ds1", "", "draining", "m$aster")
    assert "get-master-addr-by-name 'm$aster'" in script and "exit 3" in script
    assert shlex.split(script.splitlines()[-1])[-4:] == ["k'ey", "ds1", "", "draining"]


def test_settle_time_is_twice_the_lbs_cache(lab_like) -> None:  # noqa: F811
    assert ns.settle_seconds(lab_like["lb1"]) == 2.0
    lab_like["lb1"].data["lb_node_state_cache_ms"] = 250
    assert ns.settle_seconds(lab_like["lb1"]) == 0.5 == drain.settle_seconds(250)
