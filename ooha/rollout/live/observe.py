"""Observations for the rollout gates: what the DS nodes, the data tier and the LBs say NOW.

Why here and in this form: the gates (``ooha.rollout.gates``) judge plain dataclasses; this
module fills them between waves from the live cluster, through the hosts the pyinfra CLI has
already connected (``remote.run``), with the project's own facts' commands and parsers
(``ooha/facts``: one command and one parser per observation, shared with the deploy and the
report, so the rollout never sees the cluster differently from the validation report).
A fact's command is run as is and its ``process`` parses the output; what the facts do not
have (RepoDigests, connections/edit, the LBs' access log, the served node of an editing
session) is parsed by the small pure functions below, unit-tested on outputs captured in the
lab.

Every observation that cannot be made is ``None`` (or ``False`` for the synthetic session):
the gates refuse on ``None``; nothing here raises for a failing host or command.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

from pyinfra.api import StringCommand

from ooha.contract import CONTRACT_DEFAULTS, peer_address
from ooha.facts.documentserver import CONTAINER, DsContainer, DsHttp, DsVersion, parse_json_line
from ooha.facts.etcd import EtcdClusterHealth
from ooha.facts.patroni import PatroniCluster
from ooha.facts.pgbackrest import PgBackRestInfo
from ooha.facts.rabbitmq import RabbitmqClusterStatus
from ooha.facts.redis import SentinelPrimaryByAddress
from ooha.layers.documentserver import DS_DEFAULTS, base_url, command_token
from ooha.layers.pgbackrest import BACKUP_DEFAULTS
from ooha.layers.rabbitmq import node_name as rabbit_node_name
from ooha.rollout.drain import first_sight_node
from ooha.rollout.gates import ClusterView, EtcdMember, PatroniMember, RabbitView
from ooha.rollout.live.remote import quote, run
from ooha.rollout.plan import NodeView
from ooha.rollout.release import DIGEST_RE, ImageRef
from ooha.settings import secret, setting

ACCESS_LOG = "/var/log/nginx/access.log"
"""The LBs' access log (templates/loadbalancer/lb-nginx.conf.j2, log_format ``ooha``)."""
CONNECTIONS_URL = "http://localhost:8000/internal/connections/edit"
"""Open editing connections of one node, asked inside its container (docservice's port)."""
PGBACKREST_TIMEOUT_S = 45
"""pgbackrest info's own bound (an unreachable S3 endpoint retries for minutes)."""
PROBE_PREFIX = "ooha-rollout-probe"
"""Shard keys of synthetic sessions start with this (recognisable in the LB logs and the shard table)."""


# --- running facts through remote.run --------------------------------------------------------


def fact_command(fact: Any, **arguments: Any) -> str:
    """The shell text of ``fact``'s command (a ``StringCommand`` unmasked, or a plain string)."""
    command = fact.command(**arguments)
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


def read_fact(host: Any, fact_class: type, *, stdin: str | None = None, timeout: int = 30, **arguments: Any) -> Any:
    """Run one of the project's facts on a connected host and parse its output with the fact.

    None when the command failed or timed out (the facts' commands end in ``|| true``, so a
    failure here is the host, the connection or the timeout: unobservable).
    """
    fact = fact_class()
    result = run(host, fact_command(fact, **arguments), stdin=stdin, timeout=timeout)
    if not result.ok:
        return None
    return fact.process(result.stdout.splitlines())


def _group(inventory: Any, name: str) -> list[Any]:
    """An inventory group's hosts, [] when the inventory has no such group."""
    return list(inventory.get_group(name, default=[]))


# --- Document Server nodes ---------------------------------------------------------------------


def split_image_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag or None, digest or None); a registry port is not a tag.

    >>> split_image_reference("198.18.20.10:5000/onlyoffice/documentserver-ee:9.3.0.1")
    ('198.18.20.10:5000/onlyoffice/documentserver-ee', '9.3.0.1', None)
    """
    name, _, digest = reference.strip().partition("@")
    repo, tag = name, None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        repo, tag = name[:colon], name[colon + 1:]
    return repo, tag or None, digest or None


def parse_repo_digests(text: str) -> list[str]:
    """``docker image inspect -f '{{json .RepoDigests}}'`` -> the list (``[]`` for anything else)."""
    value = parse_json_line(text.splitlines())
    return [str(v) for v in value] if isinstance(value, list) else []


def running_image(container: dict[str, Any] | None, repo_digests: Iterable[str] = ()) -> ImageRef | None:
    """What a node runs, from DsContainer's value and its image's RepoDigests.

    None when there is no container, it is not running, or its reference has no tag (the
    deploy always pins one).  The digest is the reference's own (``ds_image_digest`` set) or
    the RepoDigest of the same repository: the manifest the running image was pulled as, which
    is what "runs this digest" must mean (a tag moved since then does not change it).
    """
    if not container or not container.get("running") or not container.get("image"):
        return None
    repo, tag, digest = split_image_reference(str(container["image"]))
    if not tag:
        return None
    if digest is None:
        for entry in repo_digests:
            entry_repo, _, entry_digest = entry.partition("@")
            if entry_repo == repo and DIGEST_RE.match(entry_digest):
                digest = entry_digest
                break
    if digest is not None and not DIGEST_RE.match(digest):
        digest = None
    return ImageRef(repo, tag, digest)


def parse_sessions(text: str) -> int | None:
    """connections/edit's body -> the count; None when it is not a plain non-negative number."""
    value = text.strip()
    return int(value) if value.isdigit() else None


def healthcheck_answer(http: dict[str, Any] | None) -> str | None:
    """DsHttp's value of /healthcheck -> its body on HTTP 200, ``"HTTP <code>"`` on another
    status (so a gate line shows a 502), None when nothing answered."""
    if not http or not http.get("status"):
        return None
    if http["status"] != 200:
        return f"HTTP {http['status']}"
    return str(http.get("body", "")).strip()


def version_answer(answer: dict[str, Any] | None) -> str | None:
    """DsVersion's value -> the version string when the command service accepted the token."""
    if not isinstance(answer, dict) or answer.get("error") != 0 or not answer.get("version"):
        return None
    return str(answer["version"])


def _running(ds_host: Any) -> ImageRef | None:
    container = read_fact(ds_host, DsContainer, container=CONTAINER, env_keys=())
    if not container or not container.get("running"):
        return None
    digests: list[str] = []
    if container.get("image_id"):
        found = run(ds_host, f"docker image inspect -f '{{{{json .RepoDigests}}}}' {quote(container['image_id'])}", timeout=30)
        digests = parse_repo_digests(found.stdout) if found.ok else []
    return running_image(container, digests)


def _sessions(ds_host: Any) -> int | None:
    answer = run(ds_host, f"docker exec {quote(CONTAINER)} curl -sf -m 5 {quote(CONNECTIONS_URL)}", timeout=30)
    return parse_sessions(answer.stdout) if answer.ok else None


def _healthcheck(ds_host: Any) -> str | None:
    return healthcheck_answer(read_fact(ds_host, DsHttp, url=f"{base_url(ds_host)}/healthcheck"))


def _version(ds_host: Any) -> str | None:
    """POST /command version with a JWT signed here; the header goes on stdin (never an argv)."""
    jwt_secret = secret(ds_host, "jwt_secret")
    if not jwt_secret:
        return None
    token = command_token(jwt_secret, {"payload": {"c": "version"}})
    header = f"{setting(ds_host, 'ds_jwt_header', DS_DEFAULTS)}: Bearer {token}\n"
    return version_answer(read_fact(ds_host, DsVersion, stdin=header, url=f"{base_url(ds_host)}/command"))


def node_view(ds_host: Any, az: str, lb_state: str = "active") -> NodeView:
    """One DS node as the planner and the preflight see it: running image, open editing
    sessions (None: connections/edit did not answer a number), /healthcheck true."""
    return NodeView(
        name=ds_host.name,
        az=az,
        running=_running(ds_host),
        sessions=_sessions(ds_host),
        healthy=_healthcheck(ds_host) == "true",
        lb_state=lb_state,
    )


def node_health(ds_host: Any) -> tuple[ImageRef | None, str | None, str | None]:
    """(running image, /healthcheck answer, version the command service answers with the
    cluster's JWT): the three inputs of ``gates.health_gate`` and of a soak sample."""
    return _running(ds_host), _healthcheck(ds_host), _version(ds_host)


# --- the data tier -------------------------------------------------------------------------------


def patroni_members(view: dict[str, Any] | None) -> tuple[PatroniMember, ...] | None:
    """PatroniCluster's value -> the gate's members.

    Roles: Patroni's leader/master/standby_leader -> ``leader``, ``sync_standby``, else
    ``replica``.  A standby counts as ``streaming`` when Patroni says so or, for Patroni
    versions that report ``running`` for replicas, when the leader lists it as streaming in
    pg_stat_replication (the fact's ``streaming``).
    """
    if not view or not view.get("members"):
        return None
    members = []
    for m in view["members"]:
        role = m.get("role")
        role = "leader" if role in ("leader", "master", "standby_leader") else ("sync_standby" if role == "sync_standby" else "replica")
        state = str(m.get("state") or "")
        if role != "leader" and m.get("streaming") and state in ("running", "streaming"):
            state = "streaming"
        members.append(PatroniMember(str(m["name"]), role, state, m.get("lag") if isinstance(m.get("lag"), int) else None))
    return tuple(members)


def etcd_members(view: dict[str, Any] | None) -> tuple[EtcdMember, ...] | None:
    """EtcdClusterHealth's value -> one EtcdMember per listed member, healthy when one of its
    client URLs answered ``endpoint health`` (a member never started has none: unhealthy)."""
    if not view or not view.get("members"):
        return None
    healthy = {e["endpoint"] for e in view.get("endpoints") or [] if e.get("healthy")}
    return tuple(
        EtcdMember(m.get("name") or m.get("id") or "?", any(url in healthy for url in m.get("client_urls") or []))
        for m in view["members"]
    )


def rabbit_view(expected: list[str], status: dict[str, Any] | None) -> RabbitView | None:
    """RabbitmqClusterStatus's value -> the gate's view (partitions as ``node: peers`` strings)."""
    if status is None:
        return None
    partitions = tuple(f"{node}: {', '.join(peers)}" for node, peers in sorted((status.get("partitions") or {}).items()))
    return RabbitView(tuple(expected), tuple(status.get("running_nodes") or ()), partitions, tuple(status.get("alarms") or ()))


def newest_backup_end(info: dict[str, Any] | None) -> float | None:
    """PgBackRestInfo's value -> the stop time (epoch s) of the newest backup without error."""
    if not info:
        return None
    stops = [b["stop"] for b in info.get("backups") or [] if isinstance(b.get("stop"), (int, float)) and not b.get("error")]
    return float(max(stops)) if stops else None


def _first(hosts: list[Any], observe: Any) -> Any:
    """The first host's answer that is not None (a member down must not blind the gate)."""
    for target in hosts:
        value = observe(target)
        if value is not None:
            return value
    return None


def _patroni(inventory: Any) -> tuple[PatroniMember, ...] | None:
    def ask(target: Any) -> Any:
        port = int(setting(target, "patroni_rest_port", CONTRACT_DEFAULTS))
        return patroni_members(read_fact(target, PatroniCluster, address="127.0.0.1", port=port))
    return _first(_group(inventory, "postgres"), ask)


def _etcd(inventory: Any) -> tuple[EtcdMember, ...] | None:
    def ask(target: Any) -> Any:
        port = int(setting(target, "etcd_client_port", CONTRACT_DEFAULTS))
        return etcd_members(read_fact(target, EtcdClusterHealth, address=peer_address(target), port=port))
    return _first(_group(inventory, "etcd"), ask)


def _sentinels(inventory: Any) -> dict[str, str | None] | None:
    """Each redis host's own Sentinel, asked on that host (through the root-only wrapper that
    holds the password): {host: primary address or None}."""
    views: dict[str, str | None] = {}
    for target in _group(inventory, "redis"):
        master = str(setting(target, "redis_master_name", CONTRACT_DEFAULTS))
        address = peer_address(target)
        answer = read_fact(target, SentinelPrimaryByAddress, addresses=[address], master=master)
        views[target.name] = (answer or {}).get(address)
    return views or None


def _rabbitmq(inventory: Any) -> RabbitView | None:
    hosts = _group(inventory, "rabbitmq")
    expected = [rabbit_node_name(h.name) for h in hosts]
    return _first(hosts, lambda target: rabbit_view(expected, read_fact(target, RabbitmqClusterStatus, timeout=40)))


def _backup(inventory: Any) -> float | None:
    def ask(target: Any) -> Any:
        stanza = str(setting(target, "pgbackrest_stanza", BACKUP_DEFAULTS))
        info = read_fact(target, PgBackRestInfo, stanza=stanza, timeout=PGBACKREST_TIMEOUT_S + 15)
        return newest_backup_end(info)
    return _first(_group(inventory, "postgres"), ask)


def cluster_view(inventory: Any) -> ClusterView:
    """One look at the data tier for ``gates.preflight`` (a part that cannot be seen is None).

    Patroni and etcd from the first member that answers; every Sentinel on its own host;
    RabbitMQ's running nodes, partitions and alarms from the first node that answers against
    the inventory's rabbitmq group; the newest pgBackRest backup from the first PostgreSQL
    host whose ``pgbackrest info`` lists one.
    """
    return ClusterView(
        patroni=_patroni(inventory),
        etcd=_etcd(inventory),
        sentinels=_sentinels(inventory),
        rabbitmq=_rabbitmq(inventory),
        newest_backup_end=_backup(inventory),
    )


# --- the load balancers' view of one node ---------------------------------------------------------


def count_upstream_tries(lines: Any, address: str) -> tuple[int, int]:
    """(tries sent to ``address``, failed ones) in nginx access-log lines of format ``ooha``.

    Each request's ``upstream="a, b"`` and ``ustatus="502, 200"`` list its tries in order
    (``, `` between tries, `` : `` between internal redirects).  A try naming ``address`` is
    a request to the node; it failed when its status is >= 500 or nginx went on to another
    try after it (within one location: a redirect is not a failure).  Self-contained (no module globals): its source also runs on the LB.
    """
    import re as _re

    field = _re.compile(r'\b(upstream|ustatus)="([^"]*)"')
    requests = errors = 0
    for line in lines:
        found = dict(field.findall(line))
        if address not in found.get("upstream", ""):
            continue
        status_groups = found.get("ustatus", "").split(" : ")
        for group, peer_group in enumerate(found["upstream"].split(" : ")):
            peers = peer_group.split(", ")
            statuses = status_groups[group].split(", ") if group < len(status_groups) else []
            for index, peer in enumerate(peers):
                if peer.strip() != address:
                    continue
                requests += 1
                status = statuses[index].strip() if index < len(statuses) else "-"
                if (status.isdigit() and int(status) >= 500) or index < len(peers) - 1:
                    errors += 1
    return requests, errors


_COUNT_SCRIPT = (
    "from __future__ import annotations\n"
    + inspect.getsource(count_upstream_tries)
    + "\nimport sys\nprint('%d %d' % count_upstream_tries(sys.stdin, sys.argv[1]))\n"
)


def parse_counts(text: str) -> tuple[int, int] | None:
    """The LB script's ``<requests> <errors>`` line -> a tuple (None for anything else)."""
    parts = text.strip().split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def node_upstream(inventory: Any, node: str) -> str:
    """``address:port`` the LBs use for DS node ``node`` (ooha.layers.loadbalancer.ds_nodes)."""
    target = inventory.get_host(node)
    return f"{peer_address(target)}:{int(setting(target, 'ds_http_port', CONTRACT_DEFAULTS))}"


def lb_counters(lb_hosts: list[Any], node: str) -> dict[str, tuple[int, int]]:
    """Per LB: (requests, upstream errors) to ``node`` so far in its current access log.

    Counted on the LB (grep prefilters, the same ``count_upstream_tries`` counts), so only two
    numbers cross the network.  An LB that cannot be read is left out of the dict: the
    driver sees no traffic for it rather than a made-up zero.  A log rotation resets the
    counts (see ``counter_delta``).
    """
    if not lb_hosts:
        return {}
    address = node_upstream(lb_hosts[0].inventory, node)
    command = (f"{{ grep -F -- {quote(address)} {ACCESS_LOG} 2>/dev/null || true; }} | "
               f"python3 -c {quote(_COUNT_SCRIPT)} {quote(address)}")
    counters: dict[str, tuple[int, int]] = {}
    for lb in lb_hosts:
        result = run(lb, command, timeout=60)
        counts = parse_counts(result.stdout) if result.ok else None
        if counts is not None:
            counters[lb.name] = counts
    return counters


def counter_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple[dict[str, int], dict[str, int]]:
    """(requests, errors) per LB between two ``lb_counters`` readings, for a ``SoakSample``.

    A count that went down means the log was rotated in between: the later reading alone is
    then what happened since (an undercount, never a negative rate).  An LB missing from
    either reading is left out.
    """
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    for lb, (req_after, err_after) in after.items():
        if lb not in before:
            continue
        req_before, err_before = before[lb]
        if req_after < req_before or err_after < err_before:
            requests[lb], errors[lb] = req_after, err_after
        else:
            requests[lb], errors[lb] = req_after - req_before, err_after - err_before
    return requests, errors


# --- a synthetic editing session through the front door -------------------------------------------


def probe_key(node: str, nodes: list[str], states: dict[str, str], tries: int = 20000) -> str | None:
    """A fresh shard key whose first sight lands on ``node`` under ``states`` (the LB Lua's rule,
    mirrored by ``drain.first_sight_node``); None when no key can (the node is not active)."""
    stem = f"{PROBE_PREFIX}-{re.sub(r'[^A-Za-z0-9_-]', '_', node)}-{time.time_ns()}"
    for i in range(tries):
        key = f"{stem}-{i}"
        if first_sight_node(nodes, key, states) == node:
            return key
    return None


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def websocket_accept(client_key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to ``client_key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1((client_key + _WS_GUID).encode()).digest()).decode()


def parse_upgrade_response(head: bytes) -> tuple[int, dict[str, str]]:
    """An HTTP response head -> (status code, lower-cased headers); (0, {}) if it is not HTTP."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2) if lines else []
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return 0, {}
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def served_node(first_message: str | None, headers: dict[str, str], key: str) -> str | None:
    """Which node served an editing session: the ``X-Ooha-Node`` response header when the LB
    sets one, else the lab stand-in's welcome ``{"type": "welcome", "node", "key"}`` for THIS
    key; None when neither tells (e.g. the real image's engine.io open packet)."""
    if headers.get("x-ooha-node"):
        return headers["x-ooha-node"]
    try:
        message = json.loads(first_message or "")
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "welcome" and message.get("key") == key and message.get("node"):
        return str(message["node"])
    return None


def _recv_exact(sock: Any, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def _read_text_message(sock: Any) -> str:
    """The first text message (RFC 6455 frames, fragments joined, pings skipped)."""
    parts: list[bytes] = []
    while True:
        first, second = _recv_exact(sock, 2)
        fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
        if length == 126:
            length = int.from_bytes(_recv_exact(sock, 2), "big")
        elif length == 127:
            length = int.from_bytes(_recv_exact(sock, 8), "big")
        mask = _recv_exact(sock, 4) if second & 0x80 else b""
        payload = _recv_exact(sock, length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x8:
            raise ConnectionError("closed by the server before a message")
        if opcode in (0x9, 0xA):
            continue
        parts.append(payload)
        if fin:
            return b"".join(parts).decode("utf-8", "replace")


def _close_frame() -> bytes:
    """A masked close frame, status 1000 (a client's frames must be masked)."""
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_editing_session(front_door: str, key: str, ca_file: str | None, timeout: float = 10) -> tuple[int, dict[str, str], str | None]:
    """Open an editor websocket for document ``key`` under ``/doc/<key>/c/`` (as the editors do,
    with ``?shardkey=``), read the first message and close it again at once (a synthetic session
    left open would hold up the next drain).  (HTTP status, headers, first text message or None).

    ``front_door``: ``https://vip[:port]`` (the default scheme), or ``http://...`` for a plain one.
    TLS is verified against ``ca_file`` (None: the system's trust store).  Stdlib only: this runs
    on the operator's controller, where the test-only websockets package is not a dependency.
    """
    url = urlsplit(front_door if "://" in front_door else f"https://{front_door}")
    secure = url.scheme in ("https", "wss")
    host = url.hostname or ""
    port = url.port or (443 if secure else 80)
    quoted = url_quote(key, safe="")
    path = f"/doc/{quoted}/c/?shardkey={quoted}&EIO=4&transport=websocket"
    client_key = base64.b64encode(os.urandom(16)).decode()
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        sock: Any = raw
        if secure:
            context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
            sock = context.wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        host_header = host if url.port is None else f"{host}:{port}"
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {client_key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
            if len(head) > 65536:
                break
        status, headers = parse_upgrade_response(head.split(b"\r\n\r\n", 1)[0])
        if status != 101 or headers.get("sec-websocket-accept") != websocket_accept(client_key):
            return status, headers, None
        rest = head.split(b"\r\n\r\n", 1)[1]
        message = _read_text_message(_Buffered(sock, rest))
        try:
            sock.sendall(_close_frame())
        except OSError:
            pass
        return status, headers, message
    finally:
        raw.close()


class _Buffered:
    """A socket whose first bytes were already read with the HTTP head."""

    def __init__(self, sock: Any, pending: bytes) -> None:
        self.sock, self.pending = sock, pending

    def recv(self, count: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:count], self.pending[count:]
            return data
        return self.sock.recv(count)


def synthetic_session_detail(front_door: str, node: str, nodes: list[str], states: dict[str, str],
                             ca_file: str | None, timeout: float = 10) -> tuple[bool, str]:
    """``synthetic_session`` with the reason, for the journal and the progress line."""
    key = probe_key(node, nodes, states)
    if key is None:
        return False, f"no new document can land on {node} (state {states.get(node, 'active')}): it must be active"
    try:
        status, headers, message = open_editing_session(front_door, key, ca_file, timeout)
    except (OSError, ValueError) as error:
        return False, f"editing session {key} through {front_door}: {type(error).__name__}: {error}"
    if status != 101 or message is None:
        return False, f"editing session {key} through {front_door}: HTTP {status or 'no answer'}, not a websocket"
    served = served_node(message, headers, key)
    if served is None:
        return False, f"editing session {key} opened but nothing tells which node served it"
    if served != node:
        return False, f"editing session {key} opened on {served}, want {node}"
    return True, f"editing session {key} opened on {node}"


def synthetic_session(front_door: str, node: str, nodes: list[str], states: dict[str, str],
                      ca_file: str | None, timeout: float = 10) -> bool:
    """From the controller: does a NEW document whose first sight is ``node`` open an editing
    session through the front door on ``node``?  False on any failure (the soak gate refuses)."""
    return synthetic_session_detail(front_door, node, nodes, states, ca_file, timeout)[0]


__all__ = [
    "cluster_view", "counter_delta", "lb_counters", "node_health", "node_view", "synthetic_session",
    "synthetic_session_detail",
]
