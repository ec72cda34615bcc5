"""Firewall layer (issue 14, deliverable 1): per-tier allow-lists in nftables, from the inventory.

The lab-free core: a typed matrix of which source tier may reach which port of which group
(``matrix``), rendered per host into one nftables table ``inet ooha_filter``
(``ruleset``: templates/firewall/ooha_filter.nft.j2) and into a human-readable table
(``matrix_table``: the one in docs/architecture.md, and later the validation report's drift
check), plus the apply script that can never lock the deploy out (templates/firewall/
ooha-firewall.sh.j2: ``nft -c``, a rollback timer armed BEFORE the atomic ``nft -f``, confirm
from a NEW SSH connection or the old rules come back).

Why one table of our own (and not /etc/nftables.conf): Debian's nftables.conf starts with
``flush ruleset``, which would delete Docker's tables on the DS hosts.  Our file replaces only
``inet ooha_filter`` (``table ...; delete table ...; table ... { }`` in one transaction), so
Docker's and anyone else's tables are untouched; a separate base chain on the same hook can only
drop MORE (an accept here does not bypass Docker's chains, and theirs does not bypass ours).

Rules of the matrix (docs/architecture.md, "Firewall (issue 14): core"): data ports only from the
hosts whose services use them.  Who uses what follows the other layers, not guesses:

* PostgreSQL and Patroni REST (``postgres_port``, ``patroni_rest_port``): the postgres members
  (replication, pg_rewind, Patroni's REST calls to each other) and the DS hosts (their HAProxy
  endpoint's servers and health checks).  NOT the LBs: an LB uses only the Redis endpoint (the
  shard table), see "Left to wire" about the LBs' unused HAProxy proxies.
* etcd client (``etcd_client_port``): etcd members and Patroni (postgres) hosts; peer
  (``etcd_peer_port``): etcd members only.
* Redis (``redis_port``): redis members (replication, Sentinel's checks), the DS hosts and the LBs
  (both have HAProxy's ``redis-primary``).  Sentinel (``redis_sentinel_port``): redis members and
  the DS hosts (ioredis in the ee/de image asks the Sentinels directly).
* RabbitMQ AMQP (``rabbitmq_amqp_port``): the DS hosts; epmd (``firewall_rabbitmq_epmd_port``)
  and distribution (AMQP port + 20000, RabbitMQ's own rule): rabbitmq members only (clustering and
  ``rabbitmqctl -n <peer>``).  Management 15672 stays closed (local checks only).
* DS HTTP (``ds_http_port``, Docker-published, so filtered in the FORWARD hook on the conntrack
  original destination): the LBs only (and the monitoring hosts' blackbox probe).
* VRRP (IP protocol 112): between the LBs' ``front_address``es (keepalived is unicast).
* The front door (``FRONT_DOOR_PORTS``): from anywhere.
* SSH (pyinfra's ``ssh_port``): from ``admin_networks`` only, on every host.
* On DS hosts: the endpoint ports from the Docker bridge (``docker_bip``'s network), where the
  container reaches its local HAProxy.
* Monitoring: every exporter port of ooha/layers/monitoring.py from the ``monitoring`` group
  (left out while that group is empty); Prometheus/Alertmanager web from the monitoring hosts and
  ``admin_networks``, Alertmanager gossip (TCP and UDP) between the monitoring hosts.

Inbound default drop; established/related, loopback, the ICMP/ICMPv6 that PMTU discovery and
neighbour discovery need, echo requests, and DHCP replies are allowed.  Egress stays unrestricted
(an ``output`` chain is left out on purpose): DNS, NTP, apt, S3, the registry and the SMTP/webhook
receivers are the deployment's own choices per site, an egress allow-list would have to repeat
every one of them and a wrong one breaks backups silently; the threat this issue names is inbound.

Not in ooha/stack.py yet and no ``@deploy``/``check_firewall`` yet (docs: "Left to wire").
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ooha.contract import CONTRACT_DEFAULTS
from ooha.layers.etcd import ETCD_DEFAULTS
from ooha.layers.monitoring import MONITORING_DEFAULTS, Member, members_of
from ooha.settings import Settings
from ooha.templating import JINJA, TEMPLATES

TABLE = "ooha_filter"
"""Our one nftables table (family inet): the apply script never touches any other."""
STATE_DIR = "/etc/ooha-firewall"
"""candidate.nft (the deploy writes it), ruleset.nft (the confirmed one, loaded at boot), rollback.nft."""
RUN_DIR = "/run/ooha-firewall"
"""``pending`` (sha256 of the applied, unconfirmed candidate) and ``rolled-back`` markers."""
SCRIPT = "/usr/local/sbin/ooha-firewall"
UNIT = "ooha-firewall.service"
ROLLBACK_UNIT = "ooha-firewall-rollback"
"""The transient timer/service ``systemd-run`` arms before every apply."""

FRONT_DOOR_PORTS: tuple[int, ...] = (443, 80)
"""The LBs' nginx ``listen`` ports (templates/loadbalancer/lb-nginx.conf.j2 writes them as literals;
tests/unit/test_firewall.py fails if the two differ).  Left to wire: a contract key both read."""
VRRP = "vrrp"
"""The proto of the VRRP rule (IP protocol 112, no port)."""

FIREWALL_DEFAULTS: dict[str, Any] = {
    # Networks (CIDR or single addresses, IPv4 or IPv6) allowed to reach SSH on EVERY host:
    # where the deploy (this machine, as the hosts see it: after NAT, through the bastion) and
    # operators connect from.  No default on purpose: a wrong guess locks the deploy out.
    # e.g. "admin_networks": ["192.0.2.0/28", "2001:db8:aa::/64"],
    "admin_networks": None,
    # pyinfra's own key for the SSH port the deploy connects to (its connector's default 22).
    "ssh_port": 22,
    # Erlang's port mapper (fixed by Erlang/OTP; RabbitMQ's distribution port is AMQP + 20000).
    "firewall_rabbitmq_epmd_port": 4369,
    # Seconds an applied ruleset may stay unconfirmed before the rollback timer restores the
    # previous one.  Long enough for the deploy to reconnect, short enough to get back in.
    "firewall_confirm_timeout": 120,
    # Extra rows for clients outside the inventory, each {"group": G, "port": P, "proto": "tcp"|"udp"
    # (default tcp), "sources": [networks], "service": "name" (optional)}: a reporting tool reading a
    # PostgreSQL replica, or the lab's test harness on the outer machine reaching Redis/Sentinel/AMQP/
    # the DS port directly (docs: "Left to wire").  e.g.
    # "firewall_extra_allow": [{"group": "postgres", "port": 6432, "sources": ["192.0.2.40"], "service": "pgbouncer"}],
    "firewall_extra_allow": [],
    # Dropped packets are logged (rate-limited, prefix "ooha-drop: "); the port-scan drill and an
    # operator debugging a closed port read them with journalctl -k.
    "firewall_log_drops": True,
}

setting = Settings(FIREWALL_DEFAULTS, CONTRACT_DEFAULTS, ETCD_DEFAULTS, MONITORING_DEFAULTS)
"""A data key with its owner's default: this layer, the contract, etcd's peer port, monitoring's ports."""

ADMIN, ANY, DOCKER_BRIDGE, LB_FRONT = "admin", "any", "docker_bridge", "lb_front"
"""Source tiers that are not inventory groups: admin_networks, everyone, the DS host's Docker
bridge, the LBs' front-segment addresses (VRRP)."""
MONITORING = "monitoring"


@dataclass(frozen=True)
class Rule:
    """One row of the matrix: hosts of group ``dest`` accept ``proto``/``port`` from ``sources``.

    ``sources``: inventory groups or the tiers above.  ``published``: the port is published by
    Docker (DNAT to a container), so it is filtered in the forward hook, not the input hook.
    """

    service: str
    dest: str
    proto: str
    port: int | None
    sources: tuple[str, ...]
    published: bool = False


# --- the matrix -----------------------------------------------------------------------------------


def _port(target: Any, key: str) -> int:
    return int(setting(target, key))


def _groups(members: Iterable[Member]) -> set[str]:
    return {g for m in members for g in m.groups}


def wanted_rules(target: Any) -> list[Rule]:
    """Every rule of the issue's matrix, before the inventory's empty groups are taken out.

    ``target`` is any host (the keys are global); ports come from their owners' defaults
    (ooha/contract.py, ooha/layers/etcd.py, ooha/layers/monitoring.py) or the inventory.
    """
    p = lambda key: _port(target, key)  # noqa: E731
    amqp = p("rabbitmq_amqp_port")
    endpoint_keys = ("endpoint_pg_primary_port", "endpoint_pg_replicas_port", "endpoint_redis_port",
                     "endpoint_amqp_port")
    rules = [
        Rule("ssh", "all", "tcp", p("ssh_port"), (ADMIN,)),
        *[Rule("front door", "lb", "tcp", port, (ANY,)) for port in FRONT_DOOR_PORTS],
        Rule("vrrp", "lb", VRRP, None, (LB_FRONT,)),
        Rule("etcd client", "etcd", "tcp", p("etcd_client_port"), ("etcd", "postgres")),
        Rule("etcd peer", "etcd", "tcp", p("etcd_peer_port"), ("etcd",)),
        Rule("postgresql", "postgres", "tcp", p("postgres_port"), ("postgres", "docs")),
        Rule("patroni rest", "postgres", "tcp", p("patroni_rest_port"), ("postgres", "docs", MONITORING)),
        Rule("redis", "redis", "tcp", p("redis_port"), ("redis", "docs", "lb")),
        Rule("sentinel", "redis", "tcp", p("redis_sentinel_port"), ("redis", "docs")),
        Rule("amqp", "rabbitmq", "tcp", amqp, ("docs",)),
        Rule("epmd", "rabbitmq", "tcp", p("firewall_rabbitmq_epmd_port"), ("rabbitmq",)),
        Rule("erlang distribution", "rabbitmq", "tcp", amqp + 20000, ("rabbitmq",)),
        Rule("ds http", "docs", "tcp", p("ds_http_port"), ("lb", MONITORING), published=True),
        *[Rule(f"endpoint {key.removeprefix('endpoint_').removesuffix('_port').replace('_', ' ')}", "docs", "tcp",
               p(key), (DOCKER_BRIDGE,)) for key in endpoint_keys],
        # Monitoring (ooha/layers/monitoring.py scrape_jobs: same groups, same ports).
        Rule("node exporter", "all", "tcp", p("monitoring_node_exporter_port"), (MONITORING,)),
        Rule("postgres exporter", "postgres", "tcp", p("monitoring_postgres_exporter_port"), (MONITORING,)),
        Rule("etcd metrics", "etcd", "tcp", p("monitoring_etcd_metrics_port"), (MONITORING,)),
        Rule("redis exporter", "redis", "tcp", p("monitoring_redis_exporter_port"), (MONITORING,)),
        Rule("sentinel exporter", "redis", "tcp", p("monitoring_sentinel_exporter_port"), (MONITORING,)),
        Rule("rabbitmq metrics", "rabbitmq", "tcp", p("monitoring_rabbitmq_prometheus_port"), (MONITORING,)),
        Rule("haproxy metrics", "docs", "tcp", p("monitoring_haproxy_metrics_port"), (MONITORING,)),
        Rule("haproxy metrics", "lb", "tcp", p("monitoring_haproxy_metrics_port"), (MONITORING,)),
        Rule("mtail", "lb", "tcp", p("monitoring_mtail_port"), (MONITORING,)),
        Rule("prometheus", MONITORING, "tcp", p("monitoring_prometheus_port"), (MONITORING, ADMIN)),
        Rule("alertmanager", MONITORING, "tcp", p("monitoring_alertmanager_port"), (MONITORING, ADMIN)),
        Rule("alertmanager gossip", MONITORING, "tcp", p("monitoring_alertmanager_cluster_port"), (MONITORING,)),
        Rule("alertmanager gossip", MONITORING, "udp", p("monitoring_alertmanager_cluster_port"), (MONITORING,)),
        Rule("blackbox", MONITORING, "tcp", p("monitoring_blackbox_port"), (MONITORING,)),
    ]
    for index, extra in enumerate(_extra_allow(target)):
        rules.append(Rule(str(extra.get("service") or f"extra {index}"), str(extra["group"]),
                          str(extra.get("proto") or "tcp"), int(extra["port"]), (f"extra{index}",)))
    return rules


def _extra_allow(target: Any) -> list[dict[str, Any]]:
    """``firewall_extra_allow`` as a list of mappings (input_problems reports anything else)."""
    value = setting(target, "firewall_extra_allow") or []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, (list, tuple)) else []


def matrix(target: Any, members: list[Member]) -> list[Rule]:
    """The inventory's matrix: ``wanted_rules`` without empty source groups and without rules
    for a group no host is in (a deployment without a monitoring group opens no exporter port).

    Rules for the same destination group, proto and port are merged (sources united, services
    joined), so a port is one row even when two services' needs lead to it.
    """
    present = _groups(members) | {"all"}
    merged: dict[tuple[str, str, int | None], Rule] = {}
    for rule in wanted_rules(target):
        sources = tuple(s for s in rule.sources if s in (ADMIN, ANY, DOCKER_BRIDGE) or s.startswith("extra")
                        or (s == LB_FRONT and "lb" in present) or s in present)
        if rule.dest not in present or not sources:
            continue
        key = (rule.dest, rule.proto, rule.port)
        rule = Rule(rule.service, rule.dest, rule.proto, rule.port, sources, rule.published)
        merged[key] = _merge(merged[key], rule) if key in merged else rule
    return list(merged.values())


def _merge(old: Rule, new: Rule) -> Rule:
    """One row for two needs of the same port: sources united (order kept), services joined."""
    services = old.service if new.service in old.service.split(" + ") else f"{old.service} + {new.service}"
    return Rule(services, old.dest, old.proto, old.port, old.sources + tuple(s for s in new.sources if s not in old.sources),
                old.published or new.published)


def source_addresses(target: Any, members: list[Member], hosts: Iterable[Any] = ()) -> dict[str, list[str]]:
    """Addresses (networks) of every source tier: each group's peer addresses, ``admin_networks``,
    the LBs' ``front_address`` (from ``hosts``, the pyinfra hosts; their peer address without one),
    and the Docker bridge network (``docker_bip``).  Sorted, deduplicated, normalised networks."""
    def norm(values: Iterable[str]) -> list[str]:
        nets = {ipaddress.ip_network(str(v), strict=False) for v in values}
        return [str(n.network_address) if n.num_addresses == 1 else str(n)
                for n in sorted(nets, key=lambda n: (n.version, n))]

    tiers: dict[str, list[str]] = {g: norm(m.address for m in members if g in m.groups) for g in _groups(members)}
    tiers[ADMIN] = norm(setting(target, "admin_networks") or [])
    front = {str(h.name): h.data.get("front_address") for h in hosts}
    tiers[LB_FRONT] = norm(front.get(m.name) or m.address for m in members if "lb" in m.groups)
    for index, extra in enumerate(_extra_allow(target)):
        tiers[f"extra{index}"] = norm(extra.get("sources") or [])
    bip = target.data.get("docker_bip")
    tiers[DOCKER_BRIDGE] = norm([str(ipaddress.ip_interface(str(bip)).network)] if bip else [])
    return tiers


def host_rules(rules: list[Rule], member: Member) -> list[Rule]:
    """The rules that apply on ``member``: its groups' rows (and "all"), merged per proto/port."""
    merged: dict[tuple[str, int | None], Rule] = {}
    for rule in rules:
        if rule.dest != "all" and rule.dest not in member.groups:
            continue
        key = (rule.proto, rule.port)
        merged[key] = _merge(merged[key], rule) if key in merged else rule
    return sorted(merged.values(), key=lambda r: (r.proto == VRRP, r.port or 0, r.proto))


def allows(target: Any, members: list[Member], dest: Member, source: str, proto: str, port: int | None,
           hosts: Iterable[Any] = ()) -> bool:
    """Whether the matrix lets address ``source`` reach ``proto``/``port`` on ``dest``.

    The matrix's own answer (not the kernel's): the unit tests ask it the issue's questions, and
    the port-scan drill will compare nmap's findings with it.
    """
    tiers = source_addresses(target, members, hosts)
    address = ipaddress.ip_address(source)
    for rule in host_rules(matrix(target, members), dest):
        if rule.proto != proto or rule.port != port:
            continue
        for tier in rule.sources:
            if tier == ANY or any(address in ipaddress.ip_network(n, strict=False) for n in tiers.get(tier, [])):
                return True
    return False


# --- the nftables ruleset -----------------------------------------------------------------------


@dataclass(frozen=True)
class NftSet:
    """One named set of source addresses: ``<tier>_v4`` or ``<tier>_v6``."""

    name: str
    type: str
    elements: tuple[str, ...]


@dataclass
class Ruleset:
    """What templates/firewall/ooha_filter.nft.j2 renders for one host."""

    host: str
    sets: list[NftSet] = field(default_factory=list)
    input: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    log_drops: bool = True


def _family(address: str) -> int:
    return ipaddress.ip_network(address, strict=False).version


def _match(rule: Rule) -> str:
    """The port part of a rule: ``tcp dport <port>``, ``meta l4proto vrrp``."""
    if rule.proto == VRRP:
        return "meta l4proto vrrp"
    return f"{rule.proto} dport {rule.port}"


def _comment(rule: Rule) -> str:
    return rule.service.replace('"', "'")


def ruleset_for(target: Any, members: list[Member], member: Member, hosts: Iterable[Any] = ()) -> Ruleset:
    """The nftables content of one host: the named sets its rules use and the rule lines.

    One line per rule, source tier and address family; ``any`` has no source match.  A
    Docker-published rule goes to the forward chain (conntrack's original destination port, new
    connections only: the input hook never sees DNAT'ed traffic).
    """
    tiers = source_addresses(target, members, hosts)
    result = Ruleset(host=member.name, log_drops=bool(setting(target, "firewall_log_drops")))
    used: dict[str, NftSet] = {}
    for rule in host_rules(matrix(target, members), member):
        for source in rule.sources:
            if source == ANY:
                lines = [f"{_match(rule)} accept comment \"{_comment(rule)} from anywhere\""]
            else:
                lines = []
                for version, (kind, selector) in ((4, ("ipv4_addr", "ip saddr")), (6, ("ipv6_addr", "ip6 saddr"))):
                    elements = tuple(a for a in tiers.get(source, []) if _family(a) == version)
                    if not elements or (rule.proto == VRRP and version == 6):
                        continue
                    name = f"{source}_v{version}"
                    used[name] = NftSet(name, kind, elements)
                    match = _match(rule) if rule.proto != VRRP else "ip protocol vrrp"
                    lines.append(f"{selector} @{name} {match} accept comment \"{_comment(rule)} from {source}\"")
            if rule.published:
                result.forward += [f"ct status dnat meta l4proto {rule.proto} ct original proto-dst {rule.port} "
                                   + line.replace(f"{_match(rule)} ", "") for line in lines]
            else:
                result.input += lines
        if rule.published:
            result.forward.append(f"ct status dnat meta l4proto {rule.proto} ct original proto-dst {rule.port} "
                                  f"drop comment \"{_comment(rule)}: other sources\"")
    result.sets = [used[name] for name in sorted(used)]
    return result


def render_ruleset(target: Any, members: list[Member], member: Member, hosts: Iterable[Any] = ()) -> str:
    """The file ``nft -f`` loads on one host: replaces table inet ooha_filter, nothing else."""
    template = _env().get_template("ooha_filter.nft.j2")
    return template.render(table=TABLE, rs=ruleset_for(target, members, member, hosts))


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES / "firewall")),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, **JINJA)


def ruleset_digest(text: str) -> str:
    """sha256 of a rendered ruleset: the apply script's ``pending`` marker, the confirm's check."""
    return hashlib.sha256(text.encode()).hexdigest()


# --- the human-readable table -------------------------------------------------------------------


def _proto_port(rule: Rule) -> str:
    return "vrrp (IP 112)" if rule.proto == VRRP else f"{rule.port}/{rule.proto}"


def matrix_table(rules: list[Rule]) -> str:
    """The matrix as a Markdown table (docs/architecture.md holds the reference inventory's;
    the validation report will compare the live tables against the same rows)."""
    lines = ["| group | port | service | allowed from |", "|---|---|---|---|"]
    for rule in sorted(rules, key=lambda r: (r.dest != "all", r.dest, r.port or 0, r.proto)):
        via = " (Docker-published: forward hook)" if rule.published else ""
        lines.append(f"| {rule.dest} | {_proto_port(rule)} | {rule.service}{via} | {', '.join(rule.sources)} |")
    return "\n".join(lines) + "\n"


# --- the apply script and the boot unit -------------------------------------------------------------


def script_vars(target: Any, state_dir: str = STATE_DIR, run_dir: str = RUN_DIR) -> dict[str, Any]:
    """Variables of templates/firewall/ooha-firewall.sh.j2 (the tests render it with their own dirs)."""
    return {"table": TABLE, "state_dir": state_dir, "run_dir": run_dir,
            "rollback_unit": ROLLBACK_UNIT, "script": SCRIPT,
            "confirm_timeout": int(setting(target, "firewall_confirm_timeout"))}


def render_script(target: Any, state_dir: str = STATE_DIR, run_dir: str = RUN_DIR) -> str:
    """The apply script (``ooha-firewall check|apply|confirm|rollback|status``)."""
    return _env().get_template("ooha-firewall.sh.j2").render(**script_vars(target, state_dir, run_dir))


def render_unit() -> str:
    """ooha-firewall.service: loads the CONFIRMED ruleset at boot, before the network comes up."""
    return _env().get_template("ooha-firewall.service.j2").render(table=TABLE, state_dir=STATE_DIR)


# --- inputs ---------------------------------------------------------------------------------------


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix (data only)."""
    name = target.name
    problems: list[str] = []
    admin = setting(target, "admin_networks")
    fix_admin = ("fix: list the networks the deploy and operators reach SSH from, as the hosts see them, "
                 "e.g. [\"192.0.2.0/28\"] (an empty list would lock the deploy out)")
    if admin is None or (isinstance(admin, (list, tuple)) and not admin):
        problems.append(f"{name}: admin_networks: missing or empty; {fix_admin}")
    elif not isinstance(admin, (list, tuple)) or isinstance(admin, str):
        problems.append(f"{name}: admin_networks: {admin!r} is not a list; {fix_admin}")
    else:
        for value in admin:
            try:
                network = ipaddress.ip_network(str(value), strict=False)
            except ValueError:
                problems.append(f"{name}: admin_networks: {value!r} is not an address or network; "
                                "fix: e.g. \"192.0.2.0/28\" or \"2001:db8::1\"")
                continue
            if network.prefixlen == 0:
                problems.append(f"{name}: admin_networks: {value!r} lets the whole Internet reach SSH; "
                                "fix: list your admin networks only")
    for key in ("ssh_port", "firewall_rabbitmq_epmd_port", "postgres_port", "patroni_rest_port", "redis_port",
                "redis_sentinel_port", "rabbitmq_amqp_port", "etcd_client_port", "etcd_peer_port", "ds_http_port"):
        value = setting(target, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            problems.append(f"{name}: {key}: {value!r}; fix: a TCP port 1-65535, e.g. {setting.default(key)}")
    amqp = setting(target, "rabbitmq_amqp_port")
    if isinstance(amqp, int) and not isinstance(amqp, bool) and amqp + 20000 > 65535:
        problems.append(f"{name}: rabbitmq_amqp_port: {amqp} makes the distribution port (AMQP + 20000) "
                        f"exceed 65535; fix: an AMQP port below 45536, e.g. {setting.default('rabbitmq_amqp_port')}")
    problems += _extra_problems(target)
    timeout = setting(target, "firewall_confirm_timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 30 <= timeout <= 3600:
        problems.append(f"{name}: firewall_confirm_timeout: {timeout!r}; fix: seconds between 30 and 3600, "
                        f"e.g. {setting.default('firewall_confirm_timeout')}")
    for key in ("private_address", "front_address"):
        value = target.data.get(key)
        if value is None and key == "front_address":
            continue
        try:
            ipaddress.ip_address(str(value))
        except ValueError:
            problems.append(f"{name}: {key}: {value!r} is not an IP address; fix: the firewall's source sets "
                            "need the address peers come from")
    return problems


def _extra_problems(target: Any) -> list[str]:
    """``firewall_extra_allow``: a list of {group, port, proto, sources, service} rows."""
    name, key = target.name, "firewall_extra_allow"
    example = 'e.g. [{"group": "postgres", "port": 6432, "sources": ["192.0.2.40"], "service": "pgbouncer"}]'
    value = setting(target, key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [f"{name}: {key}: {value!r} is not a list; fix: {example}"]
    problems = []
    for index, row in enumerate(value):
        field_name = f"{key}[{index}]"
        if not isinstance(row, dict) or not {"group", "port", "sources"} <= set(row):
            problems.append(f"{name}: {field_name}: {row!r} needs group, port and sources; fix: {example}")
            continue
        if not isinstance(row["group"], str) or not row["group"]:
            problems.append(f"{name}: {field_name}.group: {row['group']!r}; fix: an inventory group or \"all\"")
        port = row["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{name}: {field_name}.port: {port!r}; fix: a port 1-65535")
        if row.get("proto", "tcp") not in ("tcp", "udp"):
            problems.append(f"{name}: {field_name}.proto: {row.get('proto')!r}; fix: \"tcp\" or \"udp\"")
        sources = row["sources"]
        if not isinstance(sources, (list, tuple)) or isinstance(sources, str) or not sources:
            problems.append(f"{name}: {field_name}.sources: {sources!r}; fix: a non-empty list of addresses or networks")
            continue
        for source in sources:
            try:
                network = ipaddress.ip_network(str(source), strict=False)
            except ValueError:
                problems.append(f"{name}: {field_name}.sources: {source!r} is not an address or network; "
                                "fix: e.g. \"192.0.2.40\"")
                continue
            if network.prefixlen == 0:
                problems.append(f"{name}: {field_name}.sources: {source!r} is everyone; fix: only the front door "
                                "is open to all: list the clients' networks")
    return problems


def fleet_problems(target: Any, members: list[Member]) -> list[str]:
    """Problems only the whole inventory shows, one line each: a ``firewall_extra_allow`` row for a
    group no host is in (a typo would open nothing, silently), and an ``admin_networks`` entry that
    holds an inventory host's address would let that host reach every other host's SSH (a
    compromised tier could hop everywhere), so it must name the admin hosts or a network of
    their own.  ``target`` carries the (global) settings."""
    problems: list[str] = []
    groups = _groups(members) | {"all"}
    for index, row in enumerate(_extra_allow(target)):
        if row.get("group") not in groups:
            problems.append(f"{target.name}: firewall_extra_allow[{index}].group: {row.get('group')!r} has no host; "
                            f"fix: one of {', '.join(sorted(groups))}")
    admin = setting(target, "admin_networks")
    if not isinstance(admin, (list, tuple)):
        return problems
    for value in admin:
        try:
            network = ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            continue  # input_problems reports it
        inside = [m.name for m in members if _in_network(m.address, network)]
        if inside:
            problems.append(f"{target.name}: admin_networks: {value!r} holds {', '.join(inside)}; fix: list the "
                            "admin hosts themselves or a network that holds no inventory host")
    return problems


def _in_network(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False


def inventory_members() -> list[Member]:
    """Every host of the pyinfra inventory (--limit notwithstanding), as the matrix sees it."""
    from pyinfra import inventory

    return members_of(iter(inventory))
