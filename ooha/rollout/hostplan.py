"""The order of a host-patching run (issue 12): which host when, and what happens around it.

Why pure: the order and the steps around each host are what makes ``apt upgrade && reboot``
safe or a failover, and they must be right on a resumed run at 3 a.m.; they are functions over
plain observations here, tested without a lab.  The driver (not yet written) observes the hosts
(Patroni REST, SENTINEL get-master-addr-by-name, keepalived state, ``apt-get -s upgrade``,
``/run/reboot-required``, ``needrestart -b``: parsed by ``ooha.rollout.hostgates``), calls
``plan_hosts``, and before EACH host calls ``host_wave`` again with a fresh look, because a
previous host's failover may have moved a primary role (the plan's order stands; the steps of a
host are decided from what is true when its turn comes).

**One host at a time**, always: a host going down takes every role it holds with it (in the
reference topology a data host is a Patroni member, an etcd member, a Redis and a RabbitMQ node
at once), so a second host down could be a second member of the same quorum.  With one at a time
and ``etcd_may_stop`` refusing a host while another member is unhealthy, etcd never has two
members down.

**Tier order** (``Tier``), ascending risk, so that each riskier host is patched only after the
same packages proved themselves on cheaper hosts, and every role that must move moves ONCE,
onto a host that is already patched:

1. ``LB_STANDBY``: the load balancers NOT holding the floating address.  The canary: it carries
   no traffic and no state (keepalived BACKUP), its peer serves everything, so a package update
   that breaks boot, sshd, nginx or keepalived costs nothing and stops the run before any host
   that matters.  (Its ``lb_backup_state`` check proves it can take the address again.)
2. ``DS``: the Document Server hosts, drained exactly like the DS rollout (``ds_drain``: the node
   states of ``ooha.rollout.drain``), fewest open editing sessions first.  Stateless behind the
   drain and each one redundant: they prove the common base set (libc, openssl, systemd, docker)
   under real traffic before the data tier is touched.
3. ``DATA``: hosts in postgres/etcd/redis/rabbitmq, those holding no primary role first, then
   the synchronous standby, then the Redis primary's host, the Patroni leader LAST (autobase's
   order: replicas first, then switch over and patch the old leader).  Why last: its switchover
   target (the sync standby) and any Sentinel failover target are then already patched, so the
   primary roles move once and never back onto a host that still has to go down.
4. ``LB_VIP``: the load balancer holding the floating address, last: ``vip_move`` hands the
   address on purpose to its (patched, checked) peer; keepalived runs ``nopreempt``, so the
   address stays there when this host returns (one move, not two).

A host in several groups takes the riskiest tier of its roles (DATA > LB_VIP > DS > LB_STANDBY:
a co-located DS/LB host holding the VIP goes last) and the union of their steps.

**Steps** are data (``Step``: name, CHECK or ACTION, why), run in order by the driver:
``pre`` (checks before anything changes, then the moves that take traffic and primary roles
away, least disruptive first), then ``apt_upgrade`` and ``reboot`` (``reboot_mode``), then
``post`` (undo the temporary changes, then the checks that the host is back in every role)
before the next host starts.  Pre-steps run even when the host will not reboot: a package's
postinst restarts its daemon (``invoke-rc.d ... restart``), so every planned host is treated as
going down.  Each step is idempotent when re-entered from its start (a switchover to the sync
standby when this host is no longer leader is a no-op the driver skips after a fresh look), so a
resumed run re-runs the journal's current step, as the DS rollout re-runs its current phase.

**Skips**: a host with no pending update (after the ``patch_packages`` filter) and no reboot
needed is not planned, so a second run after a finished one plans nothing (idempotent).
``patch_reboot=never`` also skips a host whose only reason was a needed reboot; ``always`` does
not add hosts with nothing to do (it reboots every host the run patches).

An observation that could not be made (None) where the order or the steps depend on it is a
``Problem`` in the plan, never a guess: the driver refuses the run.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Mapping

from ooha.rollout.drain import ACTIVE, DRAINING, OUT, transition_allowed
from ooha.rollout.gates import EtcdMember, GateResult, PatroniMember, Problem

DATA_GROUPS = ("postgres", "etcd", "redis", "rabbitmq")
KNOWN_GROUPS = frozenset({"lb", "docs", *DATA_GROUPS})

CHECK, ACTION = "check", "action"

REBOOT_MODES = ("auto", "always", "never")
REBOOT_YES, REBOOT_NO, REBOOT_DECIDE = "yes", "no", "after-upgrade"
"""``HostWave.reboot``: reboot for sure, never, or decided after the upgrade by
``hostgates.reboot_decision`` (``auto``: /run/reboot-required or needrestart appear only then)."""


class Tier(IntEnum):
    LB_STANDBY = 0
    DS = 1
    DATA = 2
    LB_VIP = 3


@dataclass(frozen=True)
class HostView:
    """What the planner needs to know of one host (None: could not be observed).

    ``pending``: upgradable packages after the ``patch_packages`` filter
    (``hostgates.select_packages``); ``reboot_needed``: the host needs a reboot already, before
    this run upgrades anything (``hostgates.reboot_decision`` with ``auto``).
    ``patroni_role``: ``leader`` | ``sync_standby`` | ``replica`` (postgres hosts);
    ``sessions``: open editing sessions of its DS node (docs hosts; orders that tier).
    """

    name: str
    az: str
    groups: frozenset[str]
    holds_vip: bool | None = False
    patroni_role: str | None = None
    redis_primary: bool | None = False
    pending: int | None = 0
    reboot_needed: bool | None = False
    sessions: int | None = None


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # CHECK | ACTION
    why: str


@dataclass(frozen=True)
class HostWave:
    """One host's turn: its tier, the steps before, whether to upgrade and reboot, the steps after."""

    host: str
    tier: Tier
    pre: tuple[Step, ...]
    upgrade: bool
    reboot: str  # REBOOT_YES | REBOOT_NO | REBOOT_DECIDE
    post: tuple[Step, ...]

    def sequence(self) -> tuple[str, ...]:
        """Every step name in the order the driver runs them (the journal's position in a host's
        turn is an index into this; resuming re-runs that step)."""
        middle = (("apt_upgrade",) if self.upgrade else ()) + (("reboot",) if self.reboot != REBOOT_NO else ())
        return tuple(s.name for s in self.pre) + middle + tuple(s.name for s in self.post)


@dataclass(frozen=True)
class HostPlan:
    """Hosts in order (one per wave), those left out with why, and what prevented a plan."""

    waves: tuple[HostWave, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.waves

    def hosts(self) -> list[str]:
        return [w.host for w in self.waves]

    def journal_waves(self) -> list[list[str]]:
        """The waves as the journal stores them: one host each."""
        return [[w.host] for w in self.waves]


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchOptions:
    """``patch_packages`` (empty: every upgradable package) and ``patch_reboot``."""

    packages: tuple[str, ...] = ()
    reboot: str = "auto"


_PACKAGE_PATTERN = re.compile(r"^[a-z0-9*?\[][a-z0-9+.\-*?\[\]]*(:[a-z0-9*?]+)?$")


def _package_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def patch_option_problems(data: Mapping[str, Any]) -> list[str]:
    """One ``KEY: value: problem; fix: ...`` line per bad patch key (the preflight's format)."""
    problems: list[str] = []
    raw = data.get("patch_packages")
    if raw is not None and not isinstance(raw, (str, list, tuple)):
        problems.append(f"patch_packages: {raw!r}: is not a list of package names; "
                        "fix: --data patch_packages=openssl,libssl3 (names or globs, comma-separated)")
    else:
        for name in _package_list(raw):
            if not _PACKAGE_PATTERN.match(name):
                problems.append(f"patch_packages: {name!r}: is not a Debian package name or glob; "
                                "fix: lower-case names like libssl3, globs like 'linux-image-*', optional ':arch'")
    mode = data.get("patch_reboot")
    if mode is not None and mode not in REBOOT_MODES:
        problems.append(f"patch_reboot: {mode!r}: is not one of {', '.join(REBOOT_MODES)}; "
                        "fix: --data patch_reboot=auto (default: reboot when the system says so)")
    return problems


def patch_options(data: Mapping[str, Any]) -> PatchOptions:
    """The validated options of ``data`` (a dict or pyinfra HostData); ValueError when invalid."""
    problems = patch_option_problems(data)
    if problems:
        raise ValueError("; ".join(problems))
    return PatchOptions(packages=_package_list(data.get("patch_packages")), reboot=data.get("patch_reboot") or "auto")


def package_selected(name: str, patterns: tuple[str, ...]) -> bool:
    """Does ``patch_packages`` select package ``name`` (``name`` may carry ``:arch``)?  Empty
    selects everything; a pattern without ``:arch`` matches every architecture of the name."""
    if not patterns:
        return True
    base = name.split(":", 1)[0]
    return any(fnmatch.fnmatchcase(name if ":" in p else base, p) for p in patterns)


def reboot_mode(view: HostView, mode: str) -> str:
    """REBOOT_YES/NO/DECIDE for a planned host: ``always`` yes, ``never`` no, ``auto`` yes when a
    reboot is already needed, else decided after the upgrade (a new kernel or libc says so only
    once installed)."""
    if mode not in REBOOT_MODES:
        raise ValueError(f"patch_reboot must be one of {', '.join(REBOOT_MODES)}")
    if mode == "always":
        return REBOOT_YES
    if mode == "never":
        return REBOOT_NO
    return REBOOT_YES if view.reboot_needed else REBOOT_DECIDE


# --- tiers and steps ------------------------------------------------------------------------


def is_data_host(view: HostView) -> bool:
    return bool(view.groups & set(DATA_GROUPS))


def tier_of(view: HostView) -> Tier:
    """The riskiest tier of the host's roles (an unknown VIP holder counts as holder: last)."""
    if is_data_host(view):
        return Tier.DATA
    if "lb" in view.groups and view.holds_vip is not False:
        return Tier.LB_VIP
    if "docs" in view.groups:
        return Tier.DS
    return Tier.LB_STANDBY


DS_DRAIN_TRANSITIONS = ((ACTIVE, DRAINING), (DRAINING, OUT))
DS_RETURN_TRANSITIONS = ((OUT, ACTIVE),)
assert all(transition_allowed(a, b) for a, b in DS_DRAIN_TRANSITIONS + DS_RETURN_TRANSITIONS)


def pre_steps(view: HostView) -> tuple[Step, ...]:
    """Before the host changes: checks first (nothing moved yet if one fails), then the moves,
    least disruptive first, so a failing cheap move has not yet cost a PostgreSQL write pause."""
    g = view.groups
    steps: list[Step] = []
    if "etcd" in g:
        steps.append(Step("etcd_others_healthy", CHECK,
                          "every OTHER etcd member healthy (etcd_may_stop): with this one down the rest keep quorum, "
                          "never two members down"))
    if "postgres" in g:
        steps.append(Step("patroni_others_streaming", CHECK,
                          "a leader elsewhere or a sync standby to switch over to, lag under rollout_max_sync_lag_bytes"))
    if "rabbitmq" in g:
        steps.append(Step("rabbitmq_sync_queues", ACTION,
                          "every mirrored queue with a master or mirror here fully synchronised elsewhere "
                          "(rabbitmqctl sync_queue for the others), so stopping this node loses no message"))
    if "lb" in g and view.holds_vip:
        steps.append(Step("vip_move", ACTION,
                          "hand the floating address to the other (already patched) LB on purpose and see it there; "
                          "nopreempt keeps it there when this host returns"))
    if "docs" in g:
        steps.append(Step("ds_drain", ACTION,
                          f"node state {ACTIVE} -> {DRAINING} until 0 editing sessions or ds_drain_seconds, then {OUT}: "
                          "the DS rollout's drain, no request reaches the node while it is down"))
    if "redis" in g and view.redis_primary:
        steps.append(Step("sentinel_failover", ACTION,
                          "SENTINEL FAILOVER, wait until every Sentinel names another primary: the host's Redis "
                          "must not be the primary when it stops"))
    if "postgres" in g and view.patroni_role in ("leader", "sync_standby"):
        steps.append(Step("patroni_nosync", ACTION,
                          "tag the member nosync and wait until another member is sync standby: with synchronous_mode, "
                          "commits would wait for a stopped sync standby until Patroni's next loop"))
    if "postgres" in g and view.patroni_role == "leader":
        steps.append(Step("patroni_switchover_to_sync_standby", ACTION,
                          "planned switchover to the synchronous standby (no acknowledged commit lost, pause of one "
                          "switchover); a failover by stopping the leader would wait for the leader key's TTL"))
    return tuple(steps)


def post_steps(view: HostView) -> tuple[Step, ...]:
    """After the host returns: it is up, has what it was to install, then undoes the temporary
    changes of ``pre_steps`` and shows it is back in every role before the next host starts."""
    g = view.groups
    steps = [Step("host_up", CHECK, "SSH answers, a new boot id after a reboot, no failed systemd unit"),
             Step("no_pending_left", CHECK, "apt shows no upgradable package of the selection: the upgrade took")]
    if "etcd" in g:
        steps.append(Step("etcd_member_healthy", CHECK, "this member healthy and the cluster has every member healthy"))
    if "postgres" in g:
        if view.patroni_role in ("leader", "sync_standby"):
            steps.append(Step("patroni_clear_nosync", ACTION, "remove the nosync tag: the member may be sync standby again"))
        steps.append(Step("rejoined_replica_lag_under_bound", CHECK,
                          "the member streams as replica with lag under rollout_max_sync_lag_bytes, "
                          "and a sync standby exists"))
    if "redis" in g:
        steps.append(Step("sentinel_sees_replica", CHECK,
                          "every Sentinel lists this Redis as a replica with its link up, all name the same primary"))
    if "rabbitmq" in g:
        steps.append(Step("rabbitmq_running", CHECK,
                          "the node is running in the cluster, no partition, no alarm, its mirrors synchronised"))
    if "docs" in g:
        steps.append(Step("ds_healthy", CHECK, "container running the same image, /healthcheck true"))
        steps.append(Step("ds_return", ACTION, f"node state {OUT} -> {ACTIVE}: back in the load balancers' table"))
    if "lb" in g:
        steps.append(Step("lb_backup_state", CHECK,
                          "nginx answers, keepalived in BACKUP (or MASTER if the peer lost the address), "
                          "the floating address on exactly one LB"))
    return tuple(steps)


def host_wave(view: HostView, options: PatchOptions) -> HostWave:
    """One host's turn from a (fresh) observation."""
    return HostWave(host=view.name, tier=tier_of(view), pre=pre_steps(view), upgrade=bool(view.pending),
                    reboot=reboot_mode(view, options.reboot), post=post_steps(view))


def skip_reason(view: HostView, options: PatchOptions) -> str | None:
    """Why the host is not planned (None: it is)."""
    if view.pending is None or view.reboot_needed is None:
        return None
    if view.pending == 0 and not view.reboot_needed:
        return "no pending update" + (" of patch_packages" if options.packages else "") + ", no reboot needed"
    if view.pending == 0 and options.reboot == "never":
        return "reboot needed but patch_reboot=never (the report keeps saying so)"
    return None


def _observation_problems(view: HostView) -> list[Problem]:
    p: list[Problem] = []
    unknown = [g for g in view.groups if g not in KNOWN_GROUPS]
    if unknown:
        p.append(Problem(view.name, "host-plan", f"unknown group(s) {', '.join(sorted(unknown))}",
                         "host patching knows lb, docs, postgres, etcd, redis, rabbitmq"))
    if view.pending is None:
        p.append(Problem(view.name, "host-plan", "pending updates unknown (apt could not be read)",
                         "run apt-get update on the host and read its output (apt sources gate)"))
    if view.reboot_needed is None:
        p.append(Problem(view.name, "host-plan", "whether a reboot is needed is unknown",
                         "check /run/reboot-required and needrestart -b on the host"))
    if "lb" in view.groups and view.holds_vip is None:
        p.append(Problem(view.name, "host-plan", "whether it holds the floating address is unknown",
                         "check keepalived and `ip -br addr` on the load balancers"))
    if "postgres" in view.groups and view.patroni_role not in ("leader", "sync_standby", "replica"):
        p.append(Problem(view.name, "host-plan", f"Patroni role {view.patroni_role!r} (want leader, sync_standby or replica)",
                         "repair the member first (patronictl list)"))
    if "redis" in view.groups and view.redis_primary is None:
        p.append(Problem(view.name, "host-plan", "whether its Redis is the Sentinels' primary is unknown",
                         "check SENTINEL get-master-addr-by-name on the data hosts"))
    return p


def _data_weight(view: HostView) -> int:
    """Primary roles the host holds: none first, the sync standby, the Redis primary, the leader last."""
    return 4 * (view.patroni_role == "leader") + 2 * bool(view.redis_primary) + (view.patroni_role == "sync_standby")


def plan_hosts(views: list[HostView], options: PatchOptions) -> HostPlan:
    """The host waves in tier order (module docstring), one host each.

    Within a tier: LBs in inventory order (the order of ``views``); DS hosts in ascending open
    sessions (unknown counts as 0; ties: inventory order); data hosts by ``_data_weight``.
    Problems (unknown observations, no or two VIP holders, two Patroni leaders or two Redis
    primaries) give an empty plan with the problems: the driver refuses.
    """
    index = {v.name: i for i, v in enumerate(views)}
    if len(index) != len(views):
        raise ValueError("host names must be unique")
    problems = [p for v in views for p in _observation_problems(v)]
    lbs = [v for v in views if "lb" in v.groups]
    holders = [v.name for v in lbs if v.holds_vip]
    if lbs and len(holders) != 1 and all(v.holds_vip is not None for v in lbs):
        problems.append(Problem("lb", "host-plan", f"{len(holders)} LB(s) hold the floating address ({', '.join(holders) or 'none'}), want 1",
                                "repair keepalived first (validation report: loadbalancer line)"))
    leaders = [v.name for v in views if "postgres" in v.groups and v.patroni_role == "leader"]
    if any("postgres" in v.groups for v in views) and len(leaders) != 1:
        problems.append(Problem("postgres", "host-plan", f"{len(leaders)} Patroni leader(s) ({', '.join(leaders) or 'none'}), want 1",
                                "wait for Patroni to settle (patronictl list)"))
    primaries = [v.name for v in views if "redis" in v.groups and v.redis_primary]
    if len(primaries) > 1:
        problems.append(Problem("redis", "host-plan", f"{len(primaries)} hosts hold the Redis primary ({', '.join(primaries)})",
                                "wait for Sentinel to settle (SENTINEL get-master-addr-by-name onlyoffice)"))
    if problems:
        return HostPlan(waves=(), problems=tuple(problems))

    skipped = {v.name: reason for v in views if (reason := skip_reason(v, options))}
    todo = [v for v in views if v.name not in skipped]

    def order(v: HostView) -> tuple[int, int, int]:
        tier = tier_of(v)
        if tier is Tier.DS:
            within = v.sessions or 0
        elif tier is Tier.DATA:
            within = _data_weight(v)
        else:
            within = 0
        return (int(tier), within, index[v.name])

    waves = tuple(host_wave(v, options) for v in sorted(todo, key=order))
    return HostPlan(waves=waves, skipped=skipped)


# --- invariants the driver checks right before a host goes down -----------------------------


def etcd_may_stop(host: str, members: tuple[EtcdMember, ...] | None) -> GateResult:
    """May etcd member ``host`` stop now?  Only if every OTHER member is healthy: then the rest
    keep a strict majority, and two members are never down at once (an unknown view refuses)."""
    if not members:
        return GateResult("etcd-may-stop", (Problem(host, "etcd", "etcd member health unknown",
                                                     "check etcdctl endpoint health on a data host"),))
    others = [m for m in members if m.name != host]
    down = [m.name for m in others if not m.healthy]
    if down:
        return GateResult("etcd-may-stop", (Problem(host, "etcd", f"other member(s) not healthy: {', '.join(down)}; "
                                                     "stopping this one would leave two down",
                                                     "restore the other member(s) first, then rerun (the run resumes here)"),))
    if len(others) * 2 <= len(members):
        return GateResult("etcd-may-stop", (Problem(host, "etcd", f"{len(others)} other member(s) of {len(members)} "
                                                     "would not be a majority", "add members before patching"),))
    return GateResult("etcd-may-stop", (), f"{len(others)}/{len(members)} stay healthy")


def switchover_candidate(members: tuple[PatroniMember, ...] | None, leader: str, max_lag: int) -> str | None:
    """The member a switchover away from ``leader`` goes to: a streaming synchronous standby with
    a known lag under ``max_lag`` (Patroni in synchronous_mode accepts only a sync standby as
    candidate, and only it has every acknowledged commit).  None: no safe target; refuse."""
    for m in members or ():
        if (m.name != leader and m.role == "sync_standby" and m.state == "streaming"
                and m.lag_bytes is not None and m.lag_bytes <= max_lag):
            return m.name
    return None
