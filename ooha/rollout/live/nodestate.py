"""The load balancers' node-state hash in Redis: read and written by the rollout driver.

The LBs' Lua (templates/loadbalancer/ooha_shard.lua.j2; rule mirrored by ooha/rollout/drain.py)
reads the hash ``lb_node_state_key`` (node -> ``active``|``draining``|``out``) from the Redis
primary, through the HAProxy endpoint on 127.0.0.1 of each LB.  The driver writes the same
primary from a host of the ``redis`` group: the local Sentinel names the primary, and the
root-only ``ooha-redis-cli`` wrapper (ooha/layers/redis.py) passes the password to redis-cli
in ``REDISCLI_AUTH``, so no password is ever in argv, in ``ps`` or in pyinfra's output.  Why a
data host and not an LB: only the data hosts have that wrapper; an LB's password lives in its
nginx Lua file.  Reading and writing the primary (not the local Redis, maybe a replica) means a
read right after a write sees it.

Settle time: every nginx worker keeps its copy of the hash for ``lb_node_state_cache_ms``
(default 1000).  After a write, callers wait ``drain.settle_seconds(cache_ms)`` (2 x cache_ms)
before they assume every worker of every LB routes by it (``settle_seconds`` here reads it).

Every function raises :class:`NodeStateError` with the host and the cause when Redis cannot be
read or written: a drain whose state is not written must stop the rollout, never be assumed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from ooha.facts.redis import CLI
from ooha.rollout import drain
from ooha.rollout.live import remote

TIMEOUT_S = 30
"""Per command (the wrapper bounds each redis-cli call to a few seconds)."""

READ_SCRIPT = "return cjson.encode(redis.call('HGETALL', KEYS[1]))"
"""The hash as ONE JSON line (a flat [field, value, ...] array, ``{}`` when empty): no parsing
of redis-cli's line-per-element output, whatever a value holds.  Run by EVAL_RO (Redis 7): a
read-only script is not refused by ``min-replicas-to-write`` while a replica is away."""

WRITE_SCRIPT = (
    "local c = redis.call('HGET', KEYS[1], ARGV[1]) or '' "
    "if c ~= ARGV[2] then return redis.error_reply('OOHA changed meanwhile: now ' .. (c == '' and 'absent' or c)) end "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 'OK'"
)
"""Compare-and-set of one field: written only if it still holds what the caller read ('' = absent)."""

CLEAR_SCRIPT = "redis.call('HDEL', KEYS[1], ARGV[1]) return 'OK'"


class NodeStateError(RuntimeError):
    """The node-state hash could not be read or written, or the wanted transition is not allowed."""


# --- commands (pure, unit-tested) -------------------------------------------------------------


def primary_command(master: str, redis_args: list[str]) -> str:
    """A shell script for a redis-group host: ask the local Sentinel for the primary of
    ``master``, then run ``redis-cli -e <redis_args>`` against it through the wrapper.

    ``-e``: a Redis error reply (READONLY, NOREPLICAS, WRONGTYPE, the CAS refusal) exits 1 with
    the message on stderr; without it redis-cli prints the error as output and exits 0.
    Exit 3: the local Sentinel names no primary.
    """
    q = remote.quote
    args = " ".join(q(a) for a in redis_args)
    refuse = f"{{ echo \"the local Sentinel names no primary for \"{q(master)}\": $answer\" >&2; exit 3; }}"
    return (
        f"answer=$({CLI} sentinel -e SENTINEL get-master-addr-by-name {q(master)}) || {refuse}\n"
        "addr=$(printf '%s\\n' \"$answer\" | sed -n 1p); port=$(printf '%s\\n' \"$answer\" | sed -n 2p)\n"
        f"case \"$addr:$port\" in *[!0-9A-Za-z.:-]*|:*|*:) {refuse};; esac\n"
        f"exec {CLI} redis -h \"$addr\" -p \"$port\" -e {args}"
    )


def read_command(key: str, master: str) -> str:
    """The script that prints the hash ``key`` of the primary as one JSON line."""
    return primary_command(master, ["EVAL_RO", READ_SCRIPT, "1", key])


def write_command(key: str, node: str, expected: str, wanted: str, master: str) -> str:
    """The script that sets ``node`` to ``wanted`` if its field still holds ``expected``
    ('' = absent); prints OK."""
    return primary_command(master, ["EVAL", WRITE_SCRIPT, "1", key, node, expected, wanted])


def clear_command(key: str, node: str, master: str) -> str:
    """The script that removes ``node``'s field (the node is then active); prints OK."""
    return primary_command(master, ["EVAL", CLEAR_SCRIPT, "1", key, node])


def parse_hash(stdout: str) -> dict[str, str]:
    """The read script's output -> {field: value} (raw, as stored)."""
    text = stdout.strip()
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = None
    if value == {}:  # cjson encodes an empty Lua table as an object
        return {}
    if not isinstance(value, list) or len(value) % 2 or not all(isinstance(v, str) for v in value):
        raise NodeStateError(f"unexpected answer to HGETALL: {text[:120]!r}")
    return dict(zip(value[0::2], value[1::2]))


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise NodeStateError(f"{what}: {value!r} is not a name (non-empty, no spaces)")


def _master(host: Any) -> str:
    """The Sentinel master name from the host's data (the redis layer's setting)."""
    from ooha.layers.redis import setting  # the layer module pulls pyinfra's deploy machinery

    return str(setting(host, "redis_master_name"))


# --- I/O on a connected redis-group host ------------------------------------------------------


def read_raw(host: Any, key: str) -> dict[str, str]:
    """The hash ``key`` as stored on the Redis primary (values not normalised)."""
    _check_name("lb_node_state_key", key)
    result = remote.run(host, read_command(key, _master(host)), timeout=TIMEOUT_S)
    if not result.ok:
        raise NodeStateError(f"{host.name}: cannot read the node states {key}: {result.why()}")
    return parse_hash(result.stdout)


def read_states(host: Any, key: str) -> dict[str, str]:
    """Node -> state for every node in the hash, as the LBs read it (an unknown value = active).

    A node absent from the result is active too: use ``states.get(node, "active")`` or
    ``drain.parse_states(states, nodes)``.
    """
    raw = read_raw(host, key)
    return {node: drain.state_of(raw, node) for node in raw}


def set_state(host: Any, key: str, node: str, state: str) -> None:
    """Set ``node`` to ``state`` (active|draining|out) if ``drain.transition_allowed`` permits it
    from the state it has now; writing the state it already has changes nothing.

    Compare-and-set against the value just read, so a concurrent writer is detected, never
    overwritten.  Raises :class:`NodeStateError` when the transition is not allowed or the write
    fails.  Then wait ``settle_seconds`` before relying on it.
    """
    _check_name("node", node)
    if state not in drain.STATES:
        raise NodeStateError(f"{node}: {state!r} is not a node state; use one of {', '.join(drain.STATES)}")
    raw = read_raw(host, key)
    current = drain.state_of(raw, node)
    if not drain.transition_allowed(current, state):
        raise NodeStateError(f"{node}: node state {current} -> {state} is not allowed "
                             "(active -> draining -> out -> active, or draining -> active)")
    if raw.get(node) == state:
        return
    result = remote.run(host, write_command(key, node, raw.get(node, ""), state, _master(host)), timeout=TIMEOUT_S)
    if not result.ok or result.stdout.strip() != "OK":
        raise NodeStateError(f"{host.name}: cannot set {node} {state} in {key}: {result.why()}")


def announce_out(host: Any, key: str, node: str) -> None:
    """Write ``out`` for a JOINING node whatever its field holds (compare-and-set on that value).

    The one write outside ``transition_allowed``: only for a node that no load balancer routes
    to yet (the scale-out driver checks the LBs' deployed tables first), so no session can be
    cut; the LBs then render it without ever sending it a request until its health gate passed.
    """
    _check_name("node", node)
    raw = read_raw(host, key)
    if raw.get(node) == drain.OUT:
        return
    result = remote.run(host, write_command(key, node, raw.get(node, ""), drain.OUT, _master(host)), timeout=TIMEOUT_S)
    if not result.ok or result.stdout.strip() != "OK":
        raise NodeStateError(f"{host.name}: cannot announce {node} out in {key}: {result.why()}")


def clear_state(host: Any, key: str, node: str) -> None:
    """Remove ``node``'s field (it counts as active): restores a node whatever its state, for
    tests and for an operator cleaning up after a rollout that is over."""
    _check_name("lb_node_state_key", key)
    _check_name("node", node)
    result = remote.run(host, clear_command(key, node, _master(host)), timeout=TIMEOUT_S)
    if not result.ok or result.stdout.strip() != "OK":
        raise NodeStateError(f"{host.name}: cannot clear {node} in {key}: {result.why()}")


def settle_seconds(lb_host: Any) -> float:
    """Seconds to wait after a write before every LB worker routes by it, from an LB host's
    ``lb_node_state_cache_ms`` (the loadbalancer layer's setting)."""
    from ooha.layers.loadbalancer import node_state_settings

    return drain.settle_seconds(node_state_settings(lb_host)[1])


# --- moves shared by the DS rollout and host patching -----------------------------------------


def first(hosts: list[Any], action: Any) -> Any:
    """``action(host)`` on the first redis-group host where it succeeds (a data host that is
    down must not stop a drain); NodeStateError with the last cause when none does."""
    last: Exception | None = None
    for host in hosts:
        try:
            return action(host)
        except Exception as error:
            last = error
    raise NodeStateError(f"node states not reachable through any redis host ({last})")


def move_state(hosts: list[Any], key: str, node: str, wanted: str) -> bool:
    """Move ``node`` to ``wanted`` through allowed transitions (active -> out goes through
    draining); True when something was written (the caller then waits ``settle_seconds``)."""
    current = first(hosts, lambda host: read_states(host, key)).get(node, drain.ACTIVE)
    if current == wanted:
        return False
    path = [drain.DRAINING, drain.OUT] if (current, wanted) == (drain.ACTIVE, drain.OUT) else [wanted]
    for step in path:
        if not drain.transition_allowed(current, step):
            raise NodeStateError(f"{node}: node state {current} -> {step} is not allowed")
        first(hosts, lambda host: set_state(host, key, node, step))
        current = step
    return True


@dataclass(frozen=True)
class DrainEnd:
    """How a drain wait ended: every count 0 (``drained``), the bound, or an interruption."""

    drained: bool
    interrupted: bool
    left: dict[str, int | None]
    elapsed: float


def wait_drained(count: Callable[[], dict[str, int | None]], bound_s: float, wait: Callable[[float], None],
                 say: Callable[[str], None], interrupted: Callable[[], bool], every_s: float = 10.0) -> DrainEnd:
    """Poll ``count()`` (open editing sessions per draining node, None: unknown) once a second
    until all are a known 0, ``bound_s`` passed (ds_drain_seconds: the caller then cuts what is
    left), or ``interrupted()``; progress through ``say`` every ``every_s``."""
    start = time.time()
    last_print = 0.0
    while True:
        left = count()
        elapsed = time.time() - start
        if sum(v or 0 for v in left.values()) == 0 and all(v is not None for v in left.values()):
            return DrainEnd(True, False, left, elapsed)
        if elapsed >= bound_s or interrupted():
            return DrainEnd(False, interrupted(), left, elapsed)
        if time.time() - last_print >= every_s:
            say(f"{sum(v or 0 for v in left.values())} session(s) left, {elapsed:.0f} s of {bound_s:.0f}")
            last_print = time.time()
        wait(1)
