"""Endpoints layer: stable addresses on each Document Server host that follow failover.

Choice: HAProxy (Debian ``haproxy`` 2.6) on every client host, not a floating address.
Each client host asks the services themselves who leads, every second, from where the
client is: Patroni's REST ``GET /primary`` (200 only on the leader, which holds the
leader key in etcd), Redis ``INFO replication`` after AUTH (``role:master``, which
Sentinel changes on failover), and RabbitMQ's listener (a node paused by pause_minority
closes it).  Nothing to float, no VRRP across AZs (a floating address needs one L2
segment or a cloud API), and a cut-off client host simply sees the cut-off servers down.
Document Server is given ``127.0.0.1`` (or the Docker bridge gateway the app tier adds
to ``endpoint_bind_addresses``) and never has to be reconfigured or restarted.

When a server is marked down its sessions are shut (``on-marked-down shutdown-sessions``)
so clients reconnect, and land on the new primary.  Timing (``endpoint_check_timing``):
checks every 1 s (500 ms while changing state), 2 failures to go down, 2 successes to
come up: HAProxy follows a promotion about 2 s after the service made it.

A broken configuration never goes live: the template is written to a candidate file,
``haproxy -c`` validates it, and only then is the live file written and HAProxy reloaded
(reloaded, not restarted: established sessions are kept).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, systemd

from ooha.contract import CONTRACT_DEFAULTS, contract_defaults, docker_gateway, peer_address
from ooha.ops.candidate import ConfigFile, validated_config
from ooha.settings import Settings, secret
from ooha.report import CheckResult, poll
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.haproxy import HaproxyServerStates

CONFIG = "/etc/haproxy/haproxy.cfg"
CANDIDATE = "/etc/haproxy/haproxy.cfg.candidate"
REJECTED = "/etc/haproxy/haproxy.cfg.rejected"
SERVICE = "haproxy.service"

# Proxy names in the template, and which inventory group serves each.
PG_PRIMARY, PG_REPLICAS, REDIS_PRIMARY, RABBITMQ = "pg-primary", "pg-replicas", "redis-primary", "rabbitmq"

ENDPOINTS_DEFAULTS: dict[str, Any] = {
    # Client host packages: the proxy, and clients for operators and drills.
    "endpoint_packages": ["haproxy", "postgresql-client", "redis-tools"],
    # Addresses the endpoints listen on; on DS hosts the Docker bridge gateway (from
    # docker_bip) is added by bind_addresses().
    "endpoint_bind_addresses": ["127.0.0.1"],
    # The endpoints' listen ports (this layer owns them; defaults in ooha/contract.py).
    **contract_defaults("endpoint_pg_primary_port", "endpoint_pg_replicas_port", "endpoint_redis_port",
                        "endpoint_amqp_port", "endpoint_stats_port"),
    # The ports of the services behind the endpoints (postgres_port, patroni_rest_port,
    # redis_port, rabbitmq_amqp_port) belong to the data layers: read through _value, whose
    # fallback is ooha/contract.py CONTRACT_DEFAULTS, never re-declared here.
    # HAProxy health-check timing shared by every server line.
    "endpoint_check_timing": "inter 1s fastinter 500ms downinter 1s fall 2 rise 2",
    # Seconds the report waits for the backends to settle (it returns as soon as they have).
    # On a first bootstrap the PostgreSQL replicas clone the leader before Patroni's
    # /replica answers 200, which took ~2 minutes on the lab: the same bound as the
    # postgres layer's own report wait (patroni_leader_deadline), or the check fails
    # while the data tier is still converging correctly.
    "endpoint_settle_seconds": 180,
}


_value = Settings(ENDPOINTS_DEFAULTS, CONTRACT_DEFAULTS)
"""A data key with this layer's default, else the contract's (the report runs outside the deploy)."""


def backends(group: str) -> list[dict[str, str]]:
    """[{name, address}] of a group's hosts, from the whole inventory (--limit notwithstanding)."""
    return [
        {"name": t.name, "address": peer_address(t)}
        for t in inventory.get_group(group)
    ]


def redis_auth_hex(password: str) -> str:
    """``AUTH <password>`` as a RESP array, hex-encoded for ``tcp-check send-binary``.

    RESP carries any byte of the password; hex keeps it out of HAProxy's quoting rules.
    """
    raw = password.encode()
    return (b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(raw), raw)).hex()


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix."""
    problems = []
    addresses = _value(target, "endpoint_bind_addresses")
    if not isinstance(addresses, (list, tuple)) or not addresses:
        problems.append(f"{target.name}: endpoint_bind_addresses: must be a non-empty list; fix: e.g. [\"127.0.0.1\"]")
    else:
        for address in addresses:
            try:
                ipaddress.ip_address(str(address))
            except ValueError:
                problems.append(f"{target.name}: endpoint_bind_addresses: {address!r} is not an IP address; fix: list IP addresses only")
    for group in ("postgres", "redis", "rabbitmq"):
        for entry in backends(group):
            try:
                ipaddress.ip_address(entry["address"])
            except ValueError:
                problems.append(f"{entry['name']}: private_address: {entry['address']!r} is not an IP address; fix: set it")
    if not secret(target, "redis_password"):
        problems.append("all: secrets.redis_password: missing; fix: set it in the secrets file")
    return problems


def bind_addresses(target: Any) -> list[str]:
    """``endpoint_bind_addresses``, plus the Docker bridge gateway on DS hosts.

    The Document Server container reaches the data tier at the gateway of the DS host's
    Docker bridge (``docker_bip``, ooha/contract.py docker_gateway): derived here from
    the docker layer's one key, so the address is never configured twice.  The docker
    layer runs before this one, so the address exists when HAProxy binds it.
    """
    addresses = [str(a) for a in _value(target, "endpoint_bind_addresses")]
    gateway = docker_gateway(target.data.get("docker_bip")) if "docs" in target.groups else None
    if gateway and gateway not in addresses:
        addresses.append(gateway)
    return addresses


def template_vars(target: Any) -> dict[str, Any]:
    """Everything templates/endpoints/haproxy.cfg.j2 needs (kept apart so a unit test renders it)."""
    return {
        "bind_addresses": bind_addresses(target),
        "stats_port": int(_value(target, "endpoint_stats_port")),
        "pg_primary_port": int(_value(target, "endpoint_pg_primary_port")),
        "pg_replicas_port": int(_value(target, "endpoint_pg_replicas_port")),
        "redis_endpoint_port": int(_value(target, "endpoint_redis_port")),
        "amqp_endpoint_port": int(_value(target, "endpoint_amqp_port")),
        # Backend (service) ports: where the data layers listen, NOT the endpoints' own
        # listen ports above (the two differ as soon as either is moved).
        "pg_backend_port": int(_value(target, "postgres_port")),
        "patroni_rest_port": int(_value(target, "patroni_rest_port")),
        "redis_backend_port": int(_value(target, "redis_port")),
        "amqp_backend_port": int(_value(target, "rabbitmq_amqp_port")),
        "check_timing": str(_value(target, "endpoint_check_timing")),
        "redis_auth_hex": redis_auth_hex(secret(target, "redis_password")),
        "postgres": backends("postgres"),
        "redis": backends("redis"),
        "rabbitmq": backends("rabbitmq"),
    }


# --- validation -----------------------------------------------------------------------------


def _up(servers: dict[str, str]) -> list[str]:
    """Servers HAProxy sends traffic to (``UP``, or ``UP 1/2`` while a fall is counted)."""
    return sorted(name for name, status in servers.items() if status.startswith("UP"))


def check_endpoints_once(target: Any) -> CheckResult:
    """pg-primary and redis-primary have exactly one UP server; replicas and rabbitmq at least one."""
    states = target.get_fact(HaproxyServerStates, port=int(_value(target, "endpoint_stats_port")))
    if not states:
        return CheckResult(False, "HAProxy stats do not answer (haproxy down?)", f"rerun the deploy; see `journalctl -u {SERVICE}`", final=True)
    problems = []
    parts = []
    for proxy, label in ((PG_PRIMARY, "pg primary"), (REDIS_PRIMARY, "redis primary")):
        up = _up(states.get(proxy, {}))
        if len(up) == 1:
            parts.append(f"{label} -> {up[0]}")
        else:
            problems.append(f"{label}: {len(up)} servers up ({', '.join(up) or 'none'}), wanted exactly 1")
    for proxy, label in ((PG_REPLICAS, "pg replicas"), (RABBITMQ, "rabbitmq")):
        servers = states.get(proxy, {})
        up = _up(servers)
        if up:
            parts.append(f"{label} {len(up)}/{len(servers)} up")
        else:
            problems.append(f"{label}: no server up (of {len(servers)})")
    if problems:
        return CheckResult(
            False, "; ".join(problems),
            "check the data layers' report lines (postgres, redis, rabbitmq); see `curl -s 'http://127.0.0.1:8404/stats;csv'`",
        )
    return CheckResult(True, ", ".join(parts))


def check_endpoints(target: Any) -> CheckResult:
    """The layer's report line, waiting a bounded time for health checks after a reload."""
    return poll(check_endpoints_once, target, float(_value(target, "endpoint_settle_seconds")))


@deploy("Endpoints", data_defaults=ENDPOINTS_DEFAULTS)
def endpoints() -> None:
    """Converge HAProxy's stable endpoints on one client host; data keys in ENDPOINTS_DEFAULTS."""
    problems = input_problems(host)
    if problems:
        raise DeployError("Endpoints layer inputs:\n" + "\n".join(problems))
    apt.packages(name="Install HAProxy and the data clients", packages=list(host.data.endpoint_packages), no_recommends=True)
    variables = template_vars(host)
    # Candidate, haproxy -c, live file, reload (a rejected candidate goes to REJECTED): ooha/ops/candidate.py.
    validated_config(
        name="HAProxy configuration",
        config_files=[ConfigFile(src=str(TEMPLATES / "endpoints/haproxy.cfg.j2"), dest=CONFIG, candidate=CANDIDATE,
                                 user="root", group="haproxy", mode="640", private=True, data=variables,
                                 jinja_env_kwargs=dict(JINJA))],
        validate="haproxy -c -q -f {path}", label="HAProxy", service=SERVICE, rejected=REJECTED,
        hint=f"haproxy -c -f {REJECTED}",
    )
    systemd.service(name="HAProxy running and enabled", service=SERVICE, running=True, enabled=True)
