"""The front door on the lab: nginx + keepalived on lb1/lb2, the VIP, TLS, document affinity.

Non-destructive: nothing is stopped here (tests/integration/test_drill_frontdoor.py stops
hosts).  Requests go from this machine to the VIP with the lab CA verified.
"""

from __future__ import annotations

import itertools
import shlex
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lab.client import explain, hosts_in, lab_lock, output_of, report_lines, ssh
from lab.workload import get, vip, vip_holder
from tests.integration.deploytools import deploy
from ooha.layers.loadbalancer import CONF_DIR, LUA_MODULE, candidate_order, hash_node, lua_string
from tests.integration.frontdoor import close_all, session, unique

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def on_every_lb(front: dict[str, Any], cmd: str) -> dict[str, str]:
    """cmd's output on each LB.  Logs are read on BOTH: the VIP can move between a request
    and the read, so "the LB holding the VIP" afterwards may not be the one that served it."""
    outputs = {}
    for name in hosts_in(front, "lb"):
        rc, out = ssh(front, name, cmd)
        assert rc == 0, (name, out)
        outputs[name] = out
    return outputs


@pytest.fixture(scope="module")
def front(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The converged lab (the whole main job: under the exclusive lock), then the lab lock
    held shared while this module's tests run (no drill stops a node under them)."""
    with lab_lock():
        state = dict(request.getfixturevalue("converged"))
    assert "front" in state, "the lab state has no front door (python -m lab up is older than this test)"
    with lab_lock(exclusive=False):
        yield state


def test_both_lbs_run_a_valid_private_config_and_one_holds_the_vip(front: dict[str, Any]) -> None:
    for name in hosts_in(front, "lb"):
        rc, out = ssh(front, name, "sudo nginx -t -q && echo valid; systemctl is-active nginx keepalived; "
                                   "sudo stat -c '%a %U %G %n' /etc/nginx/onlyoffice-ha/ooha_shard.lua /etc/nginx/onlyoffice-ha/front.key")
        assert rc == 0, out
        lines = out.split("\n")
        assert "valid" in lines[0] and lines[1:3] == ["active", "active"], out
        assert "640 root www-data /etc/nginx/onlyoffice-ha/ooha_shard.lua" in out, out
        assert "600 root root /etc/nginx/onlyoffice-ha/front.key" in out, out
        # at boot keepalived waits for nginx: a restarted LB is a valid backup at once
        _, after = ssh(front, name, "systemctl show -p After --value keepalived.service")
        assert "nginx.service" in after.split(), after
    assert vip_holder(front) in hosts_in(front, "lb")


def test_front_door_answers_over_verified_tls_and_guards_internal_paths(front: dict[str, Any]) -> None:
    response = get(front, "/healthcheck", timeout=10)
    assert response.status_code == 200 and response.text.strip() == "true", response.text[:200]
    with requests.Session() as plain:
        plain.trust_env = False
        redirect = plain.get(f"http://{vip(front)}/anything?x=1", allow_redirects=False, timeout=10)
        assert redirect.status_code == 301 and redirect.headers["Location"] == f"https://{vip(front)}/anything?x=1"
        assert plain.get(f"http://{vip(front)}/healthcheck", timeout=10).text.strip() == "true"
    for path in ("/internal/cluster/inactive", "/info/info.json"):
        assert get(front, path, timeout=10).status_code == 403, path
    # the access log names the upstream and its timings for every request
    marker = unique("logged")
    assert get(front, f"/healthcheck?probe={marker}", timeout=10).status_code == 200
    logged = on_every_lb(front, f"sudo grep -F 'probe={marker} HTTP' /var/log/nginx/access.log || true")
    lines = [line for out in logged.values() for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, logged
    assert 'upstream="198.18.' in lines[0] and "urt=" in lines[0] and "uct=" in lines[0] and "rt=" in lines[0], lines


def keys_spread_over(nodes: list[str], per_node: int) -> list[str]:
    """New document keys, ``per_node`` for each node by the rendezvous hash.  Chosen, not drawn:
    six random keys all hash to one of three nodes once in 243 runs (CI met it), and the test is
    about routing, not about luck (the hash's spread is unit-tested)."""
    wanted = {node: per_node for node in nodes}
    keys: list[str] = []
    for i in range(10000):
        key = unique(f"aff{i}")
        node = hash_node(nodes, key)
        if wanted[node]:
            wanted[node] -= 1
            keys.append(key)
        if not any(wanted.values()):
            return keys
    raise AssertionError(f"no {per_node} keys per node in 10000 tries: {wanted}")


def test_every_session_of_a_document_reaches_one_node(front: dict[str, Any]) -> None:
    nodes = hosts_in(front, "docs")
    keys = keys_spread_over(nodes, per_node=2)
    held = []
    try:
        first = {}
        for key in keys:
            ws, node = session(front, key)
            held.append(ws)
            first[key] = node
            # a new document goes where the consistent hash says (same function as the Lua)
            assert node == hash_node(nodes, key), (key, node)
        assert set(first.values()) == set(nodes), f"every node takes new documents: {first}"
        for key in keys:
            for shardkey in (True, True, False):  # again, and by the /doc/<key>/ path alone
                ws, node = session(front, key, shardkey=shardkey)
                held.append(ws)
                assert node == first[key], (key, first[key], node)
        print(f"\naffinity: {first}")
    finally:
        close_all(held)


def test_keyed_requests_are_routed_and_logged_with_their_key(front: dict[str, Any]) -> None:
    nodes = hosts_in(front, "docs")
    key = unique("wopi")
    for arg in ("WOPISrc", "shardkey"):
        for _ in range(3):
            assert get(front, f"/healthcheck?{arg}={key}", timeout=10).status_code == 200
    logged = on_every_lb(front, f"sudo grep -F 'shard=\"{key}\"' /var/log/nginx/access.log || true")
    lines = [line for out in logged.values() for line in out.splitlines() if line.strip()]
    assert len(lines) == 6, logged
    node = hash_node(nodes, key)
    assert all(f"node={node} " in line for line in lines), lines


def test_a_broken_candidate_never_goes_live(front: dict[str, Any], pyinfra_cli) -> None:
    with lab_lock(exclusive=False):
        _, before = ssh(front, "lb1", "sudo sha256sum /etc/nginx/nginx.conf")
        broken = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=loadbalancer", "--limit", "lb1",
                        "--data", "lb_ssl_protocols=TLSv9")
        assert broken.returncode != 0, output_of(broken)[-3000:]
        assert "invalid nginx configuration, live one unchanged" in output_of(broken)
        _, after = ssh(front, "lb1", "sudo sha256sum /etc/nginx/nginx.conf; systemctl is-active nginx")
        assert after.split()[0] == before.split()[0] and after.split()[-1] == "active", after
        repaired = deploy(pyinfra_cli, "deploys/ha.py", "--data", "layers=loadbalancer", "--limit", "lb1")
        assert repaired.returncode == 0, explain(repaired)
        assert report_lines(output_of(repaired)).get(("lb1", "loadbalancer"), "").startswith("OK")



def test_a_502_at_the_front_door_is_diagnosed_from_the_lb_logs(front: dict[str, Any]) -> None:
    """The example is off on every node (ds_example_enabled False): /example/ answers 502
    through the front door, and the report's diagnosis names it from the LB's own logs."""
    from ooha.facts.nginx import NginxLogTail, diagnose_502

    marker = unique("example")
    response = get(front, f"/example/?probe={marker}", timeout=15)
    assert response.status_code == 502, response.status_code
    fact = NginxLogTail()
    tails = on_every_lb(front, "sudo bash -c " + shlex.quote(fact.command(lines=20)))
    served = {name: fact.process(out.splitlines()) for name, out in tails.items()}
    served = {name: logs for name, logs in served.items() if logs["access"] and marker in logs["access"][-1]}
    assert len(served) == 1, tails  # the LB that answered it, wherever the VIP is now
    logs = next(iter(served.values()))
    assert "/example/" in logs["access"][-1] and 'ustatus="502' in logs["access"][-1], logs["access"][-3:]
    assert diagnose_502(logs["access"], logs["error"]).startswith("example off"), logs


# The live ooha_shard.lua run by the LB's own LuaJIT with ngx stubbed: the shared dict
# `ooha_down`, crc32 (scores from Python's zlib, the same CRC-32) and the follow() timer.
_LUA_HARNESS = """
package.path = "{conf_dir}/?.lua;" .. package.path
package.preload["nginx.redis"] = function() return {{}} end
package.preload["ngx.balancer"] = function() return {{}} end
local SCORES = {{ {scores} }}
local down, timers = {{}}, {{}}
ngx = {{ shared = {{ ooha_down = {{ get = function(_, name) return down[name] end }} }},
        crc32_long = function(s) return SCORES[s] end, var = {{}}, ctx = {{}}, header = {{}}, status = 101,
        log = function() end, WARN = 0,
        timer = {{ at = function(_, _, key, from, to) timers[#timers + 1] = from .. ">" .. to return true end }} }}
local M = require "{module}"
local by_name = {{}}
for _, node in ipairs(M.nodes) do by_name[node.name] = node end
local function names(list)
  local out = {{}}
  for i, node in ipairs(list) do out[i] = node.name end
  return table.concat(out, ",")
end
for _, case in ipairs({{ {cases} }}) do
  local key, first, marked = case[1], case[2], case[3]
  down = {{}}
  for name in string.gmatch(marked, "[^,]+") do down[name] = true end
  local list = M.candidates(key, by_name[first])
  local moved = {{}}
  for try = 1, 2 do
    timers = {{}}
    ngx.ctx = {{ ooha_node = first, ooha_candidates = list, ooha_try = try }}
    M.follow()
    moved[try] = table.concat(timers, ";")
  end
  print(key .. "|" .. first .. "|" .. marked .. "|" .. names(list) .. "|" .. moved[1] .. "|" .. moved[2])
end
"""


def test_the_live_lua_tries_the_tables_node_first_and_moves_only_after_it_failed(front: dict[str, Any]) -> None:
    """Regression: a node in the down list (any 502/timeout in the last lb_fail_timeout) went
    last even for its OWN documents, and follow() re-pointed them while editors held sockets
    there: one document on two nodes after one transient error.  Runs the deployed Lua."""
    nodes = hosts_in(front, "docs")
    keys = ["order-a", "order-b", "order-c"]
    scores = ", ".join(f"[{lua_string(f'{n}{chr(0)}{k}')}] = {zlib.crc32(f'{n}{chr(0)}{k}'.encode())}"
                       for n in nodes for k in keys)
    marks = [",".join(c) for r in range(len(nodes) + 1) for c in itertools.combinations(nodes, r)]
    cases = [(k, first, marked) for k in keys for first in nodes for marked in marks]
    script = _LUA_HARNESS.format(conf_dir=CONF_DIR, module=LUA_MODULE.removesuffix(".lua"), scores=scores,
                                 cases=", ".join(f"{{ {lua_string(k)}, {lua_string(f)}, {lua_string(m)} }}" for k, f, m in cases))
    rc, out = ssh(front, "lb1", "sudo luajit - <<'OOHA_LUA'\n" + script + "\nOOHA_LUA")
    assert rc == 0, out[-2000:]
    lines = [line for line in out.splitlines() if line.count("|") == 5]
    assert len(lines) == len(cases), out[-2000:]
    for line in lines:
        key, first, marked, order, moved_first_try, moved_retry = line.split("|")
        expected = candidate_order(nodes, key, first, set(filter(None, marked.split(","))))
        assert order.split(",") == expected, line
        assert moved_first_try == "", line  # the table's node answered: the entry stays
        assert moved_retry == f"{first}>{expected[1]}", line  # it failed in this request: moved
