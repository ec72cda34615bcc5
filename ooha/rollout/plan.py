"""The order of a rollout: canary first, then one AZ at a time, never two AZs in one wave.

Why this order: the canary is the node whose replacement costs least if the new image is bad
(fewest open editing sessions, so fewest people wait for the drain and fewest sessions at risk);
after it, finishing one AZ before starting the next means that at any moment at most one AZ is
in a mixed or degraded state, so losing an AZ during a rollout never also loses the nodes being
replaced elsewhere.  A wave never spans two AZs for the same reason, and ``max_per_wave``
(default 1) bounds how much capacity is out at once; the capacity gate checks each wave.

Nodes already on the target (and active in the load balancers) are left out: a second run when
everything is on the target plans nothing, which is how the engine is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ooha.rollout.release import ImageRef


@dataclass(frozen=True)
class NodeView:
    """What the planner needs to know of one DS node (from facts, or from the ledger).

    ``sessions`` is ``GET /internal/connections/edit`` inside the container (None: unknown,
    which the preflight refuses before a plan is made); ``lb_state`` is the node's state in the
    load balancers' node table (``ooha.rollout.drain``).
    """

    name: str
    az: str
    running: ImageRef | None
    sessions: int | None = 0
    healthy: bool = True
    lb_state: str = "active"


@dataclass(frozen=True)
class Plan:
    """Waves in order (each a tuple of node names in one AZ) and the nodes left out, with why."""

    waves: tuple[tuple[str, ...], ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def canary(self) -> str | None:
        return self.waves[0][0] if self.waves else None

    @property
    def empty(self) -> bool:
        return not self.waves

    def nodes(self) -> list[str]:
        return [name for wave in self.waves for name in wave]


def needs_change(node: NodeView, target: ImageRef) -> bool:
    """True when the node must go through the phases: wrong image, or not back in the table."""
    if node.running is None or not node.running.satisfies(target):
        return True
    return node.lb_state != "active"


def _sessions(node: NodeView) -> int:
    return node.sessions if node.sessions is not None else 0


def plan_rollout(nodes: list[NodeView], target: ImageRef, max_per_wave: int = 1) -> Plan:
    """Waves for moving ``nodes`` to ``target``.

    1. the canary alone: the node to change with the fewest sessions (ties: inventory order,
       i.e. the order of ``nodes``);
    2. the rest of the canary's AZ, then the other AZs in ascending total sessions (ties: the
       order in which the AZ first appears in ``nodes``); within an AZ ascending sessions;
    3. waves of at most ``max_per_wave`` nodes, never two AZs in one wave.

    >>> r = ImageRef("ds", "2")
    >>> plan_rollout([NodeView("ds1", "az1", None, 5), NodeView("ds2", "az2", None, 1)], r).waves
    (('ds2',), ('ds1',))
    """
    if max_per_wave < 1:
        raise ValueError("max_per_wave must be at least 1")
    index = {node.name: i for i, node in enumerate(nodes)}
    if len(index) != len(nodes):
        raise ValueError("node names must be unique")
    todo = [node for node in nodes if needs_change(node, target)]
    skipped = {node.name: f"already on {target.version} and active" for node in nodes if node not in todo}
    if not todo:
        return Plan(waves=(), skipped=skipped)

    def by_load(node: NodeView) -> tuple[int, int]:
        return (_sessions(node), index[node.name])

    canary = min(todo, key=by_load)
    rest = [node for node in todo if node is not canary]
    az_first_seen: dict[str, int] = {}
    for node in nodes:
        az_first_seen.setdefault(node.az, index[node.name])
    az_load: dict[str, int] = {}
    for node in rest:
        az_load[node.az] = az_load.get(node.az, 0) + _sessions(node)
    az_order = sorted(az_load, key=lambda az: (az != canary.az, az_load[az], az_first_seen[az]))

    waves: list[tuple[str, ...]] = [(canary.name,)]
    for az in az_order:
        members = sorted((node for node in rest if node.az == az), key=by_load)
        for start in range(0, len(members), max_per_wave):
            waves.append(tuple(node.name for node in members[start:start + max_per_wave]))
    return Plan(waves=tuple(waves), skipped=skipped)


def azs_of_wave(wave: tuple[str, ...], nodes: list[NodeView]) -> set[str]:
    """The AZs a wave touches (the plan guarantees one; the driver re-checks a journal's plan)."""
    az = {node.name: node.az for node in nodes}
    return {az[name] for name in wave if name in az}
