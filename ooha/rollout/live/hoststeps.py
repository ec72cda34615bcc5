"""Host patching's I/O (issue 12): observe the hosts, run the preflight's host gates, run one step.

The order and the steps of a host's turn are the pure core's (``ooha.rollout.hostplan``); what
counts as "needs a reboot", "enough disk" or "needs a human" is ``ooha.rollout.hostgates``'s.
This module runs the commands on the hosts the pyinfra CLI already connected
(``remote.run``: sudo, a timeout, secrets on stdin), parses with those modules, and decides
with small pure functions below (unit-tested in tests/unit/test_hoststeps.py), so the remote
I/O of each step is a few lines: run, parse, decide, poll with ``env.wait``.

The interface the host driver (``hostdriver.py``) uses: :class:`StepEnv`,
:func:`observe_hosts`, :func:`host_gates`, :func:`run_step` (every step name of
``hostplan.pre_steps``/``post_steps`` plus ``apt_upgrade`` and ``reboot``) and :func:`undo`.  Every step is idempotent when re-entered from its start (a resumed run re-runs
the journal's current step): a move first looks whether it is already done.  ``env.memo`` (the
journal's per-host scratch) carries what a step must remember across an interruption: the boot
marker before a reboot, the reboot verdict, that keepalived was stopped on purpose, the DS
image before the drain.

The services are reached the way the main job deployed them: Patroni's REST API on
``patroni_rest_port`` and ``patronictl -c /etc/patroni/config.yml``; Redis and Sentinel through
the root-only ``ooha-redis-cli`` wrapper (the password from a root-only file into
``REDISCLI_AUTH``, never in argv); ``rabbitmqctl`` as root; keepalived/nginx by systemd.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ooha.contract import CONTRACT_DEFAULTS, peer_address
from ooha.facts.redis import CLI as REDIS_CLI
from ooha.facts.redis import parse_info
from ooha.layers.postgres import PATRONI_CONFIG
from ooha.rollout import drain, hostgates
from ooha.rollout.gates import EtcdMember, GateResult, PatroniMember, RabbitView
from ooha.rollout.hostgates import (AptSimulation, AptSizes, Filesystem, NeedRestart, RebootRequired,
                                    RebootVerdict)
from ooha.rollout.hostplan import (KNOWN_GROUPS, HostView, PatchOptions, etcd_may_stop, patch_options,
                                   switchover_candidate)
from ooha.rollout.live import nodestate, observe, remote
from ooha.rollout.options import RolloutOptions
from ooha.settings import setting

UPDATE_TIMEOUT_S = 300
"""``apt-get update`` through a slow proxy; more is a broken source (the gate says so)."""
UPGRADE_TIMEOUT_S = 1800
"""One host's ``apt-get install``: a kernel with its initramfs is minutes, not half an hour."""
POLL_S = 2.0
"""Between two looks of a polling step (through ``env.wait``: interruptible, heartbeating)."""
SWITCHOVER_TIMEOUT_S = 60
"""patronictl switchover's own wait for the new leader (a planned switchover takes seconds)."""
BOOT_MARKER = "systemctl show --value -p UserspaceTimestamp"
"""When this boot's PID 1 started: changes with every reboot, on a VM and on a lab host (the
kernel's boot_id does not change when a lab container reboots; lab/reboot.py)."""


@dataclass
class StepEnv:
    """What a step needs from the driver (see the module docstring and the contract)."""

    inventory: Any
    options: RolloutOptions
    patch: PatchOptions
    say: Callable[[str], None]
    wait: Callable[[float], None]
    memo: dict[str, Any] = field(default_factory=dict)

    def host(self, name: str) -> Any:
        return self.inventory.get_host(name)

    def group(self, name: str) -> list[Any]:
        return list(self.inventory.get_group(name, default=[]))

    def bound(self) -> float:
        """How long a step polls for a service to come back (the DS rollout's health bound)."""
        return float(self.options.rollout_health_timeout_seconds)


@dataclass(frozen=True)
class HostFacts:
    """One host's raw observations for the gates (None: the command did not answer)."""

    update_exit: int | None
    update_output: str | None
    simulation_output: str | None
    simulation: AptSimulation | None
    sizes: AptSizes | None
    root: Filesystem | None
    var: Filesystem | None
    audit: str | None
    held: tuple[str, ...]
    flag: RebootRequired | None
    needrestart: NeedRestart | None

    def pending(self, patterns: tuple[str, ...]) -> tuple[hostgates.PendingPackage, ...] | None:
        if self.simulation is None:
            return None
        return hostgates.select_packages(self.simulation.pending, patterns)


# --- commands (pure) ------------------------------------------------------------------------

SECTION = "----ooha-{}----"


def _section(name: str) -> str:
    return f"echo '{SECTION.format(name)}'; "


CUT = f"echo '{SECTION.format('cut')}'"


def reboot_sections() -> str:
    """The reboot flag (and the packages that asked) and ``needrestart -b``: what
    ``hostgates.reboot_decision`` reads (as the report's HostPatchState does)."""
    return (_section("reboot") + "if [ -e /run/reboot-required ]; then echo yes; cat /run/reboot-required.pkgs 2>/dev/null; "
            "else echo no; fi; " + _section("needrestart")
            + f"if command -v needrestart >/dev/null; then timeout 60 needrestart -b 2>/dev/null || {CUT}; fi; true")


def observe_command() -> str:
    """One round trip: apt-get update (and its exit code), the upgrade simulation, free space
    of / and /var, dpkg --audit, held packages, the reboot flag, needrestart -b.  LC_ALL=C: the
    parsers read apt's untranslated texts.  A tool cut short by its timeout prints ``cut``."""
    return (
        "export LC_ALL=C DEBIAN_FRONTEND=noninteractive; "
        + _section("update") + f"timeout {UPDATE_TIMEOUT_S} apt-get update 2>&1; echo \"update-exit $?\"; "
        + _section("simulate") + f"timeout 120 apt-get -s upgrade --with-new-pkgs 2>&1 || {CUT}; "
        + _section("df") + f"df -B1 --output=source,target,avail / /var 2>/dev/null || {CUT}; "
        + _section("audit") + f"timeout 60 dpkg --audit 2>&1; [ $? -le 1 ] || {CUT}; "
        + _section("held") + f"apt-mark showhold 2>/dev/null || {CUT}; "
        + reboot_sections()
    )


def split_sections(text: str) -> dict[str, list[str]]:
    """``observe_command``'s output -> {section: lines}; a section followed by ``cut`` is absent
    (its tool failed or timed out: unknown, never "nothing")."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.fullmatch(r"----ooha-(\w+)----", line.strip())
        if match and match[1] == "cut":
            if current is not None:
                sections.pop(current, None)
            current = None
        elif match:
            current = match[1]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def parse_df(lines: list[str]) -> dict[str, Filesystem]:
    """``df -B1 --output=source,target,avail / /var`` -> {"/": fs, "/var": fs} in argument order
    (df prints one row per argument, the filesystem holding it)."""
    rows = [line.split() for line in lines if line.strip() and not line.startswith("Filesystem")]
    rows = [r for r in rows if len(r) >= 3 and r[-1].isdigit()]
    if len(rows) != 2:
        return {}
    return {path: Filesystem(r[0], r[1], int(r[-1])) for path, r in zip(("/", "/var"), rows)}


def parse_observation(text: str) -> HostFacts:
    """``observe_command``'s output -> HostFacts (sizes filled later by ``sizes_command``)."""
    s = split_sections(text)
    update_exit: int | None = None
    update_output: str | None = None
    if "update" in s:
        body = s["update"]
        last = body[-1].strip() if body else ""
        if last.startswith("update-exit ") and last.split()[-1].isdigit():
            update_exit = int(last.split()[-1])
            update_output = "\n".join(body[:-1])
    simulation_output = "\n".join(s["simulate"]) if "simulate" in s else None
    fs = parse_df(s.get("df", []))
    flag_lines = s.get("reboot")
    flag = (hostgates.parse_reboot_required(flag_lines[0].strip() == "yes", "\n".join(flag_lines[1:]))
            if flag_lines else None)
    try:
        needrestart = hostgates.parse_needrestart("\n".join(s["needrestart"])) if "needrestart" in s else None
    except ValueError:
        needrestart = None
    return HostFacts(
        update_exit=update_exit, update_output=update_output, simulation_output=simulation_output,
        simulation=hostgates.parse_apt_simulation(simulation_output) if simulation_output is not None else None,
        sizes=None, root=fs.get("/"), var=fs.get("/var"),
        audit="\n".join(s["audit"]) if "audit" in s else None,
        held=tuple(line.strip() for line in s.get("held", []) if line.strip()),
        flag=flag, needrestart=needrestart,
    )


def _package_args(names: tuple[str, ...] | list[str]) -> str:
    return " ".join(remote.quote(n) for n in names)


def sizes_command(names: tuple[str, ...] | None) -> str:
    """apt's download/install sizes of the upgrade, changing nothing.  ``--print-uris``: apt
    prints its summary and then the URIs instead of installing; ``--assume-no`` answers a
    question if it asks one.  Why both: ``install --only-upgrade PKG`` of just the named
    packages asks NO question, so ``--assume-no`` alone installed the canary during the
    observation on the lab.  ``names``: the selected packages; None: the whole ``upgrade``."""
    what = "upgrade --with-new-pkgs" if names is None else f"install --only-upgrade {_package_args(names)}"
    return f"LC_ALL=C DEBIAN_FRONTEND=noninteractive timeout 120 apt-get --print-uris --assume-no {what} 2>&1; true"


def upgrade_command(names: tuple[str, ...] | None) -> str:
    """The upgrade itself: the selected packages (``install --only-upgrade``: never installs a
    package that is not there), or ``upgrade`` when patch_packages is empty.  The configuration
    files the main job manages stay ours (``--force-confold``); no question is ever asked."""
    what = "upgrade --with-new-pkgs" if names is None else f"install --only-upgrade {_package_args(names)}"
    # --with-new-pkgs: a Debian kernel security update is a NEW package (linux-image-6.1.0-NN) that
    # plain ``upgrade`` keeps back, leaving the host "up to date" on the old kernel; it never removes
    return ("export LC_ALL=C DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l; "
            f"apt-get -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef {what} 2>&1")


def upgrade_names(facts: HostFacts, patterns: tuple[str, ...]) -> tuple[str, ...] | None:
    """What ``upgrade_command``/``sizes_command`` get: None (all) without patch_packages, else
    the pending names the patterns select (may be empty: nothing to do)."""
    if not patterns:
        return None
    return tuple(p.name for p in facts.pending(patterns) or ())


def reboot_command() -> str:
    """Fire and forget: a transient timer runs ``systemctl reboot`` two seconds later, outside
    this SSH session, so the command returns cleanly before the connection dies."""
    return "systemd-run --quiet --no-block --on-active=2 --unit=ooha-patch-reboot /bin/systemctl reboot"


NOSYNC_SED = r"s/^\(\s*nosync:\s*\)\(true\|false\)\s*$/\1{value}/"


def nosync_command(value: bool) -> str:
    """Set the ``tags: nosync`` line of the member's Patroni config (templates/postgres/patroni.yml.j2
    renders ``nosync: false``) and reload Patroni if it changed; prints ``changed`` or ``same``.
    Tags are member-local configuration (no REST call sets them); the main job's own template
    has ``false``, so a converge also clears it."""
    word = "true" if value else "false"
    conf = remote.quote(PATRONI_CONFIG)
    return (f"grep -Eq '^\\s*nosync:\\s*(true|false)\\s*$' {conf} || {{ echo 'no nosync line in {PATRONI_CONFIG}' >&2; exit 3; }}; "
            f"if grep -Eq '^\\s*nosync:\\s*{word}\\s*$' {conf}; then echo same; exit 0; fi; "
            f"sed -i {remote.quote(NOSYNC_SED.format(value=word))} {conf} && systemctl reload patroni && echo changed")


def switchover_command(leader: str, candidate: str) -> str:
    """A planned switchover through patronictl (it waits for the new leader)."""
    return (f"timeout {SWITCHOVER_TIMEOUT_S + 30} patronictl -c {remote.quote(PATRONI_CONFIG)} switchover "
            f"--leader {remote.quote(leader)} --candidate {remote.quote(candidate)} --force 2>&1")


def checkpoint_command(port: int) -> str:
    """CHECKPOINT on the leader just before the switchover: the demotion's shutdown checkpoint
    then has little left to write, which is time inside the write pause (autobase does the same)."""
    return f"runuser -u postgres -- psql -h /var/run/postgresql -p {int(port)} -X -q -d postgres -c CHECKPOINT 2>&1"


PAUSE_MS = 10000
"""Upper bound of the write pause on the old Redis primary around a Sentinel failover (released
as soon as every Sentinel names the new one; a failover here takes about 2 s)."""


def pause_writes_command(ms: int = PAUSE_MS) -> str:
    """``CLIENT PAUSE <ms> WRITE`` on the local Redis (the primary): its writers block instead of
    being acknowledged by a primary that Sentinel is about to demote (the lab's benchmark lost
    19 acknowledged keys in the window of a plain SENTINEL FAILOVER); reads, replication and
    Sentinel's own REPLICAOF go on.  Once demoted, the blocked writes get READONLY: an error the
    client retries on the new primary, never a lost acknowledged write."""
    return f"{REDIS_CLI} redis -e CLIENT PAUSE {int(ms)} WRITE 2>&1"


def unpause_command() -> str:
    return f"{REDIS_CLI} redis -e CLIENT UNPAUSE 2>&1"


def replicaof_command(primary: str, port: int) -> str:
    """``REPLICAOF <new primary> <port>`` on the old primary, still paused: Sentinel converts a
    demoted primary only seconds after the promotion, and until then writers released by
    ``CLIENT UNPAUSE`` would still be acknowledged by it, and those writes lost.  The same command
    Sentinel sends (idempotent: "Already connected to specified master")."""
    return f"{REDIS_CLI} redis -e REPLICAOF {remote.quote(primary)} {int(port)} 2>&1"


def role_command() -> str:
    """``ROLE``: its first line is ``master``, ``slave`` or ``sentinel``."""
    return f"{REDIS_CLI} redis ROLE 2>&1"


def sentinel_failover_command(master: str) -> str:
    """SENTINEL FAILOVER on the local Sentinel, through the wrapper (password in REDISCLI_AUTH)."""
    return f"{REDIS_CLI} sentinel -e SENTINEL FAILOVER {remote.quote(master)} 2>&1"


RABBIT_QUEUES = (
    "vhosts=$(timeout 30 rabbitmqctl list_vhosts -q --no-table-headers name) && [ -n \"$vhosts\" ] || exit 1; "
    "for v in $vhosts; do "
    "echo \"vhost $v\"; timeout 30 rabbitmqctl list_queues -q --no-table-headers -p \"$v\" "
    "name pid exclusive policy slave_pids synchronised_slave_pids || exit 1; done"
)
"""Every vhost's queues (no vhost listed: a failure, never "no queue to sync"), tab-separated: name, master pid, exclusive, policy, mirrors, the
synchronised mirrors.  The table format, not JSON: its pids name their node
(``<rabbit@data1.1700.512.0>``), the JSON formatter's (``#PID<12766.4814.0>``) do not."""


# --- decisions (pure) -----------------------------------------------------------------------


_NODE = re.compile(r"<([^<>.\s@]+@[^<>.\s]+)\.")


def _nodes(field: str) -> list[str]:
    """The Erlang node names in a pid or a list of pids (``<rabbit@data1.1.2.0>``)."""
    return _NODE.findall(field)


def parse_rabbit_queues(text: str) -> list[dict[str, Any]]:
    """``RABBIT_QUEUES``'s output -> [{vhost, name, master, mirrors, synced, exclusive, policy}]."""
    queues: list[dict[str, Any]] = []
    vhost = ""
    for line in text.splitlines():
        if line.startswith("vhost "):
            vhost = line[6:].strip()
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            continue
        name, pid, exclusive, policy, mirrors, synced = fields[:6]
        masters = _nodes(pid)
        queues.append({"vhost": vhost, "name": name, "master": masters[0] if masters else None,
                       "exclusive": exclusive.strip() == "true", "policy": policy.strip(),
                       "mirrors": _nodes(mirrors), "synced": _nodes(synced)})
    return queues


def queues_to_sync(queues: list[dict[str, Any]], node: str) -> list[tuple[str, str]]:
    """(vhost, queue) mirrored by a policy whose master or a mirror is on ``node`` and that has no
    synchronised copy on another node: stopping ``node`` could lose their messages (sync them
    first).  Exclusive queues (a connection's own, server-named) are never mirrored and go with
    their connection: the client declares them again on reconnect."""
    out = []
    for q in queues:
        if q["exclusive"] or not q["policy"] or (q["master"] != node and node not in q["mirrors"]):
            continue
        copies = ([q["master"]] if q["master"] and q["master"] != node else []) + [n for n in q["synced"] if n != node]
        if not copies:
            out.append((q["vhost"], q["name"]))
    return out


def patroni_ready(host: str, members: tuple[PatroniMember, ...] | None, max_lag: int) -> tuple[bool, str]:
    """May ``host``'s PostgreSQL go down after the pre-steps?  A leader elsewhere (or, if it is
    the leader, a sync standby to switch over to) and, once it is gone, a streaming standby
    with lag under the bound to be (or stay) the synchronous one."""
    if not members:
        return False, "Patroni members unknown; fix: check patronictl list on a postgres host"
    leaders = [m for m in members if m.role == "leader" and m.state in ("running", "streaming")]
    if len(leaders) != 1:
        return False, f"{len(leaders)} running Patroni leader(s); fix: wait for Patroni to settle (patronictl list)"
    leader = leaders[0].name
    if leader == host:
        target = switchover_candidate(members, host, max_lag)
        if target is None:
            return False, (f"{host} is the leader and no streaming sync standby with lag <= {max_lag} B to switch over to; "
                           "fix: repair a replica first (patronictl list)")
        return True, f"{host} is the leader, switchover target {target}"
    spare = [m.name for m in members if m.name not in (host, leader) and m.state == "streaming"
             and m.lag_bytes is not None and m.lag_bytes <= max_lag]
    if not spare:
        return False, (f"no other streaming standby with lag <= {max_lag} B to be the sync standby while {host} is down; "
                       "fix: repair a replica first (patronictl list)")
    return True, f"leader {leader}, standby {', '.join(spare)} streaming"


def patroni_rejoined(host: str, members: tuple[PatroniMember, ...] | None, max_lag: int) -> tuple[bool, str]:
    """``host`` streams as a replica with lag under the bound and the cluster has a sync standby."""
    if not members:
        return False, "Patroni members unknown"
    me = next((m for m in members if m.name == host), None)
    if me is None:
        return False, f"{host} is not a Patroni member"
    if me.role == "leader":
        return True, f"{host} is the leader"
    if me.state != "streaming" or me.lag_bytes is None or me.lag_bytes > max_lag:
        return False, f"{host} is {me.role} {me.state or '?'} with lag {me.lag_bytes if me.lag_bytes is not None else '?'} B"
    if not any(m.role == "sync_standby" and m.state == "streaming" for m in members):
        return False, "no streaming sync standby"
    return True, f"{host} {me.role} streaming, lag {me.lag_bytes} B"


def sync_standby_elsewhere(host: str, members: tuple[PatroniMember, ...] | None) -> str | None:
    """The streaming sync standby that is not ``host`` (None: none yet)."""
    return next((m.name for m in members or () if m.name != host and m.role == "sync_standby" and m.state == "streaming"), None)


def leader_of(members: tuple[PatroniMember, ...] | None) -> str | None:
    leaders = [m.name for m in members or () if m.role == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def sentinel_agreement(views: dict[str, str | None] | None) -> str | None:
    """The primary address every Sentinel names (None: unknown or they disagree)."""
    values = set((views or {}).values())
    if not views or len(values) != 1 or None in values:
        return None
    return next(iter(values))


def parse_boot_marker(text: str) -> str | None:
    value = text.strip()
    return value if value and value != "n/a" else None


def parse_failed_units(text: str) -> list[str]:
    """``systemctl --failed --plain --no-legend`` -> the failed unit names."""
    names = []
    for line in text.splitlines():
        words = [w for w in line.split() if w not in ("●", "*")]
        if words:
            names.append(words[0])
    return names


def holds_address(ip_addr_text: str, vip: str) -> bool:
    """``ip -o addr show`` lists ``vip`` (without its prefix) on an interface other than ``lo``
    (``vip_move`` keeps a silent copy on ``lo`` of the old holder for a few seconds)."""
    for line in ip_addr_text.splitlines():
        words = line.split()
        if len(words) > 1 and words[1] != "lo" and f" {vip}/" in f" {line}":
            return True
    return False


HANDOVER_GRACE_S = 5.0
"""Seconds the old holder keeps answering the connections it already had, after the address moved."""


def handover_keep_command(vip: str) -> str:
    """Before keepalived stops on the holder: the address also on ``lo`` (/32), with ARP
    answered only for addresses of the receiving interface (``arp_ignore=1``) and never
    announced from it (``arp_announce=2``), so the peer's gratuitous ARP wins at once while a
    request already received here can still be answered from the address it came to.  Without
    it, the reply of a request in flight at the move has no local source address any more and
    the client waits for its timeout (the drill saw one 10 s ReadTimeout).  Prints the previous
    sysctl values (restored by ``handover_release_command``)."""
    q = remote.quote(f"{vip}/32")
    return ("sysctl -n net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce | tr '\\n' ' '; echo; "
            "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 && "
            f"{{ ip -o addr show dev lo | grep -qF ' {vip}/32 ' || ip addr add {q} dev lo; }}")


def handover_release_command(vip: str, previous: str) -> str:
    """The silent copy gone and the ARP sysctls back to ``previous`` (``"0 0"``: Linux's defaults)."""
    values = [v for v in previous.split() if v.isdigit()][:2] or ["0", "0"]
    ignore, announce = (values + ["0"])[:2]
    q = remote.quote(f"{vip}/32")
    return (f"{{ ! ip -o addr show dev lo | grep -qF ' {vip}/32 ' || ip addr del {q} dev lo; }} && "
            f"sysctl -qw net.ipv4.conf.all.arp_ignore={int(ignore)} net.ipv4.conf.all.arp_announce={int(announce)}")


def sessions_cut_text(left: dict[str, int | None], bound: float) -> str:
    total = sum(v or 0 for v in left.values())
    unknown = [n for n, v in left.items() if v is None]
    return (f"{total} editing session(s) still open when ds_drain_seconds ({bound:.0f} s) ended: the reboot cuts them"
            + (f" (count unknown on {', '.join(unknown)})" if unknown else ""))


# --- observing ------------------------------------------------------------------------------


def _vip(target: Any) -> str:
    return str(target.data.get("lb_vip") or "").split("/")[0]


def _holds_vip(lb: Any) -> bool | None:
    found = remote.run(lb, "ip -o addr show", timeout=20, sudo=False)
    return holds_address(found.stdout, _vip(lb)) if found.ok and _vip(lb) else None


def _master(target: Any) -> str:
    return str(setting(target, "redis_master_name", CONTRACT_DEFAULTS))


def _patroni(inventory: Any) -> tuple[PatroniMember, ...] | None:
    return observe._patroni(inventory)  # the DS rollout's look, so both jobs see Patroni alike


def _etcd(inventory: Any) -> tuple[EtcdMember, ...] | None:
    return observe._etcd(inventory)


def _sentinels(inventory: Any) -> dict[str, str | None] | None:
    return observe._sentinels(inventory)


def _rabbit(inventory: Any) -> RabbitView | None:
    return observe._rabbitmq(inventory)


def observe_host(target: Any, patch: PatchOptions) -> HostFacts:
    """Run ``observe_command`` (apt-get update first) and the sizes of what would be upgraded."""
    result = remote.run(target, observe_command(), timeout=UPDATE_TIMEOUT_S + 400)
    facts = parse_observation(result.stdout) if result.ok else parse_observation("")
    if facts.simulation is None:
        return facts
    names = upgrade_names(facts, patch.packages)
    if names == () or not facts.simulation.pending:
        sizes: AptSizes | None = AptSizes(0, 0)
    else:
        answer = remote.run(target, sizes_command(names), timeout=180)
        sizes = hostgates.parse_apt_sizes(answer.stdout) if answer.ok else None
    return HostFacts(**{**facts.__dict__, "sizes": sizes})


def host_view(target: Any, facts: HostFacts, patch: PatchOptions, patroni: tuple[PatroniMember, ...] | None,
              primary: str | None, sentinels_known: bool) -> HostView:
    groups = frozenset(g for g in target.groups if g in KNOWN_GROUPS)
    pending = facts.pending(patch.packages)
    reboot = hostgates.reboot_decision("auto", facts.flag, facts.needrestart) if facts.flag is not None else None
    role: str | None = None
    if "postgres" in groups and patroni is not None:
        role = next((m.role for m in patroni if m.name == target.name), None)
    return HostView(
        name=target.name, az=str(target.data.get("az") or "?"), groups=groups,
        holds_vip=_holds_vip(target) if "lb" in groups else False,
        patroni_role=role,
        redis_primary=(None if not sentinels_known else primary == peer_address(target)) if "redis" in groups else False,
        pending=None if pending is None else len(pending),
        reboot_needed=None if reboot is None else reboot.reboot,
        sessions=observe._sessions(target) if "docs" in groups else None,
    )


def _on_each(targets: list[Any], look: Callable[[Any], HostFacts]) -> dict[str, HostFacts]:
    """``look`` on every host at once (greenlets, as pyinfra itself runs hosts): ``apt-get update``
    through one proxy is the slow part, and eight of them in a row would be minutes."""
    import gevent

    jobs = {t.name: gevent.spawn(look, t) for t in targets}
    gevent.joinall(list(jobs.values()))
    return {name: job.value if job.successful() else parse_observation("") for name, job in jobs.items()}


def observe_hosts(inventory: Any, patch: PatchOptions) -> tuple[list[HostView], dict[str, HostFacts]]:
    """One HostView per inventory host in a group host patching knows (inventory order), and
    each one's raw observations for ``host_gates`` (``apt-get update`` runs on every host first)."""
    targets = [h for h in inventory.iter_activated_hosts() if set(h.groups) & KNOWN_GROUPS] \
        if hasattr(inventory, "iter_activated_hosts") else [h for h in inventory if set(h.groups) & KNOWN_GROUPS]
    facts = _on_each(targets, lambda t: observe_host(t, patch))
    patroni = _patroni(inventory) if any("postgres" in t.groups for t in targets) else None
    sentinels = _sentinels(inventory) if any("redis" in t.groups for t in targets) else None
    primary = sentinel_agreement(sentinels)
    views = [host_view(t, facts[t.name], patch, patroni, primary, primary is not None) for t in targets]
    return views, facts


def host_gates(inventory: Any, facts: dict[str, HostFacts], planned: list[str]) -> list[GateResult]:
    """disk, apt-sources and manual-attention for each planned host (the preflight's host part)."""
    results: list[GateResult] = []
    for name in planned:
        f = facts.get(name)
        target = inventory.get_host(name)
        proxy = target.data.get("apt_proxy") or None
        try:
            patterns = patch_options(target.data).packages
        except ValueError:
            patterns = ()
        if f is None:
            results.append(hostgates.apt_update_gate(name, None, None, proxy))
            continue
        results.append(hostgates.disk_gate(name, f.sizes, f.root, f.var))
        results.append(hostgates.apt_update_gate(name, f.update_exit, f.update_output, proxy))
        results.append(hostgates.manual_attention_gate(name, f.audit, f.simulation_output or "", f.held, patterns))
    return results


# --- steps ----------------------------------------------------------------------------------


StepResult = tuple[bool, str]


def _poll(env: StepEnv, look: Callable[[], tuple[bool, str]], bound: float | None = None,
          what: str = "") -> StepResult:
    """``look()`` until it is True or ``bound`` seconds passed (the last why on failure)."""
    end = time.time() + (env.bound() if bound is None else bound)
    last_say = 0.0
    while True:
        ok, why = look()
        if ok:
            return True, why
        if time.time() >= end:
            return False, f"{why} after {env.bound() if bound is None else bound:.0f} s" + (f"; fix: {what}" if what else "")
        if time.time() - last_say >= 10:
            env.say(f"waiting: {why}")
            last_say = time.time()
        env.wait(POLL_S)


def step_etcd_others_healthy(env: StepEnv, host: str) -> StepResult:
    result = etcd_may_stop(host, _etcd(env.inventory))
    return result.ok, ("; ".join(f"{p.what}; fix: {p.fix}" for p in result.problems) or result.detail)


def step_patroni_others_streaming(env: StepEnv, host: str) -> StepResult:
    return patroni_ready(host, _patroni(env.inventory), env.options.rollout_max_sync_lag_bytes)


def _rabbit_queues(target: Any) -> list[dict[str, Any]] | None:
    found = remote.run(target, RABBIT_QUEUES, timeout=120)
    return parse_rabbit_queues(found.stdout) if found.ok else None


def step_rabbitmq_sync_queues(env: StepEnv, host: str) -> StepResult:
    from ooha.layers.rabbitmq import node_name

    target = env.host(host)
    node = node_name(host)
    asked: set[tuple[str, str]] = set()

    def look() -> tuple[bool, str]:
        queues = _rabbit_queues(target)
        if queues is None:
            return False, f"rabbitmqctl list_queues on {host} did not answer"
        todo = queues_to_sync(queues, node)
        for vhost, name in todo:
            if (vhost, name) not in asked:
                remote.run(target, f"timeout 60 rabbitmqctl sync_queue -p {remote.quote(vhost)} {remote.quote(name)}", timeout=90)
                asked.add((vhost, name))
        if todo:
            return False, f"{len(todo)} queue(s) with no synchronised copy off {node}: " + ", ".join(f"{v}/{n}" for v, n in todo[:5])
        return True, f"{len(queues)} queue(s), every one on {node} has a synchronised copy elsewhere"

    return _poll(env, look, what="see rabbitmqctl list_queues name slave_pids synchronised_slave_pids")


def _peer_lb(env: StepEnv, host: str) -> Any | None:
    return next((h for h in env.group("lb") if h.name != host), None)


def _release_handover(env: StepEnv, target: Any) -> str | None:
    """Remove the silent copy of the address from ``lo`` if ``vip_move`` left one (None: done)."""
    if "handover_sysctl" not in env.memo:
        return None
    answer = remote.run(target, handover_release_command(_vip(target), str(env.memo["handover_sysctl"])), timeout=30)
    if not answer.ok:
        return f"{target.name}: could not remove the floating address from lo: {answer.why()}"
    del env.memo["handover_sysctl"]
    return None


def step_vip_move(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    peer = _peer_lb(env, host)
    if peer is None:
        return False, f"{host} holds the floating address and has no peer LB; fix: add a second LB before patching"
    if env.memo.get("keepalived_stopped") and _holds_vip(peer):
        failed = _release_handover(env, target)
        return (False, failed) if failed else (True, f"floating address already on {peer.name} (keepalived stopped on {host})")
    held = _holds_vip(target)
    if held is None:
        return False, f"{host}: could not read its addresses (ip -o addr); fix: check SSH to {host}, then rerun"
    if not held:
        if _holds_vip(peer):
            return True, f"{host} does not hold the floating address (on {peer.name})"
        return False, (f"the floating address is on neither {host} nor {peer.name}; "
                       f"fix: systemctl start keepalived on both, check `ip -br addr`, then rerun")
    states = remote.run(peer, "systemctl is-active nginx keepalived", timeout=20)
    if states.lines() != ["active", "active"]:
        return False, f"{peer.name}: nginx/keepalived not both active ({' '.join(states.lines())}); fix: repair {peer.name} first"
    kept = remote.run(target, handover_keep_command(_vip(target)), timeout=30)
    if not kept.ok:
        return False, f"{host}: could not keep the floating address on lo for the handover: {kept.why()}"
    env.memo.setdefault("handover_sysctl", kept.stdout.strip())  # a re-entry keeps the values from before the first
    env.memo["keepalived_stopped"] = True
    started = time.time()
    stopped = remote.run(target, "systemctl stop keepalived", timeout=60)
    if not stopped.ok:
        return False, f"{host}: systemctl stop keepalived failed: {stopped.why()}"
    ok, why = _poll(env, lambda: (bool(_holds_vip(peer)) and _holds_vip(target) is False, f"floating address not yet on {peer.name}"),
                    bound=60, what=f"see journalctl -u keepalived on {peer.name}")
    if not ok:
        return False, why
    moved = time.time() - started
    env.wait(HANDOVER_GRACE_S)
    failed = _release_handover(env, target)
    if failed:
        return False, failed
    return True, (f"floating address moved {host} -> {peer.name} in {moved:.1f} s (keepalived stopped on {host}; "
                  f"{host} answered its open requests for {HANDOVER_GRACE_S:.0f} s more)")


def _state_key(env: StepEnv) -> tuple[str, float]:
    from ooha.layers.loadbalancer import node_state_settings

    lbs = env.group("lb")
    key, cache_ms = node_state_settings(lbs[0] if lbs else env.host(env.group("docs")[0].name))
    return key, drain.settle_seconds(cache_ms)


def _move_node(env: StepEnv, node: str, wanted: str) -> None:
    key, settle = _state_key(env)
    if nodestate.move_state(env.group("redis"), key, node, wanted):
        env.wait(settle)


def _drain_seconds(env: StepEnv) -> float:
    docs = env.group("docs")
    value = docs[0].data.get("ds_drain_seconds") if docs else None
    return float(value if value is not None else 60)


def step_ds_drain(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    key, _ = _state_key(env)
    try:
        state = nodestate.first(env.group("redis"), lambda r: nodestate.read_states(r, key)).get(host, drain.ACTIVE)
        if "ds_image" not in env.memo:
            running = observe._running(target)
            env.memo["ds_image"] = running.ref if running is not None else None
        if state == drain.OUT:
            return True, f"{host} already out of the load balancers' table"
        _move_node(env, host, drain.DRAINING)
        bound = _drain_seconds(env)
        end = nodestate.wait_drained(lambda: {host: observe._sessions(target)}, bound, env.wait, env.say, lambda: False)
        _move_node(env, host, drain.OUT)
    except nodestate.NodeStateError as error:
        return False, f"node state not writable: {error}; fix: check the Redis primary (SENTINEL get-master-addr-by-name)"
    if end.drained:
        return True, f"0 editing sessions left after {end.elapsed:.0f} s; {host} out"
    env.memo["sessions_cut"] = sum(v or 0 for v in end.left.values()) if all(v is not None for v in end.left.values()) else -1
    return True, sessions_cut_text(end.left, bound) + f"; {host} out"


def step_ds_healthy(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    wanted = env.memo.get("ds_image")

    def look() -> tuple[bool, str]:
        running, health, _ = observe.node_health(target)
        if running is None:
            return False, f"{host}: Document Server container not running"
        if wanted and running.ref != wanted:
            return False, f"{host} runs {running.ref}, before the patch {wanted}"
        if health != "true":
            return False, f"{host} /healthcheck answered {health!r}"
        return True, f"{host} runs {running.version}, /healthcheck true"

    return _poll(env, look, what=f"see docker ps and docker logs on {host}")


def step_ds_return(env: StepEnv, host: str) -> StepResult:
    try:
        _move_node(env, host, drain.ACTIVE)
    except nodestate.NodeStateError as error:
        return False, f"node state not writable: {error}; fix: check the Redis primary, then rerun"
    return True, f"{host} back in the load balancers' table"


def step_sentinel_failover(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    mine = peer_address(target)
    primary = sentinel_agreement(_sentinels(env.inventory))
    if primary is None:
        return False, "the Sentinels do not agree on a primary; fix: wait for Sentinel to settle (SENTINEL get-master-addr-by-name)"
    if primary != mine:
        return True, f"Redis primary already on {primary}, not {host}"
    started = time.time()
    paused = remote.run(target, pause_writes_command(), timeout=30)
    if not paused.ok:
        env.say(f"CLIENT PAUSE on {host} failed ({paused.why()}); failing over without it")
    try:
        answer = remote.run(target, sentinel_failover_command(_master(target)), timeout=30)
        if not answer.ok and "INPROG" not in answer.why():
            return False, f"SENTINEL FAILOVER on {host}: {answer.why()}; fix: check SENTINEL replicas {_master(target)}"

        def look() -> tuple[bool, str]:
            now = sentinel_agreement(_sentinels(env.inventory))
            return (now is not None and now != mine), f"Sentinels name {now or 'no single primary'}"

        ok, why = _poll(env, look, bound=max(30.0, PAUSE_MS / 1000), what="check SENTINEL replicas and the Sentinels' logs")
        new = why.split()[-1]
        if ok and paused.ok:
            ok, why = _demote_while_paused(env, host, new)
    finally:
        if paused.ok:
            remote.run(target, unpause_command(), timeout=30)
    return ok, (f"Redis primary moved {mine} -> {new} in {time.time() - started:.1f} s "
                f"(writes paused on {host} until it was a replica)" if ok else why)


def _demote_while_paused(env: StepEnv, host: str, primary: str) -> StepResult:
    """Make the old primary a replica of ``primary`` before its writers are released (see
    ``replicaof_command``); the answer keeps the Sentinels' wording for the step's reason."""
    target = env.host(host)
    port = int(setting(target, "redis_port", CONTRACT_DEFAULTS))
    answer = remote.run(target, replicaof_command(primary, port), timeout=30)
    if not answer.ok:
        return False, f"REPLICAOF {primary} on {host}: {answer.why()}; fix: check redis-server on {host}"

    def look() -> tuple[bool, str]:
        role = remote.run(target, role_command(), timeout=20).stdout.strip().splitlines()
        return bool(role) and role[0] == "slave", f"{host} is {role[0] if role else 'unknown'} (want slave)"

    ok, why = _poll(env, look, bound=PAUSE_MS / 1000, what=f"check `ROLE` on {host}")
    return ok, (f"Sentinels name {primary}; {host} is its replica" if ok else why)


def _set_nosync(env: StepEnv, host: str, value: bool) -> StepResult:
    answer = remote.run(env.host(host), nosync_command(value), timeout=60)
    if not answer.ok:
        return False, f"{host}: could not set nosync {str(value).lower()}: {answer.why()}"
    return True, answer.stdout.strip()


def step_patroni_nosync(env: StepEnv, host: str) -> StepResult:
    env.memo["nosync_set"] = True  # before the edit: undo clears it even if this step fails midway
    ok, why = _set_nosync(env, host, True)
    if not ok:
        return ok, why
    members = _patroni(env.inventory)
    if leader_of(members) == host:
        return True, f"{host} tagged nosync ({why}); it is the leader: the switchover moves it"

    def look() -> tuple[bool, str]:
        sync = sync_standby_elsewhere(host, _patroni(env.inventory))
        return sync is not None, (f"sync standby {sync}" if sync else f"no sync standby other than {host} yet")

    ok, detail = _poll(env, look, bound=60, what="check patronictl list (synchronous_mode, another streaming replica)")
    return ok, f"{host} tagged nosync ({why}); {detail}"


def step_patroni_clear_nosync(env: StepEnv, host: str) -> StepResult:
    ok, why = _set_nosync(env, host, False)
    if ok:
        env.memo.pop("nosync_set", None)
    return ok, (f"{host} nosync tag cleared ({why})" if ok else why)


def step_patroni_switchover(env: StepEnv, host: str) -> StepResult:
    members = _patroni(env.inventory)
    if leader_of(members) not in (host, None):
        return True, f"{host} is not the leader ({leader_of(members)} is)"
    target = switchover_candidate(members, host, env.options.rollout_max_sync_lag_bytes)
    if target is None:
        return False, (f"no streaming sync standby with lag <= {env.options.rollout_max_sync_lag_bytes} B to switch over to; "
                       "fix: repair a replica (patronictl list), then rerun")
    port = int(setting(env.host(host), "postgres_port", CONTRACT_DEFAULTS))
    checkpoint = remote.run(env.host(host), checkpoint_command(port), timeout=120)
    if not checkpoint.ok:  # not a reason to stop: the switchover's own shutdown checkpoint does it, slower
        env.say(f"CHECKPOINT before the switchover failed ({checkpoint.why()}); switching over anyway")
    started = time.time()
    answer = remote.run(env.host(host), switchover_command(host, target), timeout=SWITCHOVER_TIMEOUT_S + 60)
    took = time.time() - started

    def look() -> tuple[bool, str]:
        now = leader_of(_patroni(env.inventory))
        return now == target, f"leader {now or 'none'}"

    ok, why = _poll(env, look, bound=60, what="see patronictl list and journalctl -u patroni")
    if not ok:
        return False, f"switchover {host} -> {target}: {answer.why() if not answer.ok else why}"
    return True, f"switchover {host} -> {target} ({took:.1f} s for patronictl)"


def _boot_marker(target: Any) -> str | None:
    found = remote.run(target, BOOT_MARKER, timeout=15, sudo=False)
    return parse_boot_marker(found.stdout) if found.ok else None


def _reconnect(target: Any) -> bool:
    try:
        target.disconnect()
    except Exception:  # a dead connection may fail to close: it is gone either way
        pass
    try:
        target.connect(show_errors=False, raise_exceptions=True)
    except Exception:
        return False
    return bool(target.connected)


def _reboot_verdict(env: StepEnv, target: Any) -> RebootVerdict | None:
    facts = parse_observation(remote.run(target, reboot_sections(), timeout=120).stdout)
    if facts.flag is None and facts.needrestart is None:
        return None
    return hostgates.reboot_decision(env.patch.reboot, facts.flag, facts.needrestart)


def reboot_bound(env: StepEnv, target: Any) -> float:
    """How long a host may take to come back: ``patch_host_up_seconds`` (default: the health bound)."""
    value = target.data.get("patch_host_up_seconds")
    return float(value) if value else env.bound()


def step_reboot(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    memo = env.memo
    if "reboot" not in memo:
        verdict = _reboot_verdict(env, target)
        if verdict is None:
            return False, f"{host}: neither /run/reboot-required nor needrestart could be read; fix: check the host by hand"
        memo["reboot"] = verdict.reboot
        memo["reboot_why"] = verdict.text()
    if not memo["reboot"]:
        memo.setdefault("rebooted", False)
        return True, memo["reboot_why"]
    if not memo.get("reboot_issued"):
        before = _boot_marker(target)
        if before is None:
            return False, f"{host}: UserspaceTimestamp unreadable before the reboot; fix: check systemd on the host"
        memo["boot_before"] = before
        answer = remote.run(target, reboot_command(), timeout=30)
        if not answer.ok:
            return False, f"{host}: systemctl reboot could not be scheduled: {answer.why()}"
        memo["reboot_issued"] = time.time()
        env.say(f"{host} rebooting ({memo['reboot_why']})")
    bound = reboot_bound(env, target)
    end = float(memo["reboot_issued"]) + bound
    while True:
        env.wait(POLL_S)
        if _reconnect(target):
            now = _boot_marker(target)
            if now is not None and now != memo["boot_before"]:
                memo["rebooted"] = True
                memo["boot_after"] = now
                return True, f"{host} back after {time.time() - float(memo['reboot_issued']):.0f} s (booted {now})"
        if time.time() >= end:
            return False, (f"{host} did not come back from the reboot in {bound:.0f} s; fix: look at its console "
                           "(or `python -m lab start` in the lab), then rerun: the run resumes at this step")


def step_apt_upgrade(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    simulated = remote.run(target, "LC_ALL=C timeout 120 apt-get -s upgrade --with-new-pkgs 2>&1", timeout=180)
    if not simulated.ok:
        return False, f"{host}: apt-get -s upgrade failed: {simulated.why()}"
    pending = hostgates.select_packages(hostgates.parse_apt_simulation(simulated.stdout).pending, env.patch.packages)
    if not pending:
        return True, "nothing left to upgrade" + (" of patch_packages" if env.patch.packages else "")
    names = tuple(p.name for p in pending) if env.patch.packages else None
    env.memo["packages"] = [f"{p.name} {p.candidate}" for p in pending]
    started = time.time()
    answer = remote.run(target, upgrade_command(names), timeout=UPGRADE_TIMEOUT_S)
    if not answer.ok:
        tail = " / ".join(answer.stdout.strip().splitlines()[-4:]) or answer.why()
        return False, f"{host}: apt-get failed after {time.time() - started:.0f} s: {tail}; fix: see the output on the host, dpkg --audit"
    return True, f"{len(pending)} package(s) upgraded in {time.time() - started:.0f} s: " + ", ".join(env.memo["packages"][:6])


def host_up_verdict(host: str, marker: str | None, before: str | None, system_state: str,
                    failed_units: list[str]) -> tuple[bool, str]:
    """Is ``host`` back: systemd answers (a boot marker), a NEW boot when it was rebooted
    (``before``: the marker from before the reboot, None when it was not rebooted), systemd
    done starting, no failed unit (``degraded`` with a failed unit is not up; a unit still
    starting is waited for)."""
    if marker is None:
        return False, f"{host}: systemd does not answer"
    if before is not None and marker == before:
        return False, f"{host}: still the boot from before the reboot"
    if system_state in ("initializing", "starting", ""):
        return False, f"{host}: systemd {system_state or 'state unknown'}"
    if failed_units:
        return False, f"{host}: failed unit(s) {', '.join(failed_units)}"
    return True, f"{host} up, systemd {system_state}, no failed unit"


def step_host_up(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    before = env.memo.get("boot_before") if env.memo.get("rebooted") else None

    def look() -> tuple[bool, str]:
        if not target.connected and not _reconnect(target):
            return False, f"{host}: SSH does not answer"
        marker = _boot_marker(target)
        if marker is None:
            _reconnect(target)  # a connection from before the reboot: the next look uses a new one
            return host_up_verdict(host, None, before, "", [])
        state = remote.run(target, "systemctl is-system-running", timeout=20, sudo=False).stdout.strip()
        failed = parse_failed_units(remote.run(target, "systemctl --failed --plain --no-legend", timeout=20, sudo=False).stdout)
        return host_up_verdict(host, marker, before, state, failed)

    return _poll(env, look, what=f"systemctl --failed on {host}")


def step_no_pending_left(env: StepEnv, host: str) -> StepResult:
    simulated = remote.run(env.host(host), "LC_ALL=C timeout 120 apt-get -s upgrade --with-new-pkgs 2>&1", timeout=180)
    if not simulated.ok:
        return False, f"{host}: apt-get -s upgrade failed: {simulated.why()}"
    left = hostgates.select_packages(hostgates.parse_apt_simulation(simulated.stdout).pending, env.patch.packages)
    if left:
        return False, (f"{len(left)} package(s) still upgradable: {', '.join(p.name for p in left[:6])}; "
                       "fix: see apt-get -s upgrade on the host (held, kept back?)")
    return True, "no upgradable package" + (" of patch_packages" if env.patch.packages else "") + " left"


def step_etcd_member_healthy(env: StepEnv, host: str) -> StepResult:
    def look() -> tuple[bool, str]:
        members = _etcd(env.inventory)
        if not members:
            return False, "etcd members unknown"
        down = [m.name for m in members if not m.healthy]
        if host not in {m.name for m in members}:
            return False, f"{host} is not an etcd member"
        return not down, (f"not healthy: {', '.join(down)}" if down else f"{len(members)}/{len(members)} etcd members healthy")

    return _poll(env, look, what=f"see journalctl -u etcd on {host}")


def step_rejoined(env: StepEnv, host: str) -> StepResult:
    lag = env.options.rollout_max_sync_lag_bytes
    return _poll(env, lambda: patroni_rejoined(host, _patroni(env.inventory), lag),
                 what=f"see patronictl list and journalctl -u patroni on {host}")


def step_sentinel_sees_replica(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    mine = peer_address(target)

    def look() -> tuple[bool, str]:
        primary = sentinel_agreement(_sentinels(env.inventory))
        if primary is None:
            return False, "the Sentinels do not agree on a primary"
        if primary == mine:
            return True, f"{host} is the Redis primary again"
        info = parse_info(remote.run(target, f"{REDIS_CLI} redis INFO replication", timeout=20).stdout.splitlines())
        if not info or info.get("role") != "slave" or info.get("master_link_status") != "up":
            return False, f"{host} Redis: role {(info or {}).get('role')}, link {(info or {}).get('master_link_status')}"
        return True, f"{host} Redis replica of {primary}, link up; every Sentinel names {primary}"

    return _poll(env, look, what=f"see journalctl -u redis-server -u redis-sentinel on {host}")


def step_rabbitmq_running(env: StepEnv, host: str) -> StepResult:
    from ooha.layers.rabbitmq import node_name

    node = node_name(host)

    def look() -> tuple[bool, str]:
        view = _rabbit(env.inventory)
        if view is None:
            return False, "RabbitMQ cluster status unknown"
        missing = [n for n in view.expected if n not in view.running]
        if missing or view.partitions or view.alarms:
            return False, f"not running: {', '.join(missing) or '-'}; partitions {list(view.partitions)}; alarms {list(view.alarms)}"
        queues = _rabbit_queues(env.host(host))
        if queues is None:
            return False, "list_queues did not answer"
        unsynced = [f"{q['vhost']}/{q['name']}" for q in queues if node in q["mirrors"] and node not in q["synced"]]
        if unsynced:
            return False, f"mirror(s) on {node} not synchronised yet: {', '.join(unsynced[:5])}"
        return True, f"{node} running in a {len(view.running)}-node cluster, mirrors synchronised"

    return _poll(env, look, what=f"see rabbitmqctl cluster_status on {host}")


def step_lb_backup_state(env: StepEnv, host: str) -> StepResult:
    target = env.host(host)
    if env.memo.get("keepalived_stopped"):
        started = remote.run(target, "systemctl start keepalived", timeout=60)
        if not started.ok:
            return False, f"{host}: systemctl start keepalived failed: {started.why()}"
        env.memo["keepalived_stopped"] = False

    def look() -> tuple[bool, str]:
        states = remote.run(target, "systemctl is-active nginx keepalived", timeout=20).lines()
        if states != ["active", "active"]:
            return False, f"{host}: nginx/keepalived {' '.join(states) or 'unknown'}"
        holders = [lb.name for lb in env.group("lb") if _holds_vip(lb)]
        if len(holders) != 1:
            return False, f"floating address on {len(holders)} LB(s) ({', '.join(holders) or 'none'})"
        return True, f"{host} nginx and keepalived active; floating address on {holders[0]}"

    return _poll(env, look, what="see journalctl -u keepalived on every LB")


STEPS: dict[str, Callable[[StepEnv, str], StepResult]] = {
    "etcd_others_healthy": step_etcd_others_healthy,
    "patroni_others_streaming": step_patroni_others_streaming,
    "rabbitmq_sync_queues": step_rabbitmq_sync_queues,
    "vip_move": step_vip_move,
    "ds_drain": step_ds_drain,
    "sentinel_failover": step_sentinel_failover,
    "patroni_nosync": step_patroni_nosync,
    "patroni_switchover_to_sync_standby": step_patroni_switchover,
    "apt_upgrade": step_apt_upgrade,
    "reboot": step_reboot,
    "host_up": step_host_up,
    "no_pending_left": step_no_pending_left,
    "etcd_member_healthy": step_etcd_member_healthy,
    "patroni_clear_nosync": step_patroni_clear_nosync,
    "rejoined_replica_lag_under_bound": step_rejoined,
    "sentinel_sees_replica": step_sentinel_sees_replica,
    "rabbitmq_running": step_rabbitmq_running,
    "ds_healthy": step_ds_healthy,
    "ds_return": step_ds_return,
    "lb_backup_state": step_lb_backup_state,
}


def run_step(env: StepEnv, host: str, step: str) -> StepResult:
    """Run one step of ``host``'s turn: (True, what was seen/done) or (False, why incl. a fix).
    Never raises for a host or service problem (an unexpected error is a failed step)."""
    action = STEPS.get(step)
    if action is None:
        return False, f"unknown step {step!r}; fix: this is a bug (hostplan and hoststeps disagree)"
    try:
        return action(env, host)
    except Exception as error:  # noqa: BLE001  a step that crashed is a failed step with its cause
        return False, f"{step} on {host}: {type(error).__name__}: {error}"


def undo(env: StepEnv, host: str, done: list[str]) -> list[str]:
    """After a failure with ``host`` UP: undo its temporary moves that are safe to undo now.
    One line per thing done or left for a person."""
    lines: list[str] = []
    if "handover_sysctl" in env.memo:
        failed = _release_handover(env, env.host(host))
        lines.append(failed or f"floating address removed from lo on {host}")
    if env.memo.get("keepalived_stopped"):  # the memo, not ``done``: vip_move may have failed after the stop
        ok, why = run_step(env, host, "lb_backup_state")
        lines.append(f"keepalived started again on {host}" if ok or not env.memo.get("keepalived_stopped")
                     else f"keepalived on {host} left stopped: {why}")
    if "patroni_nosync" in done or env.memo.get("nosync_set"):
        ok, why = _set_nosync(env, host, False)
        lines.append(f"{host}: nosync tag cleared" if ok else f"{host}: nosync tag left set: {why}")
    if ("ds_drain" in done or "ds_image" in env.memo) and "ds_return" not in done:
        running, health, _ = observe.node_health(env.host(host))
        if running is not None and health == "true":
            ok, why = step_ds_return(env, host)
            lines.append(f"{host} back in the load balancers' table" if ok else f"{host} left out: {why}")
        else:
            lines.append(f"{host} left out of the load balancers' table: its container is not healthy "
                         f"(/healthcheck {health!r}); return it with the DS rollout's tools once it is")
    return lines
