"""Node states in the load balancers, and the routing rule the Lua must follow (its mirror).

Why a node state beside the shard table: draining means "no NEW document goes to this node, the
documents open on it stay there until their sessions end" and, after the bound, "nothing goes
to it".  The shard table (Redis ``<lb_shard_key_prefix><shard key>`` = node) cannot say that by
itself; a hash ``<lb_node_state_key>`` (default ``ooha:nodestate``; a key outside the shard
prefix, so no document key can collide) maps node -> state, absent = active.  Both LBs read the
same Redis, so a VRRP failover keeps the state.  The Lua (templates/loadbalancer/ooha_shard.lua.j2)
caches the hash per worker for ``lb_node_state_cache_ms`` (1000) and:

- first sight of a document: the first node of its rendezvous ranking that is ``active``
  (none active: the first ``draining`` one; all out: the plain ranking, for availability);
- an entry naming a ``draining`` node: kept (its editors' sockets are there);
- an entry naming an ``out`` node (or a node no longer in the inventory): re-pointed by
  compare-and-set to the first-sight node before the request is routed (no request reaches a
  node being replaced);
- retries (``candidate_order``): the table's node first, then the active nodes of the ranking
  (recently failed ones last), then the draining ones; never an ``out`` node unless every node
  is out;
- requests without a shard key (static files, /healthcheck): least_conn over every node while
  all are active; once a node is not, the Lua spreads them round-robin over the active nodes
  (``keyless_order``), draining ones only after them, out ones never (unless all are out);
- Redis unavailable: the states are unknown and every node counts as active (logged once per
  worker), the hash decides as before this table existed.

A writer (ooha/rollout/live/nodestate.py) must wait ``settle_seconds(cache_ms)`` after a write
before it assumes every LB worker routes by it.

``first_sight_node``, ``route_node``, ``candidate_order`` and ``keyless_order`` below are that
rule in Python; the lab test (tests/integration/test_drill_drain.py) runs the deployed Lua's
``M.first_sight``/``M.target``/``M.candidates``/``M.keyless`` against them.
"""

from __future__ import annotations

from ooha.layers.loadbalancer import LOADBALANCER_DEFAULTS, node_ranking

ACTIVE, DRAINING, OUT = "active", "draining", "out"
STATES = (ACTIVE, DRAINING, OUT)
DEFAULT_STATE_KEY: str = LOADBALANCER_DEFAULTS["lb_node_state_key"]


SETTLE_FACTOR = 2
"""A writer waits this many times ``lb_node_state_cache_ms``: a worker may have read the hash just
before the write and keeps it one cache period; the second period covers a request that started
under the old copy and a clock tick (``ngx.now`` is cached per event-loop turn)."""


def parse_states(raw: dict[str, str], nodes: list[str]) -> dict[str, str]:
    """HGETALL of the state hash -> a state for every node (absent = active; unknown value = active,
    as the Lua does, so a typo can never take a node out)."""
    return {n: state_of(raw, n) for n in nodes}


def state_of(states: dict[str, str], node: str) -> str:
    """One node's state as the Lua reads it: absent or an unknown value = active."""
    value = states.get(node, ACTIVE)
    return value if value in STATES else ACTIVE


def settle_seconds(cache_ms: int) -> float:
    """Seconds after a state write until every LB worker routes by it."""
    return SETTLE_FACTOR * cache_ms / 1000


def first_sight_node(nodes: list[str], key: str, states: dict[str, str]) -> str:
    """The node a NEW document goes to: the first active node of the key's ranking; none active:
    the first draining one (it still works); all out: the ranking's first (availability)."""
    ranking = node_ranking(nodes, key)
    for wanted in (ACTIVE, DRAINING):
        for name in ranking:
            if state_of(states, name) == wanted:
                return name
    return ranking[0]


def route_node(nodes: list[str], key: str, table_node: str | None, states: dict[str, str]) -> tuple[str, bool]:
    """(node to route to, whether the table entry must be re-pointed) for one keyed request."""
    if table_node is None or table_node not in nodes:
        return first_sight_node(nodes, key, states), table_node is not None
    if state_of(states, table_node) == OUT:
        target = first_sight_node(nodes, key, states)
        return target, target != table_node
    return table_node, False


def candidate_order(nodes: list[str], key: str, first: str, states: dict[str, str],
                    down: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The nodes one keyed request tries, in order (``M.candidates`` of the Lua).

    ``first`` (the table's node after ``route_node``) always first: editors may hold sockets
    there.  Then the other ACTIVE nodes in the key's ranking, those in ``down`` (failed within
    ``lb_fail_timeout``) last, then the DRAINING ones the same way: a retry never opens a
    document on a draining node while an active one answers.  OUT nodes never, unless
    ``first`` is out itself (every node is out) and there is nothing else to try.
    With every node active this is ``ooha.layers.loadbalancer.candidate_order``.
    """
    others = [n for n in node_ranking(nodes, key) if n != first]
    order = [first] + _tiers(others, states, down, (ACTIVE, DRAINING))
    if len(order) == 1 and state_of(states, first) == OUT:
        order += _tiers(others, states, down, (OUT,))
    return order


def keyless_order(nodes: list[str], states: dict[str, str], offset: int,
                  down: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The nodes a request WITHOUT a shard key tries while some node is not active (``M.keyless``).

    Such requests (static files, api.js, /healthcheck) hold no document, so they spread over the
    active nodes: round-robin, ``offset`` (a per-worker counter) rotating each group of the
    order (so every active node leads equally often), recently failed nodes last; draining
    nodes only after them; out nodes only when every node is out.  While every node is active
    the Lua leaves them to nginx's least_conn ``ds_all``.
    """
    return (_tiers(nodes, states, down, (ACTIVE, DRAINING), offset)
            or _tiers(nodes, states, down, (OUT,), offset))


def _tiers(names: list[str], states: dict[str, str], down: set[str] | frozenset[str],
           wanted: tuple[str, ...], offset: int = 0) -> list[str]:
    """``names`` grouped by state in the order of ``wanted``, each state's recently failed nodes
    after the others; each group keeps its order, rotated left by ``offset`` (the Lua's
    ``tiers`` builds the same list)."""
    order: list[str] = []
    for state in wanted:
        group = [n for n in names if state_of(states, n) == state]
        for part in ([n for n in group if n not in down], [n for n in group if n in down]):
            start = offset % len(part) if part else 0
            order += part[start:] + part[:start]
    return order


def transition_allowed(current: str, wanted: str) -> bool:
    """active -> draining -> out -> active, plus draining -> active (revert before replace)
    and a no-op to the same state (idempotent resume).  Never active -> out directly: that
    would cut every session without the drain."""
    allowed = {(ACTIVE, DRAINING), (DRAINING, OUT), (OUT, ACTIVE), (DRAINING, ACTIVE)}
    return current == wanted or (current, wanted) in allowed


def drain_finished(sessions: int | None, elapsed: float, bound: float) -> tuple[bool, str]:
    """Is the drain over?  (done, progress text).  Over when sessions reach 0 or the bound ended it;
    an unknown count is not 0 (wait, up to the bound)."""
    if sessions == 0:
        return True, f"drained in {elapsed:.0f} s"
    if elapsed >= bound:
        left = "an unknown number of" if sessions is None else str(sessions)
        return True, f"{left} editing session(s) still open after {bound:.0f} s (ds_drain_seconds): ended by the replace"
    return False, f"{'?' if sessions is None else sessions} session(s) left, {elapsed:.0f} s of {bound:.0f}"
