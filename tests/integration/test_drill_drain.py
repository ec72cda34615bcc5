"""Drain through the load balancers: the node-state hash the rollout writes steers the front door.

- The deployed Lua (run by the LB's own LuaJIT with ngx stubbed) places, keeps, re-points and
  orders nodes exactly as ooha/rollout/drain.py says, for every state of three nodes.
- On the lab, written with ooha/rollout/live/nodestate.py over SSH to a data host: ds2
  ``draining`` -> fresh documents never land on it while a document it holds stays; ``out`` ->
  that document is re-pointed to an active node and no request at all (documents, requests
  without a shard key) reaches ds2; ``active`` again -> fresh documents land on it again.
  The state is always cleared in a ``finally``.
"""

from __future__ import annotations

import itertools
import re
import shlex
import time
import zlib
from types import SimpleNamespace
from typing import Any

import pytest

from lab.client import connect, hosts_in, lab_lock, ssh
from lab.workload import direct, get, key_for, sentinel_primary
from ooha.layers.loadbalancer import CONF_DIR, LOADBALANCER_DEFAULTS, LUA_MODULE, lua_string
from ooha.rollout import drain
from ooha.rollout.live import nodestate
from tests.integration.frontdoor import close_all, session, unique

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

KEY = LOADBALANCER_DEFAULTS["lb_node_state_key"]
SETTLE = drain.settle_seconds(LOADBALANCER_DEFAULTS["lb_node_state_cache_ms"])
"""The lab uses the defaults: after a write every LB worker routes by it within this (the contract)."""


class LabHost:
    """What ooha.rollout.live.remote.run needs of a connected pyinfra Host, over the lab's SSH
    (host key checked): the driver's own functions then run unchanged against the lab."""

    def __init__(self, lab: dict[str, Any], name: str) -> None:
        self.lab, self.name = lab, name
        self.data: dict[str, Any] = {}  # the redis layer's defaults (the lab's master name)

    def run_shell_command(self, command: Any, _timeout: int = 60, _sudo: bool = False,
                          _stdin: str | None = None) -> tuple[bool, Any]:
        client = connect(self.lab, self.name)
        try:
            line = ("sudo -n " if _sudo else "") + command.get_raw_value()
            stdin, stdout, stderr = client.exec_command(line, timeout=_timeout)
            if _stdin is not None:
                stdin.write(_stdin)
            stdin.channel.shutdown_write()
            out, err = stdout.read().decode(), stderr.read().decode()
            return stdout.channel.recv_exit_status() == 0, SimpleNamespace(
                stdout_lines=out.splitlines(), stderr_lines=err.splitlines())
        finally:
            client.close()


@pytest.fixture(scope="module")
def front(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The converged lab (the whole main job: under the exclusive lock)."""
    with lab_lock():
        return dict(request.getfixturevalue("converged"))


# --- the deployed Lua against its Python mirror ------------------------------------------------

_LUA_HARNESS = """
package.path = "{conf_dir}/?.lua;" .. package.path
package.preload["nginx.redis"] = function() return {{}} end
package.preload["ngx.balancer"] = function() return {{}} end
local SCORES = {{ {scores} }}
local down = {{}}
ngx = {{ shared = {{ ooha_down = {{ get = function(_, name) return down[name] end }} }},
        crc32_long = function(s) return SCORES[s] end, var = {{}}, ctx = {{}}, log = function() end, WARN = 0 }}
local M = require "{module}"
local by_name = {{}}
for _, node in ipairs(M.nodes) do by_name[node.name] = node end
local function names(list)
  local out = {{}}
  for i, node in ipairs(list) do out[i] = node.name end
  return table.concat(out, ",")
end
local function parse(text)
  local t = {{}}
  for name, value in string.gmatch(text, "([^,=]+)=([^,]+)") do t[name] = value end
  return t
end
for _, case in ipairs({{ {cases} }}) do
  local key, spec, marked = case[1], case[2], case[3]
  local states = parse(spec)
  down = {{}}
  for name in string.gmatch(marked, "[^,]+") do down[name] = true end
  local out = {{ key, spec, marked, M.first_sight(key, states).name }}
  for _, name in ipairs({{ {table_names} }}) do
    local node, repoint = M.target(key, name ~= "" and name or nil, states)
    out[#out + 1] = node.name .. (repoint and "!" or "")
    out[#out + 1] = names(M.candidates(key, node, states))
  end
  for offset = 1, 3 do out[#out + 1] = names(M.keyless(states, offset)) end
  print(table.concat(out, "|"))
end
"""


def test_the_live_lua_routes_by_node_state_like_its_python_mirror(front: dict[str, Any]) -> None:
    """Every combination of states of the three nodes, some down lists, every table entry
    (none, each node, a node no longer in the inventory): the deployed M.first_sight,
    M.target, M.candidates and M.keyless answer what drain.py answers."""
    nodes = hosts_in(front, "docs")
    keys = ["state-a", "state-b", "state-c", "state-d"]
    scores = ", ".join(f"[{lua_string(f'{n}{chr(0)}{k}')}] = {zlib.crc32(f'{n}{chr(0)}{k}'.encode())}"
                       for n in nodes for k in keys)
    combos = [dict(zip(nodes, values)) for values in itertools.product(drain.STATES + ("bogus",), repeat=len(nodes))]
    specs = [",".join(f"{n}={s}" for n, s in combo.items()) for combo in combos]
    marks = ["", nodes[0], ",".join(nodes[1:])]
    cases = [(k, spec, mark) for k in keys[:2] for spec in specs for mark in marks]
    cases += [(k, spec, "") for k in keys[2:] for spec in specs]
    table_names = [""] + nodes + ["gone"]
    script = _LUA_HARNESS.format(
        conf_dir=CONF_DIR, module=LUA_MODULE.removesuffix(".lua"), scores=scores,
        table_names=", ".join(lua_string(n) for n in table_names),
        cases=", ".join(f"{{ {lua_string(k)}, {lua_string(s)}, {lua_string(m)} }}" for k, s, m in cases))
    rc, out = ssh(front, "lb1", "sudo luajit - <<'OOHA_LUA'\n" + script + "\nOOHA_LUA")
    assert rc == 0, out[-2000:]
    lines = [line.split("|") for line in out.splitlines() if line.count("|") >= 4]
    assert len(lines) == len(cases), out[-2000:]
    for fields in lines:
        key, spec, marked, first = fields[:4]
        states = dict(item.split("=") for item in spec.split(","))
        down = set(filter(None, marked.split(",")))
        assert first == drain.first_sight_node(nodes, key, states), fields
        for i, name in enumerate(table_names):
            node, repoint = drain.route_node(nodes, key, name or None, states)
            assert fields[4 + 2 * i] == node + ("!" if repoint else ""), (name, fields)
            assert fields[5 + 2 * i].split(",") == drain.candidate_order(nodes, key, node, states, down), (name, fields)
        keyless = fields[4 + 2 * len(table_names):]
        assert [k.split(",") for k in keyless] == [drain.keyless_order(nodes, states, o, down) for o in (1, 2, 3)], fields


# --- the drill --------------------------------------------------------------------------------


def _logged(front: dict[str, Any], marker: str) -> list[str]:
    """Access-log lines of both LBs holding ``marker`` (the VIP may move between request and read)."""
    lines = []
    for name in hosts_in(front, "lb"):
        rc, out = ssh(front, name, f"sudo grep -F {shlex.quote(marker)} /var/log/nginx/access.log || true")
        assert rc == 0, out
        lines += [line for line in out.splitlines() if line.strip()]
    return lines


def _requests(front: dict[str, Any], marker: str, keys: list[str], rounds: int = 3) -> dict[str, set[str]]:
    """GETs through the VIP, all answering 200: per round one without a shard key and one per
    document of ``keys``.  Returns, from both LBs' access logs, per shard key ('' = none) the
    nodes that served it: the upstream address's node, and for keyed ones the ``node=`` field."""
    for i in range(rounds):
        paths = [f"/healthcheck?probe={marker}-{i}"] + [f"/healthcheck?shardkey={k}&probe={marker}-{i}" for k in keys]
        for path in paths:
            response = get(front, path, timeout=10)
            assert response.status_code == 200 and response.text.strip() == "true", (path, response.status_code)
    lines = _logged(front, marker)
    assert len(lines) == rounds * (1 + len(keys)), lines
    names = {h["address"]: h["name"] for h in front["hosts"]}
    served: dict[str, set[str]] = {}
    for line in lines:
        shard = re.search(r'shard="([^"]*)"', line).group(1)
        upstream = re.search(r'upstream="([0-9.]+):', line).group(1)
        node = re.search(r" node=(\S*) ", line).group(1)
        served.setdefault(shard, set()).update({names[upstream]} | ({node} if shard else set()))
    return served


def test_draining_then_out_then_active_steers_documents_and_requests(front: dict[str, Any]) -> None:
    """Where documents land is read from the LBs' access logs (keyed GETs) and, for the document
    the victim holds, from the editor's welcome; few websockets (the lab's websocket client
    rarely stalls a handshake for a minute, whatever the LBs do)."""
    nodes = hosts_in(front, "docs")
    victim = nodes[1]
    redis_host = LabHost(front, hosts_in(front, "redis")[0])
    table = direct(front, sentinel_primary(front))
    prefix = LOADBALANCER_DEFAULTS["lb_shard_key_prefix"]
    held = []
    started = time.monotonic()
    with lab_lock():
        try:
            assert nodestate.read_states(redis_host, KEY).get(victim, "active") == "active"
            kept = key_for(victim, nodes, "drain-kept")
            ws, node = session(front, kept)
            held.append(ws)
            assert node == victim

            # draining: no new document on the victim, its own document stays
            nodestate.set_state(redis_host, KEY, victim, "draining")
            states = {victim: "draining"}
            assert nodestate.read_states(redis_host, KEY) == states
            time.sleep(SETTLE)  # the documented contract under test: 2 x lb_node_state_cache_ms
            fresh = [key_for(victim, nodes, f"drain-fresh{i}") for i in range(6)]
            served = _requests(front, unique("draining"), [kept] + fresh)
            for key in fresh:
                assert served[key] == {drain.first_sight_node(nodes, key, states)}, (key, served[key])
                assert victim not in served[key]
            assert served[kept] == {victim}, "a document open on a draining node must stay there"
            assert victim not in served[""], f"a request without a shard key reached the draining {victim}"
            ws, node = session(front, kept)
            held.append(ws)
            assert node == victim

            # out: the document is re-pointed before routing, nothing reaches the victim
            nodestate.set_state(redis_host, KEY, victim, "out")
            states = {victim: "out"}
            time.sleep(SETTLE)
            moved_to = drain.first_sight_node(nodes, kept, states)
            ws, node = session(front, kept)
            held.append(ws)
            assert node == moved_to != victim, (node, moved_to)
            assert table.get(prefix + kept) == moved_to.encode(), "the table entry was not re-pointed"
            more = [key_for(victim, nodes, f"drain-out{i}") for i in range(4)]
            served = _requests(front, unique("out"), [kept] + fresh + more)
            assert not [key for key, where in served.items() if victim in where], served
            assert served[kept] == {moved_to}

            # active again: fresh documents hashing to the victim land on it; the moved one stays
            nodestate.set_state(redis_host, KEY, victim, "active")
            time.sleep(SETTLE)
            back = [key_for(victim, nodes, f"drain-back{i}") for i in range(4)]
            served = _requests(front, unique("active"), [kept] + back)
            assert all(served[key] == {victim} for key in back), served
            assert served[kept] == {moved_to}, "a document moved off an out node must not move back while open"
            ws, node = session(front, key_for(victim, nodes, "drain-back-editor"))
            held.append(ws)
            assert node == victim
        finally:
            close_all(held)
            nodestate.clear_state(redis_host, KEY, victim)
    print(f"\ndrain drill: {victim} draining/out/active through both LBs in {time.monotonic() - started:.0f} s")
    assert nodestate.read_states(redis_host, KEY).get(victim) is None


_GLUE_HARNESS = """
package.path = "{conf_dir}/?.lua;" .. package.path
local SCORES = {{ {scores} }}
local R = {{ fail = false, states = {{}}, tbl = {{}}, hgetall = 0, now = 1000, logs = {{}} }}
local NULL = setmetatable({{}}, {{ __tostring = function() return "null" end }})
local client = {{}}
function client.set_timeout() end
function client.connect() if R.fail then return nil, "refused" end return true end
function client.get_reused_times() return 1 end
function client.set_keepalive() return true end
function client.close() return true end
function client.hgetall(_, key)
  R.hgetall = R.hgetall + 1
  local flat = {{}}
  for name, value in pairs(R.states) do flat[#flat + 1] = name flat[#flat + 1] = value end
  return flat
end
function client.getex(_, key) return R.tbl[key] or NULL end
function client.get(_, key) return R.tbl[key] or NULL end
function client.set(_, key, value) if R.tbl[key] then return NULL end R.tbl[key] = value return "OK" end
function client.eval(_, _, _, key, from, to) if R.tbl[key] == from then R.tbl[key] = to return "OK" end return NULL end
package.preload["nginx.redis"] = function() return {{ new = function() return setmetatable({{}}, {{ __index = client }}) end }} end
package.preload["ngx.balancer"] = function() return {{}} end
ngx = {{ shared = {{ ooha_down = {{ get = function() return nil end }} }}, null = NULL,
        crc32_long = function(s) return SCORES[s] end, now = function() return R.now end,
        log = function(_, ...) R.logs[#R.logs + 1] = table.concat({{ ... }}) end, WARN = 0,
        re = {{ match = function() return nil end }}, req = {{}}, var = {{}}, ctx = {{}} }}
local M = require "{module}"
local function names(list)
  local out = {{}}
  for i, node in ipairs(list or {{}}) do out[i] = node.name end
  return table.concat(out, ",")
end
local function count(text)
  local n = 0
  for _, line in ipairs(R.logs) do if line:find(text, 1, true) then n = n + 1 end end
  return n
end
local function request(label, key)
  ngx.var = {{ ds_upstream = "ds_all", uri = "/x" }}
  ngx.ctx = {{}}
  ngx.req.get_uri_args = function() return key and {{ shardkey = key }} or {{}} end
  M.route()
  print(table.concat({{ label, key or "", ngx.var.ds_upstream, names(ngx.ctx.ooha_candidates),
    key and (R.tbl["{prefix}" .. key] or "") or "", R.hgetall, count("node states unavailable"),
    count("node states readable again") }}, "|"))
end
{steps}
"""


def test_the_live_lua_reads_states_through_its_cache_and_survives_a_lost_redis(front: dict[str, Any]) -> None:
    """The deployed Lua's Redis glue (lookup, node_states, route, route_keyless) with a fake
    lua-resty-redis: first sight on an active node, an out entry re-pointed, requests without a
    key steered only while a node is not active, the hash read once per cache period, and a lost
    Redis = every node active, logged once, read again at once when Redis answers."""
    nodes = hosts_in(front, "docs")
    victim = nodes[1]
    prefix = LOADBALANCER_DEFAULTS["lb_shard_key_prefix"]
    cache_s = LOADBALANCER_DEFAULTS["lb_node_state_cache_ms"] / 1000
    keys = {name: key_for(victim, nodes, f"glue-{name}") for name in ("new", "held", "late", "lost", "back")}
    scores = ", ".join(f"[{lua_string(f'{n}{chr(0)}{k}')}] = {zlib.crc32(f'{n}{chr(0)}{k}'.encode())}"
                       for n in nodes for k in keys.values())
    q = lua_string
    steps = "\n".join([
        f"R.states = {{ [{q(victim)}] = 'draining' }}",
        f"request('draining-new', {q(keys['new'])})",
        "request('draining-keyless', nil)",
        f"R.states = {{ [{q(victim)}] = 'out' }}",
        f"R.tbl[{q(prefix + keys['held'])}] = {q(victim)}",
        f"request('cached-held', {q(keys['held'])})",  # within the cache: still draining, kept
        f"R.now = R.now + {cache_s + 0.01}",
        f"request('out-held', {q(keys['held'])})",
        "request('out-keyless', nil)",
        "R.states = {}",
        f"R.now = R.now + {cache_s + 0.01}",
        "request('active-keyless', nil)",
        f"R.states = {{ [{q(victim)}] = 'out' }}",
        "R.fail = true",
        f"R.now = R.now + {cache_s + 0.01}",
        f"request('lost-1', {q(keys['lost'])})",
        f"request('lost-2', {q(keys['lost'])})",
        "request('lost-keyless', nil)",
        "R.fail = false",
        f"request('back', {q(keys['back'])})",
    ])
    script = _GLUE_HARNESS.format(conf_dir=CONF_DIR, module=LUA_MODULE.removesuffix(".lua"), scores=scores,
                                  prefix=prefix, steps=steps)
    rc, out = ssh(front, "lb1", "sudo luajit - <<'OOHA_LUA'\n" + script + "\nOOHA_LUA")
    assert rc == 0, out[-2000:]
    rows = {f[0]: f[1:] for f in (line.split("|") for line in out.splitlines()) if len(f) == 8}
    assert len(rows) == 10, out[-2000:]

    def row(label: str) -> tuple[str, list[str], str, int, int, int]:
        _, upstream, candidates, entry, reads, lost, back = rows[label]
        return upstream, candidates.split(",") if candidates else [], entry, int(reads), int(lost), int(back)

    draining, out_ = {victim: "draining"}, {victim: "out"}
    first = drain.first_sight_node(nodes, keys["new"], draining)
    assert first != victim
    assert row("draining-new") == ("ds_shard", drain.candidate_order(nodes, keys["new"], first, draining), first, 1, 0, 0)
    assert row("draining-keyless")[:2] == ("ds_shard", drain.keyless_order(nodes, draining, 1))
    # the hash is cached: a change within the period is not seen, no extra read
    assert row("cached-held") == ("ds_shard", drain.candidate_order(nodes, keys["held"], victim, draining), victim, 1, 0, 0)
    moved = drain.first_sight_node(nodes, keys["held"], out_)
    assert row("out-held") == ("ds_shard", drain.candidate_order(nodes, keys["held"], moved, out_), moved, 2, 0, 0)
    assert victim not in row("out-held")[1] and victim not in row("out-keyless")[1]
    assert row("out-keyless")[:2] == ("ds_shard", drain.keyless_order(nodes, out_, 2))
    assert row("active-keyless")[:2] == ("ds_all", [])  # every node active: least_conn as always
    # Redis lost: every node active (the plain hash), logged once, nothing read
    hashed = drain.first_sight_node(nodes, keys["lost"], {})
    assert hashed == victim
    for label in ("lost-1", "lost-2"):
        assert row(label)[:2] == ("ds_shard", drain.candidate_order(nodes, keys["lost"], hashed, {})), label
        assert row(label)[4] == 1, label
    assert row("lost-keyless")[:2] == ("ds_all", [])
    # Redis back: the unknown states are read again at once, not after the period
    upstream, candidates, entry, _, lost, back = row("back")
    assert entry == drain.first_sight_node(nodes, keys["back"], out_) != victim and victim not in candidates
    assert (lost, back) == (1, 1)
