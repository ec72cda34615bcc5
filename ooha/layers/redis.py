r"""Redis layer: a primary and replicas across AZs, watched by a Sentinel quorum across AZs.

Debian's ``redis-server`` and ``redis-sentinel`` (Redis 7.0) on the ``redis`` group, one
per AZ.  Redis and Sentinel rewrite their own configuration files at runtime (CONFIG
REWRITE; Sentinel's REPLICAOF on failover; Sentinel's epochs and known replicas), so
this layer never templates a file that they own:

* ``/etc/redis/redis.conf`` (Debian's) belongs to Redis.  The deploy only appends an
  ``include`` of ``/etc/redis/redis-onlyoffice-ha.conf`` (the settings it owns, templated)
  and, at the first bootstrap of a host only, a ``replicaof`` line naming the primary of
  that moment.  Later changes of owned settings are applied with CONFIG SET + CONFIG
  REWRITE when the running value differs, so a rerun never restarts Redis and never
  touches ``replicaof``: a rerun after a failover changes nothing and never demotes the
  current primary.
* ``/etc/redis/sentinel.conf`` belongs to Sentinel.  It is written from a bootstrap
  template only while Sentinel does not monitor the master name yet; afterwards settings
  are applied with ``SENTINEL SET`` when Sentinel's own view differs.
* "The primary" is discovered at execute time: what the Sentinels of the other members
  say, else what the local Redis replicates from, else (a brand-new group) the first host
  of ``inventory.get_group("redis")``.  A host added later therefore joins as a replica
  of the current primary without disturbing it.
* A host rebuilt blank (same name, or a new address after the inventory is edited) is a
  first bootstrap: blank means no marker, no replicaof/CONFIG REWRITE in redis.conf and no
  RDB/AOF file (``is_blank``); it follows the primary named by a majority of the other
  Sentinels and is refused while they still name it (``bootstrap_primary``).  Then every
  Sentinel that remembers the old identity (a Sentinel id or replica address that is no
  longer real: ``stale_entries``) gets ``SENTINEL RESET``, one at a time, each waiting to
  re-discover the live replicas and Sentinels before the next (``sentinels_forget_stale``).
  Nothing stale, nothing done: a normal rerun changes nothing.  Both decisions are taken when
  the operation executes, from the facts of that moment (pyinfra runs an operation's body
  again at execute): planned without ``-y``, a decision that cannot be taken yet (the blank
  host's Redis not installed, a failover still settling) shows as a "decided at execute time"
  placeholder in the plan, and a refusal comes when it executes; nothing runs from plan-time
  facts (the new-address drill's way back runs without ``-y``).

Split brain: ``min-replicas-to-write 1`` with ``min-replicas-max-lag 5`` makes a primary
that lost every replica (an AZ cut) refuse writes after 5 s, while the majority side's
Sentinels (quorum 2 of 3) promote a replica there.

Passwords never appear in a command: they sit in root-only files read by the
``ooha-redis-cli`` wrapper (``REDISCLI_AUTH``), and in the Redis/Sentinel config files
(mode 0640 redis:redis).

HAProxy role check for the stable endpoint (docs hosts, :6379; endpoints layer).  This
sequence works against this layer (its bytes and the regex are exercised against the lab's
Redis in tests/integration/test_redis.py).  AUTH goes as ``send-binary`` (hex of
``AUTH <redis_password>\r\n`` or of its RESP form) so the password needs no quoting::

    listen redis-primary
        mode tcp
        option tcp-check
        tcp-check connect
        tcp-check send-binary <hex of "AUTH <redis_password>\r\n">
        tcp-check expect string +OK
        tcp-check send PING\r\n
        tcp-check expect string +PONG
        tcp-check send info\ replication\r\n
        tcp-check expect rstring 'role:master[[:space:]]+connected_slaves:[1-9]'
        tcp-check send QUIT\r\n
        tcp-check expect string +OK
        default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
        server data1 198.18.1.31:6379 check
        ...

Prefer the ``rstring`` (single quotes: no escape processing; POSIX class: works with
PCRE2 and libc regex) to a plain ``string role:master``: it also keeps HAProxy off an old
primary that has just restarted (it boots as a master with no replicas until Sentinel
turns it into a replica, up to ~10 s) and off a primary isolated by an AZ cut; both
refuse writes anyway (min-replicas-to-write 1), so routing to them only yields NOREPLICAS.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from io import StringIO
from typing import Any

from pyinfra import host, inventory, logger, state
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.facts.files import FindInFile
from pyinfra.operations import apt, files, systemd

from ooha.ops.private_files import private_put, private_template
from ooha.contract import CONTRACT_DEFAULTS, contract_defaults, peer_address
from ooha.report import CheckResult, poll
from ooha.settings import Settings, required_secret
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.redis import (
    CLI,
    RedisBootstrapEvidence,
    RedisConfigValues,
    RedisReplicationByAddress,
    SentinelMasterSettings,
    SentinelPrimaryByAddress,
    SentinelQuorum,
    SentinelTopology,
    parse_replicas,
)

GROUP = "redis"
REDIS_PORT = CONTRACT_DEFAULTS["redis_port"]
SENTINEL_PORT = CONTRACT_DEFAULTS["redis_sentinel_port"]
"""The defaults only: the layer reads data keys redis_port / redis_sentinel_port (ooha/contract.py)."""
REDIS_CONF = "/etc/redis/redis.conf"
OWNED_CONF = "/etc/redis/redis-onlyoffice-ha.conf"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
SECRETS_DIR = "/etc/onlyoffice-ha-redis"
BOOTSTRAP_MARKER = "/var/lib/redis/onlyoffice-ha.bootstrapped"
"""In Redis's data directory: a wiped data directory is bootstrapped again (as a replica
of whatever the Sentinels call primary then)."""
CLI_TIMEOUT_SECONDS = 5
RESET_REDISCOVERY_SECONDS = 60.0
"""Bound on one Sentinel re-discovering the replicas and the other Sentinels after SENTINEL RESET
(hello messages every 2 s, the primary's INFO every 10 s)."""
SAFE_SECRET = re.compile(r"^[A-Za-z0-9_\-+/=.~]{16,}$")
"""Secrets go inside double quotes in Redis config files: no quotes, backslashes, spaces."""

REDIS_DEFAULTS: dict[str, Any] = {
    # Sentinel's name for the replication group, Redis's and Sentinel's ports: this layer
    # owns them, endpoints and documentserver read them (defaults in ooha/contract.py).
    **contract_defaults("redis_master_name", "redis_port", "redis_sentinel_port"),
    "redis_packages": ["redis-server", "redis-sentinel", "redis-tools"],
    # Sentinels that must agree a primary is down (2 of 3: one AZ lost still fails over,
    # the lone Sentinel of a cut-off AZ cannot).
    "redis_sentinel_quorum": 2,
    # A primary unanswered this long is subjectively down.  Measured on the lab
    # (benchmarks/redis_failover.py): a clean stop pauses writes ~1 s (Redis waits for
    # its replicas), then down-after, ~0.5 s to agree (ODOWN) and promote, ~1 s until
    # the other replica follows the new primary (min-replicas-to-write), then client
    # re-discovery.  5000 ms gave 11 s client-side; 3000 ms keeps it under the 10 s goal
    # while still riding out a multi-second stall of a busy host.
    "redis_down_after_ms": 3000,
    # Retry delay of a failed failover and the bound on reconfiguring replicas.
    "redis_failover_timeout_ms": 20000,
    # Replicas resynchronised with the new primary at a time after a failover.
    "redis_parallel_syncs": 1,
    # Split-brain guard: a primary refuses writes unless this many replicas are
    # connected with at most redis_min_replicas_max_lag seconds of lag.
    "redis_min_replicas_to_write": 1,
    "redis_min_replicas_max_lag": 5,
    # The report fails a replica further behind its primary than this (bytes).
    "redis_max_lag_bytes": 1024 * 1024,
    # Extra redis.conf settings this deploy owns ({"maxmemory-policy": "noeviction"}),
    # applied at runtime like the others.  Never replicaof/slaveof here.
    "redis_settings": {},
}

RUNTIME_KEYS_FORBIDDEN = {"replicaof", "slaveof", "requirepass", "masterauth", "include", "rename-command"}


# --- inputs --------------------------------------------------------------------------


setting = Settings(REDIS_DEFAULTS)
"""A data key with this layer's default (the report runs outside the redis deploy)."""


def members() -> list[tuple[str, str]]:
    """``[(name, private address)]`` of the redis group in inventory order (outside --limit too)."""
    return [(m.name, peer_address(m)) for m in inventory.get_group(GROUP)]


def secret(target: Any, key: str) -> str:
    """A secret, refused (with host, field and fix) if missing or unsafe in a config file."""
    value = required_secret(target, key)
    if not SAFE_SECRET.match(value):
        raise DeployError(
            f"{target.name}: secrets.{key}: must be 16+ characters of A-Z a-z 0-9 _-+/=.~ "
            f"(it goes inside quotes in Redis's config); fix: generate a new one, e.g. `openssl rand -hex 24`"
        )
    return str(value)


SECRETS = ("redis_password", "redis_sentinel_password")
"""Secrets this layer needs (each must pass ``secret``)."""


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix (host data only, no facts)."""
    problems = []
    for key in SECRETS:
        try:
            secret(target, key)
        except DeployError as exc:
            problems.append(str(exc))
    try:
        owned_settings(target)
    except DeployError as exc:
        problems.append(str(exc))
    except AttributeError:
        problems.append(f"{target.name}: private_address: missing; fix: set it to the host's peer address")
    return problems


def owned_settings(target: Any) -> dict[str, str]:
    """The non-secret redis.conf settings this deploy owns, as CONFIG GET renders them."""
    extra = {str(k): str(v) for k, v in dict(setting(target, "redis_settings") or {}).items()}
    bad = sorted(RUNTIME_KEYS_FORBIDDEN & set(extra))
    if bad:
        raise DeployError(f"{target.name}: redis_settings: {', '.join(bad)} not allowed; fix: remove them (replication is Sentinel's job, passwords come from secrets)")
    return {
        "bind": f"{target.data.private_address} 127.0.0.1",
        "protected-mode": "yes",
        "min-replicas-to-write": str(int(setting(target, "redis_min_replicas_to_write"))),
        "min-replicas-max-lag": str(int(setting(target, "redis_min_replicas_max_lag"))),
        **extra,
    }


def sentinel_settings(target: Any) -> dict[str, str]:
    """The Sentinel settings of the master this deploy owns, as SENTINEL MASTER renders them."""
    return {
        "quorum": str(int(setting(target, "redis_sentinel_quorum"))),
        "down-after-milliseconds": str(int(setting(target, "redis_down_after_ms"))),
        "failover-timeout": str(int(setting(target, "redis_failover_timeout_ms"))),
        "parallel-syncs": str(int(setting(target, "redis_parallel_syncs"))),
    }


def choose_primary(sentinel_views: dict[str, str | None], local_master: str | None, first: str) -> str:
    """Who is primary now, for a host being bootstrapped.

    The Sentinels' answer wins (the most named address: they follow failovers); else
    the primary the local Redis already replicates from; else, for a brand-new group,
    the first host of the inventory group.
    """
    named = Counter(v for v in sentinel_views.values() if v)
    if named:
        return sorted(named.items(), key=lambda item: (-item[1], item[0]))[0][0]
    return local_master or first


# --- rebuilds: a blank host, and Sentinels that remember its old identity -----------------


def is_blank(evidence: list[str]) -> bool:
    """A host is blank for Redis when nothing shows a bootstrap or data (RedisBootstrapEvidence):
    no marker, no replicaof or CONFIG REWRITE in redis.conf, no RDB/AOF file.  Anything else
    is never bootstrapped again (Redis and Sentinel own its replication from then on)."""
    return not evidence


def bootstrap_primary(self_address: str, first: str, sentinel_views: dict[str, str | None],
                      peer_infos: dict[str, dict[str, str] | None]) -> tuple[str | None, str | None]:
    """The primary a BLANK host must replicate from: ``(address, None)`` or ``(None, why + fix)``.

    * Some of the other hosts' Sentinels name a primary: the name given by a strict majority
      of them wins (they follow failovers).  No majority: refused (a failover is in progress
      or the Sentinels are split).  The majority names this blank host itself: refused, the
      Sentinels have not failed over yet and an empty primary would be copied onto every
      replica.
    * No Sentinel names one (a brand-new group): the first host of the inventory group, unless
      the other hosts' Redis already replicate from another primary (the Sentinels were lost,
      not never there): refused.
    Never the inventory order while Sentinels know a primary.
    """
    named = [v for v in sentinel_views.values() if v]
    if named:
        counts = Counter(named)
        top, votes = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0]
        said = ", ".join(f"{a}: {v or 'none'}" for a, v in sorted(sentinel_views.items()))
        if votes * 2 <= len(named):
            return None, (f"the other hosts' Sentinels do not agree on the primary ({said}); "
                          "fix: wait for the failover to finish (SENTINEL get-master-addr-by-name on each) and rerun")
        if top == self_address:
            return None, (f"this blank host is still the primary for {votes}/{len(named)} of the other Sentinels ({said}); "
                          "bootstrapping it would make an empty primary; fix: wait for Sentinel to fail over "
                          "(down-after-milliseconds), or `SENTINEL FAILOVER <master>` on a surviving Sentinel, then rerun")
        return top, None
    elsewhere = sorted(
        {a for a, info in peer_infos.items() if info and info.get("role") == "master" and a != first}
        | {str(info.get("master_host")) for info in peer_infos.values()
           if info and info.get("role") == "slave" and info.get("master_host") not in (None, first)}
    )
    if elsewhere:
        return None, (f"no Sentinel of the other hosts names a primary but their Redis replicate from "
                      f"{', '.join(elsewhere)}, not from the first host {first}; fix: start redis-sentinel on the "
                      "surviving hosts (`systemctl start redis-sentinel`) and rerun")
    return first, None


def _down(flags: str) -> bool:
    return any(f in flags.split(",") for f in ("s_down", "o_down", "disconnected"))


def stale_entries(topology: dict[str, dict[str, Any]], addresses: list[str]) -> dict[str, list[str]]:
    """``{sentinel address: [entry, ...]}``: what each answering Sentinel remembers that is no longer real.

    A remembered Sentinel is stale when its port is 0 (Sentinel's mark for an address now
    announced by another run id), its address is not an inventory host any more, or the
    Sentinel answering at its address now has another id (a rebuilt host).  A remembered
    replica is stale when its address is not an inventory host any more, or it is down while
    the Redis at its address answers with another run id.  A host that is merely stopped is
    none of these (same address, nothing else answers there): no reset on a normal rerun.
    """
    inventory_addresses = set(addresses)
    myids = {a: v.get("myid") for a, v in topology.items() if v.get("myid")}
    run_ids = {a: v.get("redis_run_id") for a, v in topology.items() if v.get("redis_run_id")}
    out: dict[str, list[str]] = {}
    for address in addresses:
        view = topology.get(address) or {}
        if not view.get("myid"):
            continue
        stale = []
        for entry in view.get("sentinels") or []:
            ip, port, runid = entry.get("ip", ""), entry.get("port", ""), entry.get("runid", "")
            if port == "0" or ip not in inventory_addresses or (ip in myids and myids[ip] != runid):
                stale.append(f"sentinel {ip}:{port} id {runid[:8]}")
        for entry in view.get("replicas") or []:
            ip, port, runid = entry.get("ip", ""), entry.get("port", ""), entry.get("runid", "")
            if ip not in inventory_addresses or (
                    _down(entry.get("flags", "")) and ip in run_ids and runid and run_ids[ip] != runid):
                stale.append(f"replica {ip}:{port}")
        if stale:
            out[address] = stale
    return out


def reset_plan(topology: dict[str, dict[str, Any]], addresses: list[str]) -> dict[str, Any] | None:
    """What ``sentinels_forget_stale`` does: None when no Sentinel remembers a stale entry
    (a normal rerun), else ``{"order", "primary", "replicas", "sentinels", "stale"}``.

    Raises ValueError (why + fix) when it is not safe to reset now: the answering Sentinels
    do not name one primary, that primary does not answer as a master, or a failover is in
    progress.  ``order``: the Sentinels that remember a stale entry, reset one at a time.
    ``replicas``: Redis answering as replicas of the primary; ``sentinels``: {address: id}
    of every answering Sentinel; each reset Sentinel must list exactly these again.
    """
    stale = stale_entries(topology, addresses)
    if not stale:
        return None
    live = {a: topology[a] for a in addresses if (topology.get(a) or {}).get("myid")}
    named = sorted({v.get("primary") for v in live.values()}, key=str)
    said = "; ".join(f"{a}: {', '.join(e)}" for a, e in stale.items())
    if len(named) != 1 or named[0] is None:
        raise ValueError(f"Sentinels remember old identities ({said}) but do not all name one primary "
                         f"({', '.join(str(n) for n in named)}); fix: wait for the failover to settle and rerun")
    primary = named[0]
    if (topology.get(primary) or {}).get("redis_role") != "master":
        raise ValueError(f"Sentinels remember old identities ({said}) but their primary {primary} does not answer "
                         "as a master; fix: wait for the failover to settle and rerun")
    if any("failover" in v.get("master_flags", "") for v in live.values()):
        raise ValueError(f"Sentinels remember old identities ({said}) but a failover is in progress; "
                         "fix: wait for it to finish and rerun")
    replicas = sorted(a for a in addresses if a != primary
                      and (topology.get(a) or {}).get("redis_role") == "slave"
                      and (topology.get(a) or {}).get("redis_master_host") == primary)
    return {
        "order": [a for a in addresses if a in stale],
        "primary": primary,
        "replicas": replicas,
        "sentinels": {a: v["myid"] for a, v in live.items()},
        "stale": stale,
    }


def rediscovery_missing(view: dict[str, Any], address: str, plan: dict[str, Any], addresses: list[str]) -> list[str]:
    """What the Sentinel at ``address`` still lacks (or still has too much) after its RESET; empty when done."""
    problems = []
    if view.get("primary") != plan["primary"]:
        problems.append(f"names {view.get('primary')} not {plan['primary']}")
    replicas = sorted(e.get("ip", "") for e in view.get("replicas") or [])
    if replicas != plan["replicas"]:
        problems.append(f"replicas {replicas} (want {plan['replicas']})")
    wanted = sorted((a, i) for a, i in plan["sentinels"].items() if a != address)
    known = sorted((e.get("ip", ""), e.get("runid", "")) for e in view.get("sentinels") or [])
    if known != wanted:
        problems.append(f"sentinels {[a for a, _ in known]} (want {[a for a, _ in wanted]})")
    if stale_entries({address: view}, addresses):
        problems.append("still remembers a stale entry")
    return problems


# --- operations that respect the files Redis and Sentinel own --------------------------


@operation()
def redis_first_bootstrap(master: str, self_address: str, peers: list[str], first: str):
    """At a host's first bootstrap only (a new host, or one rebuilt blank): point it at the
    current primary and restart Redis.

    Blank is explicit (``is_blank``): a host with the marker, a replicaof or CONFIG REWRITE
    in redis.conf, or an RDB/AOF file is never bootstrapped again; which node is primary is
    then Sentinel's business, recorded by Redis itself in redis.conf.  The primary comes from
    ``bootstrap_primary``: the other Sentinels' majority answer, the first inventory host only
    for a brand-new group; refused (host, reason, fix) when it is not safe.
    """
    evidence = host.get_fact(RedisBootstrapEvidence, marker=BOOTSTRAP_MARKER, conf=REDIS_CONF)
    if not is_blank(evidence):
        host.noop(f"Redis already bootstrapped ({', '.join(evidence)}): replication left to Sentinel")
        return
    views = host.get_fact(SentinelPrimaryByAddress, addresses=peers, master=master) if peers else {}
    infos = host.get_fact(RedisReplicationByAddress, addresses=peers) if peers else {}
    primary, refusal = bootstrap_primary(self_address, first, views, infos)
    if primary is None:
        if not state.is_executing:  # planning: decided again, from fresh facts, when it executes
            yield "true  # primary chosen at execute time"
            return
        raise OperationError(f"{host.name}: redis: {refusal}")
    yield StringCommand("sed", "-i", "/^[[:space:]]*\\(replicaof\\|slaveof\\)[[:space:]]/d", REDIS_CONF)
    if primary != self_address:
        yield StringCommand("echo", QuoteString(f"replicaof {primary} {int(setting(host, 'redis_port'))}"), ">>", REDIS_CONF)
    yield "systemctl restart redis-server.service"
    yield StringCommand("touch", BOOTSTRAP_MARKER)


@operation()
def redis_runtime_settings(wanted: dict[str, str]):
    """CONFIG SET the owned settings whose running value differs, then CONFIG REWRITE.

    Redis persists them in redis.conf itself, so its file and the included file agree
    and no restart is needed.
    """
    current = host.get_fact(RedisConfigValues, keys=sorted(wanted))
    if not current:
        host.noop("Redis not answering yet (first run plan)")
        return
    differ = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not differ:
        host.noop("Redis runtime settings already as wanted")
        return
    args: list[Any] = [CLI, "redis", "CONFIG", "SET"]
    for key, value in sorted(differ.items()):
        args += [key, QuoteString(value)]
    yield StringCommand(*args)
    yield StringCommand(CLI, "redis", "CONFIG", "REWRITE")


@operation()
def sentinel_bootstrap(master: str, peers: list[str], first: str, template_vars: dict[str, Any]):
    """Write Sentinel's bootstrap config and restart it, only while it does not monitor ``master``."""
    if host.get_fact(FindInFile, path=SENTINEL_CONF, pattern=f"^sentinel monitor {master} "):
        host.noop(f"Sentinel already monitors {master}: its file is its own")
        return
    views = host.get_fact(SentinelPrimaryByAddress, addresses=peers, master=master) if peers else {}
    local = host.get_fact(RedisReplicationByAddress, addresses=["127.0.0.1"]).get("127.0.0.1")
    local_master = local.get("master_host") if local and local.get("role") == "slave" else None
    primary = choose_primary(views, local_master, first)
    yield from private_template._inner(
        src=str(TEMPLATES / "redis/sentinel-bootstrap.conf.j2"),
        dest=SENTINEL_CONF,
        user="redis",
        group="redis",
        mode="640",
        primary=primary,
        jinja_env_kwargs=dict(JINJA),
        **template_vars,
    )
    yield "systemctl restart redis-sentinel.service"


@operation()
def sentinel_runtime_settings(master: str, wanted: dict[str, str]):
    """SENTINEL SET the master's settings whose value in Sentinel differs (Sentinel persists them)."""
    current = host.get_fact(SentinelMasterSettings, master=master)
    if not current:
        host.noop("Sentinel not answering yet (first run plan)")
        return
    differ = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not differ:
        host.noop("Sentinel settings already as wanted")
        return
    args: list[Any] = [CLI, "sentinel", "SENTINEL", "SET", master]
    for key, value in sorted(differ.items()):
        args += [key, value]
    yield StringCommand(*args)


@operation()
def sentinels_forget_stale(master: str, addresses: list[str]):
    """Every Sentinel forgets the old identity of a rebuilt host (no ghost replica or Sentinel).

    Reads every Sentinel's memory when it executes (``reset_plan``): nothing stale, nothing
    done (a normal rerun).  Otherwise ``SENTINEL RESET master`` on each Sentinel that
    remembers a stale entry, one at a time, and before the next one waits until the reset
    Sentinel lists exactly the live replicas and the other live Sentinels again, so the
    failover quorum is never lost for more than one Sentinel's rediscovery.  Run on every
    redis host with ``_serial``: the first does the work, the others find nothing stale.
    """
    topology = host.get_fact(SentinelTopology, addresses=addresses, master=master)
    try:
        plan = reset_plan(topology, addresses)
    except ValueError as exc:
        if not state.is_executing:  # planning: decided again, from fresh facts, when it executes
            yield "true  # Sentinel reset decided at execute time"
            return
        raise OperationError(f"{host.name}: redis: {exc}") from None
    if plan is None:
        host.noop("no Sentinel remembers a stale replica or Sentinel")
        return
    yield FunctionCommand(_rolling_sentinel_reset, (master, addresses, plan), {})


def _rolling_sentinel_reset(state: Any, host: Any, master: str, addresses: list[str], plan: dict[str, Any]) -> bool:
    """SENTINEL RESET on each Sentinel of ``plan["order"]``, waiting for each to re-discover."""
    import gevent

    sudo = bool(getattr(state.config, "SUDO", False))
    for address in plan["order"]:
        host.log_styled(f"SENTINEL RESET {master} on {address} (forgets: {', '.join(plan['stale'][address])})",
                        log_func=logger.info)
        ok, output = host.run_shell_command(
            StringCommand(CLI, "sentinel", "-h", address, "SENTINEL", "RESET", master), _sudo=sudo)
        if not ok:
            host.log_styled(f"{host.name}: redis: SENTINEL RESET on {address} failed: {output.stdout}; "
                            "fix: see /var/log/redis/redis-sentinel.log there and rerun", fg="red", log_func=logger.error)
            return False
        end = time.monotonic() + RESET_REDISCOVERY_SECONDS
        while True:
            gevent.sleep(1)
            view = host.get_fact(SentinelTopology, addresses=[address], master=master).get(address) or {}
            missing = rediscovery_missing(view, address, plan, addresses)
            if not missing:
                host.log_styled(f"Sentinel {address} re-discovered the group in "
                                f"{RESET_REDISCOVERY_SECONDS - (end - time.monotonic()):.1f} s", log_func=logger.info)
                break
            if time.monotonic() > end:
                host.log_styled(
                    f"{host.name}: redis: Sentinel {address} did not re-discover the group within "
                    f"{RESET_REDISCOVERY_SECONDS:.0f} s after SENTINEL RESET ({'; '.join(missing)}); the other "
                    "Sentinels were not reset; fix: check port 26379 between the hosts and rerun",
                    fg="red", log_func=logger.error)
                return False
    return True


# --- the layer -------------------------------------------------------------------------


def _secrets_and_wrapper(password: str, sentinel_password: str) -> None:
    """Root-only password files and the redis-cli wrapper that reads them."""
    files.directory(name="Redis CLI secrets directory", path=SECRETS_DIR, user="root", group="root", mode="700")
    private_put(name="Redis password for the CLI wrapper", src=StringIO(password), dest=f"{SECRETS_DIR}/redis.pass",
                user="root", group="root", mode="600")
    private_put(name="Sentinel password for the CLI wrapper", src=StringIO(sentinel_password),
                dest=f"{SECRETS_DIR}/sentinel.pass", user="root", group="root", mode="600")
    files.template(
        name="redis-cli wrapper (password from a root-only file)",
        src=str(TEMPLATES / "redis/redis-cli-wrapper.sh.j2"),
        dest=CLI,
        user="root",
        group="root",
        mode="700",
        secrets_dir=SECRETS_DIR,
        redis_port=int(setting(host, "redis_port")),
        sentinel_port=int(setting(host, "redis_sentinel_port")),
        timeout=CLI_TIMEOUT_SECONDS,
        jinja_env_kwargs=dict(JINJA),
    )


@deploy("Redis", data_defaults=REDIS_DEFAULTS)
def redis() -> None:
    """Converge Redis and Sentinel on one host of the redis group (data keys: REDIS_DEFAULTS)."""
    data = host.data
    password = secret(host, "redis_password")
    sentinel_password = secret(host, "redis_sentinel_password")
    wanted = owned_settings(host)
    group = members()
    if not group:
        raise DeployError(f"{host.name}: groups.redis: empty; fix: put the Redis hosts in the redis group")
    self_address = str(data.private_address)
    peers = [address for _, address in group if address != self_address]
    first = group[0][1]
    master = str(setting(host, "redis_master_name"))
    sentinel_wanted = sentinel_settings(host)

    apt.packages(name="Install Redis and Sentinel", packages=list(data.redis_packages), no_recommends=True)
    _secrets_and_wrapper(password, sentinel_password)

    private_template(
        name="Redis settings this deploy owns (included file)",
        src=str(TEMPLATES / "redis/redis-onlyoffice-ha.conf.j2"),
        dest=OWNED_CONF,
        user="redis",
        group="redis",
        mode="640",
        bind=wanted["bind"],
        port=int(setting(host, "redis_port")),
        password=password,
        min_replicas_to_write=wanted["min-replicas-to-write"],
        min_replicas_max_lag=wanted["min-replicas-max-lag"],
        settings={k: v for k, v in wanted.items() if k not in ("bind", "protected-mode", "min-replicas-to-write", "min-replicas-max-lag")},
        jinja_env_kwargs=dict(JINJA),
    )
    files.line(
        name="redis.conf includes the owned settings",
        path=REDIS_CONF,
        line=f"include {OWNED_CONF}",
        escape_regex_characters=True,
    )
    redis_first_bootstrap(
        name="First bootstrap: replicate from the current primary",
        master=master, self_address=self_address, peers=peers, first=first,
    )
    systemd.service(name="redis-server running and enabled", service="redis-server.service", running=True, enabled=True)
    redis_runtime_settings(name="Redis runtime settings (CONFIG SET when they differ)", wanted=wanted)

    sentinel_bootstrap(
        name="Sentinel bootstrap configuration (only while it does not monitor the master)",
        master=master,
        peers=peers,
        first=first,
        template_vars={
            "port": int(setting(host, "redis_sentinel_port")),
            "redis_port": int(setting(host, "redis_port")),
            "bind": f"{self_address} 127.0.0.1",
            "announce_ip": self_address,
            "sentinel_password": sentinel_password,
            "password": password,
            "master": master,
            "quorum": sentinel_wanted["quorum"],
            "parallel_syncs": sentinel_wanted["parallel-syncs"],
            "down_after_ms": sentinel_wanted["down-after-milliseconds"],
            "failover_timeout_ms": sentinel_wanted["failover-timeout"],
        },
    )
    systemd.service(name="redis-sentinel running and enabled", service="redis-sentinel.service", running=True, enabled=True)
    sentinel_runtime_settings(name="Sentinel settings (SENTINEL SET when they differ)", master=master, wanted=sentinel_wanted)
    sentinels_forget_stale(
        name="Sentinels forget old identities of rebuilt hosts (SENTINEL RESET one at a time, only when stale)",
        master=master, addresses=[address for _, address in group], _serial=True,
    )


# --- validation -------------------------------------------------------------------------

SETTLE_DEADLINE = 60.0
"""Seconds the report waits for replication and Sentinels to settle after a (re)start."""


def _short(addresses: dict[str, str], address: str | None) -> str:
    return addresses.get(address or "", address or "none")


def check_redis_once(target: Any) -> CheckResult:
    """One look at the replication group and the Sentinels, from ``target``."""
    group = members()
    names = {address: name for name, address in group}
    addresses = [address for _, address in group]
    master = str(setting(target, "redis_master_name"))
    own_address = str(target.data.private_address)
    infos = target.get_fact(RedisReplicationByAddress, addresses=addresses)
    own = infos.get(own_address)
    if own is None:
        return CheckResult(False, "Redis on this host does not answer", "rerun the deploy; see `systemctl status redis-server`")
    silent = [names[a] for a in addresses if infos.get(a) is None]
    primaries = [a for a in addresses if (infos.get(a) or {}).get("role") == "master"]
    if not primaries:
        return CheckResult(False, "no primary among " + ", ".join(names.values()), "see `SENTINEL masters` on a Sentinel; a failover may be in progress")
    if len(primaries) > 1:
        return CheckResult(False, "more than one primary: " + ", ".join(names[a] for a in primaries), "Sentinel demotes the stale one; if it persists check `SENTINEL get-master-addr-by-name` on each host")
    primary = primaries[0]
    views = target.get_fact(SentinelPrimaryByAddress, addresses=addresses, master=master)
    mute = [names[a] for a in addresses if views.get(a) is None]
    if mute:
        return CheckResult(False, f"Sentinel on {', '.join(mute)} does not answer for {master}", "rerun the deploy; see `systemctl status redis-sentinel`")
    named = sorted({v for v in views.values() if v})
    if len(named) > 1:
        said = ", ".join(f"{names[a]}: {_short(names, views[a])}" for a in addresses)
        return CheckResult(False, f"Sentinels disagree about the primary ({said})", "check connectivity between the Sentinels (port 26379)")
    if named[0] != primary:
        return CheckResult(False, f"Sentinels name {_short(names, named[0])} but {names[primary]} is the primary", "wait for Sentinel to converge, or check its logs")
    quorum = target.get_fact(SentinelQuorum, master=master)
    if not quorum["ok"]:
        return CheckResult(False, f"Sentinel quorum not reachable: {quorum['message']}", "start the missing Sentinels / heal the network")
    agree = f"sentinels agree: {names[primary]}"
    if own.get("role") == "master":
        online = [r for r in parse_replicas(own) if r["state"] == "online"]
        note = f", not answering: {', '.join(silent)}" if silent else ""
        return CheckResult(True, f"primary, {len(online)} replica(s) online{note}, {agree}")
    if own.get("master_host") != primary:
        return CheckResult(False, f"replica of {_short(names, own.get('master_host'))}, but {names[primary]} is the primary", "Sentinel reconfigures it; if it persists check the Sentinel logs")
    link = own.get("master_link_status", "?")
    if link != "up":
        return CheckResult(False, f"replica of {names[primary]} with link {link}", "see /var/log/redis/redis-server.log (masterauth, network)")
    lag = max(0, int(infos[primary].get("master_repl_offset", 0)) - int(own.get("slave_repl_offset", 0)))
    limit = int(setting(target, "redis_max_lag_bytes"))
    if lag > limit:
        return CheckResult(False, f"replica of {names[primary]} lagging {lag} B (limit {limit} B)", "check the replica's load and network")
    return CheckResult(True, f"replica of {names[primary]} (link up, lag {lag} B), {agree}")


def check_redis(target: Any) -> CheckResult:
    """The redis layer on one host, waiting a bounded time for replication to settle."""
    return poll(check_redis_once, target, SETTLE_DEADLINE)
