"""Gate verdicts over plain observations: may the rollout start, go on, or must it undo?

Why pure: the thresholds and the words of a refusal are the part operators argue about; they
are tested here against hand-made observations, and the I/O layer only fills the dataclasses
from facts (Patroni REST, etcdctl, SENTINEL get-master-addr-by-name, rabbitmq-diagnostics,
pgbackrest info, docker inspect, /healthcheck, connections/edit, the LBs' access logs).
Every problem is one line ``WHERE: GATE: WHAT; fix: FIX`` like the preflight's, all at once.
An observation that could not be made (None) is a refusal, never a pass: a gate that cannot
see must not say yes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ooha.rollout.plan import NodeView
from ooha.rollout.release import ImageRef


@dataclass(frozen=True)
class Problem:
    where: str
    gate: str
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.where}: {self.gate}: {self.what}; fix: {self.fix}"


@dataclass(frozen=True)
class GateResult:
    gate: str
    problems: tuple[Problem, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [p.line() for p in self.problems] or [f"{self.gate}: OK {self.detail}".rstrip()]


def _result(gate: str, problems: list[Problem], detail: str = "") -> GateResult:
    return GateResult(gate, tuple(problems), detail)


# --- observations --------------------------------------------------------------------------


@dataclass(frozen=True)
class PatroniMember:
    name: str
    role: str  # "leader" | "sync_standby" | "replica"
    state: str  # "running" | "streaming" | ...
    lag_bytes: int | None = None


@dataclass(frozen=True)
class EtcdMember:
    name: str
    healthy: bool


@dataclass(frozen=True)
class RabbitView:
    expected: tuple[str, ...]
    running: tuple[str, ...]
    partitions: tuple[str, ...] = ()
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterView:
    """One look at the data tier (None fields: could not be observed)."""

    patroni: tuple[PatroniMember, ...] | None
    etcd: tuple[EtcdMember, ...] | None
    sentinels: dict[str, str | None] | None  # sentinel host -> "addr:port" of the primary it names
    rabbitmq: RabbitView | None
    newest_backup_end: float | None  # epoch seconds of the newest PostgreSQL backup's end


@dataclass(frozen=True)
class Limits:
    """Thresholds (data keys ``rollout_*``, defaults in the driver; chosen in the lab, see the note)."""

    max_sync_lag_bytes: int = 16 * 1024 * 1024
    max_backup_age_s: float = 26 * 3600
    node_capacity_sessions: int = 500
    capacity_headroom: float = 0.2
    max_upstream_error_rate: float = 0.01
    min_soak_samples: int = 3


# --- preflight ------------------------------------------------------------------------------


def ds_nodes_gate(nodes: list[NodeView], in_flight: frozenset[str] = frozenset()) -> GateResult:
    """Every DS node healthy, its sessions countable, and active in the LBs (except ``in_flight``,
    the nodes of a resumed wave, which may be draining, out, or mid-replace)."""
    problems: list[Problem] = []
    for node in nodes:
        if node.name in in_flight:
            continue
        if not node.healthy:
            problems.append(Problem(node.name, "preflight", "Document Server not healthy (/healthcheck is not true)",
                                    "repair it first (validation report: documentserver line)"))
        if node.sessions is None:
            problems.append(Problem(node.name, "preflight", "open editing sessions unknown (connections/edit did not answer)",
                                    "check the container answers GET /internal/connections/edit"))
        if node.lb_state != "active":
            problems.append(Problem(node.name, "preflight", f"node is '{node.lb_state}' in the load balancers outside a rollout",
                                    "return it with the rollout that drained it, or set it active"))
    return _result("ds-nodes", problems, f"{len(nodes)} node(s) healthy")


def patroni_gate(members: tuple[PatroniMember, ...] | None, max_lag: int) -> GateResult:
    """One leader and at least one synchronous standby streaming with lag <= ``max_lag``: a DS
    node's table reset must be acknowledged by two copies, and a failover mid-rollout must not lose it."""
    if members is None:
        return _result("patroni", [Problem("postgres", "preflight", "Patroni cluster state unknown", "check Patroni REST on the data hosts")])
    problems: list[Problem] = []
    leaders = [m for m in members if m.role == "leader" and m.state == "running"]
    if len(leaders) != 1:
        problems.append(Problem("postgres", "preflight", f"{len(leaders)} running leader(s), want 1", "wait for Patroni to elect one (patronictl list)"))
    syncs = [m for m in members if m.role == "sync_standby" and m.state == "streaming"]
    if not syncs:
        problems.append(Problem("postgres", "preflight", "no synchronous standby streaming", "repair a replica (patronictl list) before a rollout"))
    for m in syncs:
        if m.lag_bytes is None or m.lag_bytes > max_lag:
            shown = "unknown" if m.lag_bytes is None else f"{m.lag_bytes} B"
            problems.append(Problem(m.name, "preflight", f"sync standby lag {shown} above {max_lag} B",
                                    "wait until it catches up (long transactions? network?)"))
    return _result("patroni", problems, f"leader {leaders[0].name}" if len(leaders) == 1 else "")


def etcd_gate(members: tuple[EtcdMember, ...] | None) -> GateResult:
    """A strict majority of etcd members healthy: etcd is Patroni's DCS, and without its quorum a
    PostgreSQL failover during the rollout could not happen (one member down of three passes:
    the DS rollout does not touch etcd)."""
    if not members:
        return _result("etcd", [Problem("etcd", "preflight", "etcd member health unknown", "check etcdctl endpoint health on a data host")])
    healthy = [m for m in members if m.healthy]
    if len(healthy) * 2 <= len(members):
        down = ", ".join(m.name for m in members if not m.healthy)
        return _result("etcd", [Problem("etcd", "preflight", f"no quorum: {len(healthy)}/{len(members)} healthy (down: {down})",
                                        "restore the etcd quorum first")])
    return _result("etcd", [], f"{len(healthy)}/{len(members)} healthy")


def sentinel_gate(sentinels: dict[str, str | None] | None) -> GateResult:
    """Every Sentinel names the same primary: the DS nodes' editor state and the shard table live there."""
    if not sentinels:
        return _result("sentinel", [Problem("redis", "preflight", "Sentinel views unknown", "check redis-sentinel on the data hosts")])
    named = {v for v in sentinels.values() if v}
    blind = sorted(h for h, v in sentinels.items() if not v)
    problems = [Problem(h, "preflight", "Sentinel names no primary", "check redis-sentinel there") for h in blind]
    if len(named) > 1:
        problems.append(Problem("redis", "preflight", f"Sentinels disagree on the primary: {', '.join(sorted(named))}",
                                "wait for the failover to settle (SENTINEL get-master-addr-by-name onlyoffice)"))
    return _result("sentinel", problems, f"primary {next(iter(named))}" if len(named) == 1 else "")


def rabbitmq_gate(view: RabbitView | None) -> GateResult:
    """All expected nodes running, no partition, no alarm: a replaced node must find its vhost."""
    if view is None:
        return _result("rabbitmq", [Problem("rabbitmq", "preflight", "cluster status unknown", "check rabbitmq-diagnostics on the data hosts")])
    problems: list[Problem] = []
    missing = sorted(set(view.expected) - set(view.running))
    if missing:
        problems.append(Problem("rabbitmq", "preflight", f"not running: {', '.join(missing)}", "start them / rerun the main job"))
    if view.partitions:
        problems.append(Problem("rabbitmq", "preflight", f"partitions: {', '.join(view.partitions)}", "heal the partition first"))
    if view.alarms:
        problems.append(Problem("rabbitmq", "preflight", f"alarms: {', '.join(view.alarms)}", "free memory/disk on the named nodes"))
    return _result("rabbitmq", problems, f"{len(view.running)} running")


def backup_gate(newest_end: float | None, now: float, max_age: float) -> GateResult:
    """The newest PostgreSQL backup is younger than ``max_age``: a rollout is a change; have a way back."""
    if newest_end is None:
        return _result("backup", [Problem("postgres", "preflight", "no PostgreSQL backup found", "run deploys/backup.py first")])
    age = now - newest_end
    if age > max_age:
        return _result("backup", [Problem("postgres", "preflight", f"newest backup is {age / 3600:.1f} h old (limit {max_age / 3600:.1f} h)",
                                          "run deploys/backup.py --data backup_type=diff")])
    return _result("backup", [], f"newest {age / 3600:.1f} h old")


def capacity_gate(nodes: list[NodeView], wave: tuple[str, ...] | list[str], capacity: int, headroom: float) -> GateResult:
    """The nodes that stay up can carry the sessions of ``wave`` within ``capacity * (1 - headroom)`` each.

    Why: draining moves new documents (and, after the bound, reopened ones) to the others; if
    they cannot carry them the rollout itself causes the outage it was meant to avoid.
    Counted: every session of the remaining active nodes plus every session of the wave.
    """
    if not 0 <= headroom < 1:
        raise ValueError("headroom must be in [0, 1)")
    wave_set = set(wave)
    staying = [n for n in nodes if n.name not in wave_set and n.lb_state == "active" and n.healthy]
    if not staying:
        return _result("capacity", [Problem(",".join(wave), "capacity", "no other active healthy node would serve documents",
                                            "a rollout needs at least two healthy DS nodes")])
    load = sum(n.sessions or 0 for n in nodes if n.name in wave_set) + sum(n.sessions or 0 for n in staying)
    limit = int(len(staying) * capacity * (1 - headroom))
    if load > limit:
        return _result("capacity", [Problem(",".join(wave), "capacity",
                                            f"{load} session(s) on {len(staying)} remaining node(s) exceed {limit} "
                                            f"({capacity} each, {headroom:.0%} headroom)",
                                            "patch at a quieter time, add a node, or raise rollout_node_capacity if it is too low")])
    return _result("capacity", [], f"{load}/{limit} session(s)")


def preflight(nodes: list[NodeView], cluster: ClusterView, waves: list[list[str]] | tuple[tuple[str, ...], ...],
              limits: Limits, now: float, in_flight: frozenset[str] = frozenset()) -> list[GateResult]:
    """Every preflight gate (capacity checked for every wave of the plan, with today's sessions)."""
    results = [
        ds_nodes_gate(nodes, in_flight),
        patroni_gate(cluster.patroni, limits.max_sync_lag_bytes),
        etcd_gate(cluster.etcd),
        sentinel_gate(cluster.sentinels),
        rabbitmq_gate(cluster.rabbitmq),
        backup_gate(cluster.newest_backup_end, now, limits.max_backup_age_s),
    ]
    results += [capacity_gate(nodes, tuple(w), limits.node_capacity_sessions, limits.capacity_headroom) for w in waves]
    return results


def problems_of(results: list[GateResult]) -> list[str]:
    return [p.line() for r in results for p in r.problems]


# --- compat, health, soak --------------------------------------------------------------------


@dataclass(frozen=True)
class CompatObservation:
    """What the throwaway container on scratch database/vhost/prefix showed (None: not observed)."""

    healthcheck: str | None
    version: str | None
    websocket_opened: bool
    tables: tuple[str, ...]
    jwt_secret_from_env: bool
    leftovers: tuple[str, ...] = ()


REQUIRED_TABLES = ("doc_changes", "task_result")


def compat_gate(obs: CompatObservation, target: ImageRef, host: str) -> GateResult:
    """Mark the image deployable only if every check held AND every scratch object was removed."""
    p: list[Problem] = []
    where = f"{host} (scratch)"
    if obs.healthcheck != "true":
        p.append(Problem(where, "compat", f"/healthcheck answered {obs.healthcheck!r}, want 'true'", f"do not deploy {target}; check its logs"))
    if obs.version is None or not obs.version.startswith(target.version):
        p.append(Problem(where, "compat", f"version command answered {obs.version!r}, want {target.version} (with the cluster's JWT)",
                         "check the tag and that JWT_SECRET reaches the container"))
    if not obs.websocket_opened:
        p.append(Problem(where, "compat", "no editing session opened under /doc/", "check the image's socket.io endpoint"))
    missing = [t for t in REQUIRED_TABLES if t not in obs.tables]
    if missing:
        p.append(Problem(where, "compat", f"schema not created: missing {', '.join(missing)}", "the image's createdb.sql failed: see its logs"))
    if not obs.jwt_secret_from_env:
        p.append(Problem(where, "compat", "JWT secret not taken from the env (generated)", "the image's env contract changed: do not deploy"))
    if obs.leftovers:
        p.append(Problem(host, "compat", f"scratch objects left: {', '.join(obs.leftovers)}", "remove them by hand; rerun"))
    return _result("compat", p, str(target))


def health_gate(name: str, running: ImageRef | None, healthcheck: str | None, version: str | None, wanted: ImageRef) -> GateResult:
    """After a replace (or a revert): the node runs exactly ``wanted`` and says healthy."""
    p: list[Problem] = []
    if running is None or not running.satisfies(wanted):
        p.append(Problem(name, "health", f"runs {running}, want {wanted}", "see the replace wave's output"))
    if healthcheck != "true":
        p.append(Problem(name, "health", f"/healthcheck answered {healthcheck!r}", "see docker logs onlyoffice-documentserver"))
    if version is None or not version.startswith(wanted.version):
        p.append(Problem(name, "health", f"version answered {version!r}, want {wanted.version}", "see docker logs onlyoffice-documentserver"))
    return _result("health", p, str(wanted))


@dataclass(frozen=True)
class SoakSample:
    """One look during the soak: the node's health and, per LB, requests/errors to its upstream
    since the previous sample (from the access log's ``upstream=``/``ustatus=`` fields)."""

    at: float
    healthcheck: str | None
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def soak_gate(name: str, samples: list[SoakSample], synthetic_session_ok: bool | None, limits: Limits,
              lbs: tuple[str, ...]) -> GateResult:
    """The soak passed: enough samples, healthy in each, error rate under the bound at EVERY LB
    (each LB separately: the VIP holder carries the traffic, the other must be fine for a failover),
    and the synthetic editing session through the front door opened on this node."""
    p: list[Problem] = []
    if len(samples) < limits.min_soak_samples:
        p.append(Problem(name, "soak", f"{len(samples)} sample(s), want {limits.min_soak_samples}", "raise rollout_soak_seconds"))
    sick = [s for s in samples if s.healthcheck != "true"]
    if sick:
        p.append(Problem(name, "soak", f"/healthcheck not true in {len(sick)}/{len(samples)} sample(s)", "do not keep this image"))
    for lb in lbs:
        req = sum(s.requests.get(lb, 0) for s in samples)
        err = sum(s.errors.get(lb, 0) for s in samples)
        if req and err / req > limits.max_upstream_error_rate:
            p.append(Problem(lb, "soak", f"{err}/{req} upstream errors to {name} ({err / req:.1%} > {limits.max_upstream_error_rate:.1%})",
                             "see the LB's access log (ustatus)"))
    if synthetic_session_ok is not True:
        p.append(Problem(name, "soak", "synthetic editing session through the front door did not open on this node"
                                       if synthetic_session_ok is False else "synthetic editing session not run",
                         "see the front door and the node's logs"))
    return _result("soak", p, f"{len(samples)} sample(s)")
