"""Node states in the load balancers, and the routing rule the Lua must follow (its mirror).

Why a node state beside the shard table: draining means "no NEW document goes to this node, the
documents open on it stay there until their sessions end" and, after the bound, "nothing goes
to it".  The shard table (Redis ``<lb_shard_key_prefix><shard key>`` = node) cannot say that by
itself; a hash ``<lb_node_state_key>`` (default ``ooha:nodestate``; a key outside the shard
prefix, so no document key can collide) maps node -> state, absent = active.  Both LBs read the
same Redis, so a VRRP failover keeps the state.  The Lua (templates/loadbalancer/ooha_shard.lua.j2,
change still to make) caches the hash per worker for ``lb_node_state_cache_ms`` (1000) and:

- first sight of a document: the first node of its rendezvous ranking that is ``active``
  (all draining/out: the plain ranking, for availability);
- an entry naming a ``draining`` node: kept (its editors' sockets are there);
- an entry naming an ``out`` node: re-pointed by compare-and-set to the first active node of the
  ranking before the request is routed (no request reaches a node being replaced);
- Redis unavailable: as today, the hash decides (states unknown).

``first_sight_node`` and ``route_node`` below are that rule in Python; the Lua's tests compare
against them, as ``candidate_order`` mirrors ``M.candidates``.
"""

from __future__ import annotations

from ooha.layers.loadbalancer import node_ranking

ACTIVE, DRAINING, OUT = "active", "draining", "out"
STATES = (ACTIVE, DRAINING, OUT)
DEFAULT_STATE_KEY = "ooha:nodestate"


def parse_states(raw: dict[str, str], nodes: list[str]) -> dict[str, str]:
    """HGETALL of the state hash -> a state for every node (absent = active; unknown value = active,
    as the Lua does, so a typo can never take a node out)."""
    return {n: raw.get(n, ACTIVE) if raw.get(n, ACTIVE) in STATES else ACTIVE for n in nodes}


def first_sight_node(nodes: list[str], key: str, states: dict[str, str]) -> str:
    """The node a NEW document goes to: first active node of the key's ranking."""
    ranking = node_ranking(nodes, key)
    for name in ranking:
        if states.get(name, ACTIVE) == ACTIVE:
            return name
    return ranking[0]


def route_node(nodes: list[str], key: str, table_node: str | None, states: dict[str, str]) -> tuple[str, bool]:
    """(node to route to, whether the table entry must be re-pointed) for one keyed request."""
    if table_node is None or table_node not in nodes:
        return first_sight_node(nodes, key, states), table_node is not None
    if states.get(table_node, ACTIVE) == OUT:
        target = first_sight_node(nodes, key, states)
        return target, target != table_node
    return table_node, False


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
