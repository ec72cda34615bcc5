"""Load-balancer layer: nginx in front of the Document Server nodes, a VIP by keepalived.

nginx (Debian 1.22 with the Lua module and lua-resty-redis) terminates TLS and keeps every
document on ONE node: a shard table in Redis (shared by the LBs, so a VRRP failover keeps
it) maps the shard key (``?shardkey=``, else ``?WOPISrc=``, else the ``/doc/<key>/`` path of
editor sockets) to a node.  Why not ``hash $shardkey consistent``: when a node returns, a
plain hash sends its documents back while they are still open on the node they moved to
(two nodes editing one document).  Keyed requests go to the ``ds_shard`` upstream whose
``balancer_by_lua`` always tries the document's node first, then the other nodes in the
document's own rendezvous order (``node_ranking``/``candidate_order`` here mirror the Lua),
other nodes that failed in the last ``lb_fail_timeout`` last; nginx's ``proxy_next_upstream``
decides whether a retry is allowed (never a non-idempotent request already sent).  Only when
the document's node failed in that very request is the table re-pointed to the node that
answered (compare-and-set): a node in the down list is never skipped for the documents it
holds, so one transient error elsewhere cannot open a document on a second node.  Why not per-node upstreams with
the other nodes as ``backup``: nginx spreads requests over backups round-robin, so two
requests for one document during a node failure reached two different nodes (seen in the
DS-host-stop drill).  Requests without a key use ``ds_all`` (least_conn, nginx's own passive
failure detection).  The Lua is templates/loadbalancer/ooha_shard.lua.j2.

Node states (the rollout's drain, ooha/rollout/drain.py mirrors the rule): a Redis hash
``lb_node_state_key`` maps node -> active|draining|out, cached per nginx worker for
``lb_node_state_cache_ms``.  New documents go to the first ACTIVE node of their ranking,
documents on a draining node stay there, entries naming an out node are re-pointed before the
request is routed; retries prefer active nodes and never try an out one.  Requests without a
key stay on ``ds_all`` while every node is active (nginx cannot mark a server down at run time
without its commercial API), and go round-robin over the active nodes through the Lua balancer
while one is not: a node being replaced gets no request at all.

Redis unreachable or slower than ``lb_redis_timeout_ms`` (1500 ms): the rendezvous hash
decides (logged ``shard table unavailable``), for availability.  The trade-off: a document
that had MOVED (its node failed earlier) goes back to its hash node for that request, which
can be a second node while its editors are elsewhere.  Hence a generous timeout (a slow
Redis is not an absent one; 300 ms was exceeded on a loaded 2-core machine): only a Redis
that is really gone, where nothing better is possible, sends documents to the hash.

A broken configuration never goes live: the config, the Lua, the certificate and key are
written to a candidate directory, ``luajit -bl`` compiles the Lua (``nginx -t`` does not
run ``init_by_lua``: a Lua syntax error passes it) and ``nginx -t -c`` checks that tree;
only then are the live files written and nginx
reloaded (not restarted: open editor sockets stay).  keepalived's candidate is checked
with ``keepalived --config-test`` the same way.

keepalived (VRRPv3, unicast between the LBs' front addresses, sub-second adverts) holds
the VIP on one LB; a track script drops it when this LB's nginx stops answering HTTPS.
``nopreempt``: a returning LB does not take the address back (one move per failure).
"""

from __future__ import annotations

import datetime as dt
import json
import io
import ipaddress
import re
import zlib
from pathlib import Path
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, files, systemd

from ooha.ops.candidate import ConfigFile, validated_config
from ooha.contract import CONTRACT_DEFAULTS, peer_address
from ooha.report import CheckResult, poll
from ooha.settings import Settings, secret
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.nginx import (
    FrontDoorProbe, HostAddresses, NginxConfigTest, NginxLogTail, NginxUpstreams, ServiceStates, diagnose_502,
)

NGINX_CONF = "/etc/nginx/nginx.conf"
CONF_DIR = "/etc/nginx/onlyoffice-ha"
CANDIDATE_DIR = "/etc/nginx/onlyoffice-ha-candidate"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
KEEPALIVED_CANDIDATE = "/etc/keepalived/keepalived.conf.candidate"
KEEPALIVED_DROPIN = "/etc/systemd/system/keepalived.service.d/ooha-after-nginx.conf"
KEEPALIVED_AFTER_NGINX = "# Managed by onlyoffice-ha: the track script's first run must find nginx up.\n[Unit]\nAfter=nginx.service\n"
LUA_MODULE = "ooha_shard.lua"

LOADBALANCER_DEFAULTS: dict[str, Any] = {
    # Why a Document Server membership change the scale command did not prepare is intended
    # (e.g. "ds3 lost for good"): the main job then renders the inventory's nodes without
    # refusing. None: such a change is refused (use deploys/scale.py). Pass it with --data.
    "ds_membership_change": None,
    # lua-nginx-redis (lua-resty-redis) pulls Debian's nginx-extras metapackage (only the
    # ndk and lua modules are loaded).  luajit2 compiles the candidate Lua (`nginx -t` does
    # not run init_by_lua, so a Lua syntax error would pass it and fail the reload); it is
    # the OpenResty LuaJIT the module links: Debian's `luajit` conflicts with it.
    "lb_packages": ["nginx", "libnginx-mod-http-lua", "lua-nginx-redis", "keepalived", "curl", "luajit2"],
    # The floating address with its prefix, e.g. "198.18.10.100/24" (required).
    "lb_vip": None,
    # Certificate chain and key on the machine that runs pyinfra (required).
    "lb_tls_certificate": None,
    "lb_tls_key": None,
    "lb_ssl_protocols": "TLSv1.2 TLSv1.3",
    # The VRRP interface; None: the one holding this LB's `front_address` (host data).
    "lb_vrrp_interface": None,
    "lb_vrrp_router_id": 51,
    # VRRPv3 advert interval (s): backup takes over after ~3 adverts (+ skew) of silence.
    "lb_vrrp_advert_int": 0.5,
    # Per-host priority; None: 150 for the first LB in the inventory, 10 less for each next.
    "lb_vrrp_priority": None,
    # The Document Server nodes' HTTP port, ds_http_port, is the documentserver layer's key:
    # read through _value (default in ooha/contract.py), never re-declared here.
    # Passive failure detection: one failure takes a node out for fail_timeout.
    "lb_max_fails": 1,
    "lb_fail_timeout": "10s",
    # A stopped host never answers a SYN: give up soon and try the next node.
    "lb_connect_timeout": "1s",
    # socket.io pings every 25 s with a 20 s timeout: idle sockets must live longer.
    "lb_read_timeout": "75s",
    "lb_next_upstream_tries": 3,
    "lb_next_upstream_timeout": "15s",
    "lb_client_max_body_size": "100m",
    "lb_worker_connections": 4096,
    # Shard table: Redis through the local HAProxy endpoint (follows Sentinel failover),
    # so the port defaults to the endpoints layer's endpoint_redis_port (ooha/contract.py).
    "lb_redis_host": "127.0.0.1",
    "lb_redis_port": CONTRACT_DEFAULTS["endpoint_redis_port"],
    # Per Redis operation.  Past it the Lua falls back to the plain hash, which sends a
    # MOVED document back to its hash node: 300 ms was exceeded on a loaded 2-core machine.
    # A hung Redis costs a keyed request up to ~2 tries x a few operations x this.
    "lb_redis_timeout_ms": 1500,
    "lb_shard_key_prefix": "ooha:shard:",
    "lb_shard_ttl": 86400,
    # Node states (drain, ooha/rollout/drain.py): a Redis hash node -> active|draining|out
    # written by the rollout driver; absent or unknown = active.  Outside the shard prefix, so
    # no document key can name it.
    "lb_node_state_key": "ooha:nodestate",
    # Each nginx worker keeps the hash this long (100..10000 ms): a request pays no extra Redis
    # round trip most of the time; a writer waits twice this before counting on it.
    "lb_node_state_cache_ms": 1000,
    # Seconds the report waits for the VIP election and the front door after a change.
    "lb_settle_seconds": 30,
}

_DURATION = re.compile(r"^\d+(ms|s|m)?$")
_SIZE = re.compile(r"^\d+[kKmMgG]?$")


_value = Settings(LOADBALANCER_DEFAULTS, CONTRACT_DEFAULTS)
"""A data key with this layer's default, else the contract's (ds_http_port): the report runs outside the deploy."""


# --- pure helpers (unit-tested) -----------------------------------------------------------


def node_ranking(names: list[str], key: str) -> list[str]:
    """The order a document's requests try the nodes: rendezvous hashing, as ``M.ranking``.

    crc32("<node>\\0<key>") per node, highest first (inventory order on a tie); nginx's
    ``ngx.crc32_long`` is the same CRC-32.  Removing a node moves only the keys it had.
    """
    scored = sorted(enumerate(names), key=lambda item: (-zlib.crc32(f"{item[1]}\0{key}".encode()), item[0]))
    return [name for _, name in scored]


def hash_node(names: list[str], key: str) -> str:
    """The node a new document goes to: the first of its ranking."""
    return node_ranking(names, key)[0]


def candidate_order(names: list[str], key: str, first: str, down: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The nodes one keyed request tries, in order: ``M.candidates`` of the Lua.

    The table's node ``first`` ALWAYS comes first, even when it failed recently: editors may
    hold sockets on it, and skipping it would open the document on a second node after one
    transient error elsewhere.  ``down`` (nodes that failed within ``lb_fail_timeout``) only
    moves the OTHER nodes to the end; the rest keep the key's rendezvous order.
    """
    others = [name for name in node_ranking(names, key) if name != first]
    return [first] + [n for n in others if n not in down] + [n for n in others if n in down]


def duration_seconds(value: str) -> float:
    """An nginx duration ("10s", "500ms", "1m", "10") in seconds."""
    text = str(value)
    if text.endswith("ms"):
        return int(text[:-2]) / 1000
    if text.endswith("m"):
        return int(text[:-1]) * 60
    return float(text.rstrip("s"))


def lua_string(value: str) -> str:
    """A Lua string literal for any text: printable ASCII kept, everything else ``\\ddd``."""
    out = []
    for byte in str(value).encode():
        char = chr(byte)
        if char.isalnum() or char in " -_.:/@+=,;!#$%&()*<>?[]^{|}~":
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def ds_nodes(port: int) -> list[dict[str, Any]]:
    """The docs group (whole inventory, --limit notwithstanding) as upstream entries."""
    nodes = []
    for target in inventory.get_group("docs"):
        address = peer_address(target)
        nodes.append({
            "name": target.name, "address": address, "port": int(port),
            "lua_name": lua_string(target.name), "lua_host": lua_string(address),
        })
    return nodes


def lb_hosts() -> list[Any]:
    """The lb group, inventory order."""
    return list(inventory.get_group("lb"))


def default_priority(target: Any, group: list[Any]) -> int:
    """150 for the first LB, 10 less for each next (bounded to 1..254)."""
    names = [t.name for t in group]
    index = names.index(target.name) if target.name in names else len(names)
    return max(1, min(254, 150 - 10 * index))


def certificate_problems(cert_path: Any, key_path: Any) -> list[str]:
    """Why a certificate/key pair on the controller cannot be used (empty: it can)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems = []
    if not cert_path or not Path(str(cert_path)).is_file():
        problems.append(f"all: lb_tls_certificate: {cert_path!r} is not a file on this machine; fix: point it at the PEM chain")
    if not key_path or not Path(str(key_path)).is_file():
        problems.append(f"all: lb_tls_key: {key_path!r} is not a file on this machine; fix: point it at the PEM key")
    if problems:
        return problems
    try:
        cert = x509.load_pem_x509_certificate(Path(str(cert_path)).read_bytes())
    except ValueError as exc:
        return [f"all: lb_tls_certificate: not a PEM certificate ({exc}); fix: use the PEM chain, leaf first"]
    try:
        key = serialization.load_pem_private_key(Path(str(key_path)).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        return [f"all: lb_tls_key: not an unencrypted PEM key ({type(exc).__name__}); fix: use the certificate's key, unencrypted"]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, pub) != key.public_key().public_bytes(serialization.Encoding.PEM, pub):
        problems.append("all: lb_tls_key: does not match lb_tls_certificate; fix: use the key the certificate was issued for")
    if cert.not_valid_after_utc <= dt.datetime.now(dt.timezone.utc):
        problems.append(f"all: lb_tls_certificate: expired on {cert.not_valid_after_utc:%Y-%m-%d}; fix: renew it")
    return problems


def node_state_problems(target: Any) -> list[str]:
    """The node-state hash's key and cache: a Redis key the Lua can name, outside the shard prefix."""
    problems = []
    key, prefix = _value(target, "lb_node_state_key"), _value(target, "lb_shard_key_prefix")
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        problems.append(f"all: lb_node_state_key: {key!r}; fix: a non-empty Redis key without spaces, e.g. \"ooha:nodestate\"")
    elif isinstance(prefix, str) and prefix and key.startswith(prefix):
        problems.append(f"all: lb_node_state_key: {key!r} is inside lb_shard_key_prefix {prefix!r} (a document key could "
                        "name it); fix: a key outside the prefix, e.g. \"ooha:nodestate\"")
    cache = _value(target, "lb_node_state_cache_ms")
    if isinstance(cache, bool) or not isinstance(cache, int) or not 100 <= cache <= 10000:
        problems.append(f"all: lb_node_state_cache_ms: {cache!r}; fix: milliseconds between 100 and 10000 (default 1000)")
    return problems


def node_state_settings(target: Any) -> tuple[str, int]:
    """(lb_node_state_key, lb_node_state_cache_ms) as this LB host's Lua uses them (for the rollout driver)."""
    return str(_value(target, "lb_node_state_key")), int(_value(target, "lb_node_state_cache_ms"))


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix."""
    problems: list[str] = []
    vip = _value(target, "lb_vip")
    network = None
    try:
        network = ipaddress.ip_interface(str(vip)).network if vip and "/" in str(vip) else None
    except ValueError:
        pass
    if network is None:
        problems.append(f"all: lb_vip: {vip!r} is not an address with a prefix; fix: e.g. \"198.18.10.100/24\"")
    front = target.data.get("front_address")
    try:
        front_ip = ipaddress.ip_address(str(front))
        if network is not None and front_ip not in network:
            problems.append(f"{target.name}: front_address: {front} is outside the VIP's network {network}; fix: the LB's address on the VIP's segment")
    except ValueError:
        problems.append(f"{target.name}: front_address: {front!r} is not an IP address; fix: set the LB's address on the VIP's segment")
    if len(lb_hosts()) > 1:
        peers = [t.data.get("front_address") for t in lb_hosts() if t.name != target.name]
        if not all(peers):
            problems.append("all: front_address: every lb host needs one (VRRP unicast peers); fix: set it per lb host")
    router_id = _value(target, "lb_vrrp_router_id")
    if not isinstance(router_id, int) or not 1 <= router_id <= 255:
        problems.append(f"all: lb_vrrp_router_id: {router_id!r}; fix: an integer 1..255 unique on the segment")
    advert = _value(target, "lb_vrrp_advert_int")
    if not isinstance(advert, (int, float)) or not 0.01 <= float(advert) <= 40:
        problems.append(f"all: lb_vrrp_advert_int: {advert!r}; fix: seconds between 0.01 and 40 (VRRPv3)")
    priority = target.data.get("lb_vrrp_priority")
    if priority is not None and (not isinstance(priority, int) or not 1 <= priority <= 254):
        problems.append(f"{target.name}: lb_vrrp_priority: {priority!r}; fix: an integer 1..254")
    for key in ("lb_fail_timeout", "lb_connect_timeout", "lb_read_timeout", "lb_next_upstream_timeout"):
        if not _DURATION.match(str(_value(target, key))):
            problems.append(f"all: {key}: {_value(target, key)!r}; fix: an nginx duration such as \"10s\"")
    if not _SIZE.match(str(_value(target, "lb_client_max_body_size"))):
        problems.append(f"all: lb_client_max_body_size: {_value(target, 'lb_client_max_body_size')!r}; fix: e.g. \"100m\"")
    for key in ("lb_max_fails", "lb_next_upstream_tries", "ds_http_port", "lb_redis_port", "lb_shard_ttl", "lb_worker_connections"):
        if not isinstance(_value(target, key), int) or _value(target, key) <= 0:
            problems.append(f"all: {key}: {_value(target, key)!r}; fix: a positive integer")
    problems += node_state_problems(target)
    nodes = ds_nodes(80)
    if not nodes:
        problems.append("docs: group is empty; fix: the load balancers need Document Server hosts")
    for node in nodes:
        try:
            ipaddress.ip_address(node["address"])
        except ValueError:
            problems.append(f"{node['name']}: private_address: {node['address']!r} is not an IP address; fix: set it")
    if not secret(target, "redis_password"):
        problems.append("all: secrets.redis_password: missing; fix: set it in the secrets file (the shard table is in Redis)")
    problems += certificate_problems(_value(target, "lb_tls_certificate"), _value(target, "lb_tls_key"))
    return problems


def nginx_vars(target: Any, conf_dir: str) -> dict[str, Any]:
    """Everything templates/loadbalancer/lb-nginx.conf.j2 and ooha_shard.lua.j2 need, for one directory."""
    prefix = str(_value(target, "lb_shard_key_prefix"))
    return {
        "conf_dir": conf_dir,
        "candidate_dir": CANDIDATE_DIR,
        "nodes": ds_nodes(int(_value(target, "ds_http_port"))),
        "worker_connections": int(_value(target, "lb_worker_connections")),
        "max_fails": int(_value(target, "lb_max_fails")),
        "fail_timeout": str(_value(target, "lb_fail_timeout")),
        "fail_timeout_seconds": duration_seconds(str(_value(target, "lb_fail_timeout"))),
        "connect_timeout": str(_value(target, "lb_connect_timeout")),
        "read_timeout": str(_value(target, "lb_read_timeout")),
        "next_upstream_tries": int(_value(target, "lb_next_upstream_tries")),
        "next_upstream_timeout": str(_value(target, "lb_next_upstream_timeout")),
        "client_max_body_size": str(_value(target, "lb_client_max_body_size")),
        "ssl_protocols": str(_value(target, "lb_ssl_protocols")),
        "key_prefix": prefix,
        "lua_key_prefix": lua_string(prefix),
        "lua_redis_host": lua_string(str(_value(target, "lb_redis_host"))),
        "redis_port": int(_value(target, "lb_redis_port")),
        "lua_redis_password": lua_string(secret(target, "redis_password")),
        "ttl": int(_value(target, "lb_shard_ttl")),
        "redis_timeout_ms": int(_value(target, "lb_redis_timeout_ms")),
        "node_state_key": str(_value(target, "lb_node_state_key")),
        "lua_node_state_key": lua_string(str(_value(target, "lb_node_state_key"))),
        "node_state_cache_ms": int(_value(target, "lb_node_state_cache_ms")),
    }


def keepalived_vars(target: Any, interface: str) -> dict[str, Any]:
    """Everything templates/loadbalancer/keepalived.conf.j2 needs."""
    group = lb_hosts()
    priority = target.data.get("lb_vrrp_priority")
    return {
        "host_name": target.name,
        "instance": "ooha_front",
        "interface": interface,
        "router_id": int(_value(target, "lb_vrrp_router_id")),
        "priority": int(priority) if priority is not None else default_priority(target, group),
        "advert_int": float(_value(target, "lb_vrrp_advert_int")),
        "front_address": str(target.data.get("front_address")),
        "peers": [str(t.data.get("front_address")) for t in group if t.name != target.name],
        "vip": str(_value(target, "lb_vip")),
    }


def interface_of(addresses: list[dict[str, str]], address: str) -> str | None:
    """The interface that holds ``address`` (from the HostAddresses fact)."""
    for entry in addresses:
        if entry["address"].split("/")[0] == address:
            return entry["interface"]
    return None


def vip_url(target: Any, path: str = "/") -> str:
    """https://<VIP><path>."""
    return f"https://{str(_value(target, 'lb_vip')).split('/')[0]}{path}"


# --- validation ---------------------------------------------------------------------------

_VIP_HOLDERS: dict[str, bool] = {}


def check_loadbalancer_once(target: Any) -> CheckResult:
    """nginx and keepalived active, config valid, upstreams = docs group, VIP, front door."""
    states = target.get_fact(ServiceStates)
    down = [unit for unit in ("nginx", "keepalived") if states.get(unit) != "active"]
    if down:
        return CheckResult(False, f"{', '.join(down)} not active", f"rerun the deploy; see `journalctl -u {down[0]}`", final=True)
    test = target.get_fact(NginxConfigTest)
    if not test["ok"]:
        return CheckResult(False, f"nginx -t fails: {test['message']}", "fix the input and rerun the deploy", final=True)
    upstreams = target.get_fact(NginxUpstreams)
    live = sorted(entry["address"] for entry in upstreams.get("ds_all", []))
    wanted = sorted(f"{n['address']}:{n['port']}" for n in ds_nodes(int(_value(target, "ds_http_port"))))
    if live != wanted:
        return CheckResult(False, f"upstream ds_all is {live}, inventory wants {wanted}", "rerun the deploy")
    vip = str(_value(target, "lb_vip")).split("/")[0]
    holds = any(entry["address"].split("/")[0] == vip for entry in target.get_fact(HostAddresses))
    _VIP_HOLDERS[target.name] = holds
    parts = [f"nginx -t ok, upstream {len(live)} node(s)", f"VIP {vip} {'held here' if holds else 'on the other LB (backup)'}"]
    if holds:
        probe = target.get_fact(FrontDoorProbe, url=vip_url(target, "/healthcheck"))
        if probe["status"] != 200 or probe["body"] != "true":
            logs = target.get_fact(NginxLogTail)
            cause = diagnose_502(logs["access"], logs["error"]) if probe["status"] in (0, 502, 503, 504) else ""
            return CheckResult(
                False, "; ".join(parts) + f"; front door /healthcheck answered {probe['status'] or 'nothing'} "
                f"{probe['body'][:40]!r}" + (f"; likely cause: {cause}" if cause else ""),
                "see the documentserver report lines and /var/log/nginx/error.log on this LB",
            )
        parts.append("front door /healthcheck true")
    else:
        probe = target.get_fact(FrontDoorProbe, url=vip_url(target, "/healthcheck"))
        if probe["status"] == 0:
            return CheckResult(False, "; ".join(parts) + "; nothing answers at the VIP (no LB holds it?)",
                               "see `journalctl -u keepalived` on every LB")
    return CheckResult(True, ", ".join(parts))


def check_loadbalancer(target: Any) -> CheckResult:
    """The layer's report line, waiting a bounded time for the VIP election and the nodes."""
    return poll(check_loadbalancer_once, target, float(_value(target, "lb_settle_seconds")))


def front_door_line() -> str:
    """The report's last line: the VIP's URL and which LB holds it."""
    group = lb_hosts()
    if not group:
        return "front door: no load balancer in the inventory"
    url = vip_url(group[0])
    holders = [name for name, holds in _VIP_HOLDERS.items() if holds]
    if not _VIP_HOLDERS:
        return f"front door: {url} (load balancers not checked in this run)"
    if len(holders) == 1:
        return f"front door: {url} (VIP on {holders[0]})"
    if not holders:
        return f"front door: {url} (VIP on no load balancer!)"
    return f"front door: {url} (VIP on {' and '.join(holders)}: split brain!)"


# --- the deploy ---------------------------------------------------------------------------


def membership_guard(target: Any) -> dict[str, dict[str, str]]:
    """Refuse (DeployError, plan time) a DS membership change that deploys/scale.py did not
    prepare (ooha/rollout/scale.py ``membership_problems``); returns this LB's scale markers.

    Why here: the table the LB would render is the inventory's docs group; a node dropped from
    it without a drain loses its open editing sessions, a node added without the join gate may
    be served before it is healthy.  The deployed Lua says which nodes the LB routes to now.
    """
    from ooha.rollout import scale

    live = scale.lua_nodes(target.get_fact(FileContents, path=f"{CONF_DIR}/{LUA_MODULE}"))
    markers = scale.parse_markers(target.get_fact(FileContents, path=scale.MARKER_FILE))
    names = [n["name"] for n in ds_nodes(80)]
    problems = scale.membership_problems(target.name, live, names, markers)
    if problems and target.data.get("ds_membership_change"):
        # A host lost for good cannot be drained or stopped by deploys/scale.py: the operator says why.
        target.noop(f"membership change forced (ds_membership_change): {'; '.join(problems)}")
        return markers
    if problems:
        raise DeployError("Document Server membership:\n" + "\n".join(problems))
    return markers


def prune_scale_markers(markers: dict[str, dict[str, str]]) -> None:
    """After the render: drop the markers of changes this run made (a removed retired node, a
    rendered joining one); a retired node still in the inventory keeps its marker."""
    from ooha.rollout import scale

    if not markers:
        return
    keep = scale.remaining_markers(markers, [n["name"] for n in ds_nodes(80)])
    if keep == markers:
        return
    if keep:
        files.put(name="Scale markers (changes still pending)", src=io.StringIO(json.dumps(keep, sort_keys=True) + "\n"),
                  dest=scale.MARKER_FILE, user="root", group="root", mode="600")
    else:
        files.file(name="Scale markers done", path=scale.MARKER_FILE, present=False)


def _nginx_files() -> list[ConfigFile]:
    """The four files of the nginx tree: each checked under CANDIDATE_DIR, live under CONF_DIR
    (nginx.conf itself live at NGINX_CONF).  The candidate nginx.conf names the candidate files."""
    cert, key = _value(host, "lb_tls_certificate"), _value(host, "lb_tls_key")
    live, candidate = nginx_vars(host, CONF_DIR), nginx_vars(host, CANDIDATE_DIR)
    return [
        ConfigFile(src=str(TEMPLATES / "loadbalancer/lb-nginx.conf.j2"), dest=NGINX_CONF,
                   candidate=f"{CANDIDATE_DIR}/nginx.conf", mode="644", data=live, candidate_data=candidate,
                   jinja_env_kwargs=dict(JINJA)),
        ConfigFile(src=str(TEMPLATES / "loadbalancer/ooha_shard.lua.j2"), dest=f"{CONF_DIR}/{LUA_MODULE}",
                   candidate=f"{CANDIDATE_DIR}/{LUA_MODULE}", group="www-data", mode="640", private=True,
                   data=live, candidate_data=candidate, jinja_env_kwargs=dict(JINJA)),
        ConfigFile(src=str(cert), dest=f"{CONF_DIR}/front.crt", candidate=f"{CANDIDATE_DIR}/front.crt",
                   mode="644", template=False),
        ConfigFile(src=str(key), dest=f"{CONF_DIR}/front.key", candidate=f"{CANDIDATE_DIR}/front.key",
                   mode="600", template=False, private=True),
    ]


@deploy("Load balancer", data_defaults=LOADBALANCER_DEFAULTS)
def loadbalancer() -> None:
    """Converge nginx (TLS, shard routing) and keepalived (VIP) on one LB; keys in LOADBALANCER_DEFAULTS."""
    problems = input_problems(host)
    if problems:
        raise DeployError("Load balancer layer inputs:\n" + "\n".join(problems))
    markers = membership_guard(host)
    apt.packages(name="Install nginx (Lua, lua-resty-redis) and keepalived", packages=list(host.data.lb_packages),
                 no_recommends=True)
    for directory in (CONF_DIR, CANDIDATE_DIR):
        files.directory(name=f"Directory {directory}", path=directory, user="root", group="www-data", mode="750")

    # Candidate tree, luajit -bl + nginx -t -c, live files, reload: ooha/ops/candidate.py.
    # luajit compiles the Lua: nginx -t does not run init_by_lua, so a Lua syntax error passes it.
    rejected = f"{CANDIDATE_DIR}/nginx.conf.rejected"
    validated_config(
        name="nginx configuration", config_files=_nginx_files(),
        validate=f"luajit -bl {CANDIDATE_DIR}/{LUA_MODULE} >/dev/null && nginx -t -q -c {{path}}",
        label="nginx", service="nginx.service", rejected=rejected, hint=f"nginx -t -c {rejected}",
    )
    systemd.service(name="nginx running and enabled", service="nginx.service", running=True, enabled=True)
    prune_scale_markers(markers)

    interface = _value(host, "lb_vrrp_interface") or interface_of(
        host.get_fact(HostAddresses), str(host.data.get("front_address")))
    if not interface:
        raise DeployError(f"{host.name}: front_address: {host.data.get('front_address')} is on no interface of this host; "
                          "fix: set front_address to one of its addresses or set lb_vrrp_interface")
    variables = keepalived_vars(host, interface)
    # Candidate, keepalived --config-test, live file, reload (if running): ooha/ops/candidate.py.
    validated_config(
        name="keepalived configuration",
        config_files=[ConfigFile(src=str(TEMPLATES / "loadbalancer/keepalived.conf.j2"), dest=KEEPALIVED_CONF,
                                 candidate=KEEPALIVED_CANDIDATE, mode="644", data=variables, jinja_env_kwargs=dict(JINJA))],
        validate="keepalived --config-test -f {path}", label="keepalived", service="keepalived.service",
    )
    # At boot keepalived starts after nginx: the track script's first run then finds nginx up,
    # so a restarted LB is a valid backup at once, not in FAULT until the script rises (~4 s).
    ka_order = files.put(
        name="keepalived starts after nginx", src=io.StringIO(KEEPALIVED_AFTER_NGINX), dest=KEEPALIVED_DROPIN,
        user="root", group="root", mode="644",
    )
    systemd.daemon_reload(name="Reload systemd units (keepalived after nginx)", _if=ka_order.did_change)
    systemd.service(name="keepalived running and enabled", service="keepalived.service", running=True, enabled=True)
