"""Parsers of ooha/rollout/live/observe.py on outputs captured in the lab, and its plumbing over fake hosts.

The CAPTURED_* texts are what the commands printed on the lab (2026-12, stand-in 9.3.0.1,
Patroni 3.0.2, etcd 3.4, RabbitMQ 3.10, pgBackRest 2.45); RabbitMQ's answer is cut to the
keys the parser reads.  Access-log lines with several tries are the real format with the
try lists nginx documents for ``$upstream_addr``/``$upstream_status`` (the lab's logs had
no failover at capture time).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from ooha.facts.documentserver import DsContainer
from ooha.facts.etcd import EtcdClusterHealth
from ooha.facts.patroni import PatroniCluster
from ooha.facts.pgbackrest import PgBackRestInfo
from ooha.facts.rabbitmq import RabbitmqClusterStatus
from ooha.facts.redis import SentinelPrimaryByAddress
from ooha.rollout import gates
from ooha.rollout.drain import first_sight_node
from ooha.rollout.live import observe as O
from ooha.rollout.release import ImageRef

DIGEST = "sha256:05014aeda9b5c6f2865eff1bf63a34237339fe831fd57df62e050e3e06f69849"
REPO = "198.18.20.10:5000/onlyoffice/documentserver-ee"

CAPTURED_CONTAINER = (
    '{"env_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "hostname": "ds1", '
    '"id": "d77aa241f64ce3bc172bc07a0819503cf3f1a0b7767cc42203614b7d7b71f9cb", '
    '"image": "198.18.20.10:5000/onlyoffice/documentserver-ee:9.3.0.1", '
    '"image_id": "sha256:34c39b4f41a52bfe4680d951937667b92cc9f52fcf09c9f50b8d2eeedd3955a0", '
    '"labels": {"ooha.deploy.layer": "documentserver", "ooha.ds.version": "9.3.0.1"}, "memory": 0, "mounts": [], '
    '"nano_cpus": 0, "ports": ["198.18.1.21:80->80/tcp"], "restart_policy": "unless-stopped", "running": true, '
    '"started_at": "2026-12-05T12:36:04.086734484Z", "status": "running"}'
)
CAPTURED_REPO_DIGESTS = f'["{REPO}@{DIGEST}"]'
CAPTURED_PATRONI = json.dumps({
    "cluster": {"members": [
        {"name": "data1", "role": "sync_standby", "state": "running", "api_url": "http://198.18.1.31:8008/patroni",
         "host": "198.18.1.31", "port": 5432, "timeline": 1, "lag": 0},
        {"name": "data2", "role": "replica", "state": "running", "api_url": "http://198.18.2.31:8008/patroni",
         "host": "198.18.2.31", "port": 5432, "timeline": 1, "lag": 0},
        {"name": "data3", "role": "leader", "state": "running", "api_url": "http://198.18.3.31:8008/patroni",
         "host": "198.18.3.31", "port": 5432, "timeline": 1}]},
    "local": {"state": "running", "role": "replica", "sync_standby": True, "timeline": 1,
              "patroni": {"version": "3.0.2", "scope": "onlyoffice"}},
    "status": {
        "data1": {"state": "running", "role": "replica", "timeline": 1},
        "data2": {"state": "running", "role": "replica", "timeline": 1},
        "data3": {"state": "running", "role": "master", "timeline": 1, "replication": [
            {"usename": "replicator", "application_name": "data1", "client_addr": "198.18.1.31", "state": "streaming",
             "sync_state": "sync", "sync_priority": 1},
            {"usename": "replicator", "application_name": "data2", "client_addr": "198.18.2.31", "state": "streaming",
             "sync_state": "async", "sync_priority": 0}]}},
})
CAPTURED_ETCD = """[{"endpoint":"https://198.18.3.31:2379","health":true,"took":"6.692306ms"},{"endpoint":"https://198.18.2.31:2379","health":true,"took":"4.54468ms"},{"endpoint":"https://198.18.1.31:2379","health":true,"took":"17.417202ms"}]

----onlyoffice-ha-etcd-members----
{"header":{"cluster_id":7331520205021423652,"member_id":695479401628137644,"raft_term":2},"members":[{"ID":695479401628137644,"name":"data1","peerURLs":["https://198.18.1.31:2380"],"clientURLs":["https://198.18.1.31:2379"]},{"ID":1446285616484916496,"name":"data2","peerURLs":["https://198.18.2.31:2380"],"clientURLs":["https://198.18.2.31:2379"]},{"ID":5419688841426334668,"name":"data3","peerURLs":["https://198.18.3.31:2380"],"clientURLs":["https://198.18.3.31:2379"]}]}"""
CAPTURED_SENTINEL = "=== ooha 198.18.1.31\n198.18.1.31\n6379"
CAPTURED_RABBIT = ('{"alarms": [], "cluster_name": "rabbit@data1", "disk_nodes": ["rabbit@data1", "rabbit@data2", '
                   '"rabbit@data3"], "partitions": {}, "ram_nodes": [], "running_nodes": ["rabbit@data3", "rabbit@data2", '
                   '"rabbit@data1"]}')
CAPTURED_PGBACKREST = (
    '[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000008","min":"000000010000000000000006"}],'
    '"backup":[{"archive":{"start":"000000010000000000000008","stop":"000000010000000000000008"},"backrest":{"format":5,"version":"2.45"},'
    '"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":53204254,"repository":{"delta":10641168,"size":10641168},'
    '"size":53204254},"label":"20261205-123652F","lsn":{"start":"0/8000028","stop":"0/8000138"},"prior":null,"reference":null,'
    '"timestamp":{"start":1796474212,"stop":1796474226},"type":"full"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,'
    '"system-id":7715795756219620923,"version":"15"}],"name":"onlyoffice","repo":[{"cipher":"aes-256-cbc","key":1,'
    '"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]'
)
CAPTURED_ACCESS = [
    '198.18.10.12 [2026-12-05T12:37:08+00:00] "GET /healthcheck HTTP/2.0" 200 4 shard="" node= upstream="198.18.1.21:80" '
    'ustatus="200" rt=0.183 urt="0.183" uct="0.046"',
    '198.18.10.11 [2026-12-05T12:37:08+00:00] "GET /healthcheck HTTP/2.0" 200 4 shard="" node= upstream="198.18.2.21:80" '
    'ustatus="200" rt=0.302 urt="0.302" uct="0.001"',
    '198.18.10.1 [2026-12-05T12:38:57+00:00] "GET /doc/ooha-rollout-probe-ds1-1796474337295314702-2/c/?shardkey='
    'ooha-rollout-probe-ds1-1796474337295314702-2&EIO=4&transport=websocket HTTP/1.1" 101 132 '
    'shard="ooha-rollout-probe-ds1-1796474337295314702-2" node=ds1 upstream="198.18.1.21:80" ustatus="101" rt=0.023 '
    'urt="0.021" uct="0.000"',
]
RETRIES = [
    # ds1 refused, ds2 answered: one failed try for ds1, one good one for ds2.
    '198.18.10.1 [t] "GET /doc/k1/c/?EIO=4 HTTP/1.1" 101 132 shard="k1" node=ds1 upstream="198.18.1.21:80, 198.18.2.21:80" '
    'ustatus="502, 101" rt=0.02 urt="0.001, 0.019" uct="-, 0.000"',
    # the node answered 503 and nginx went on (http_503 is in proxy_next_upstream), the last try timed out.
    '198.18.10.1 [t] "GET /x?shardkey=k2 HTTP/2.0" 504 0 shard="k2" node=ds2 upstream="198.18.2.21:80, 198.18.1.21:80" '
    'ustatus="503, 504" rt=3 urt="0.1, 3" uct="0.0, 0.0"',
    # a POST the node answered 502 (never retried), and a request routed elsewhere.
    '198.18.10.1 [t] "POST /example/?shardkey=k3 HTTP/2.0" 502 150 shard="k3" node=ds1 upstream="198.18.1.21:80" ustatus="502" rt=0.01 urt="0.01" uct="0.0"',
    '198.18.10.1 [t] "GET /x HTTP/2.0" 200 1 shard="" node= upstream="198.18.3.21:80" ustatus="200" rt=0.01 urt="0.01" uct="0.0"',
    # an internal redirect (" : ") and a client gone before the answer ("-": not the node's fault).
    '198.18.10.1 [t] "GET /y HTTP/2.0" 200 1 shard="" node= upstream="198.18.1.21:80 : 198.18.1.21:80" ustatus="302 : 200" rt=0 urt="0 : 0" uct="0 : 0"',
    '198.18.10.1 [t] "GET /z HTTP/2.0" 499 0 shard="" node= upstream="198.18.1.21:80" ustatus="-" rt=9 urt="-" uct="-"',
    # ds_all with every server failed: no address, nothing to count.
    '198.18.10.1 [t] "GET /healthcheck HTTP/2.0" 502 150 shard="" node= upstream="ds_all" ustatus="502" rt=0 urt="0" uct="-"',
]
WELCOME = ('{"type": "welcome", "node": "ds2", "key": "ooha-rollout-probe-ds2-1796474466656832660-0", '
           '"version": "9.3.0.1", "edition": "ee"}')


# --- Document Server nodes ------------------------------------------------------------------


def test_split_image_reference() -> None:
    assert O.split_image_reference(f"{REPO}:9.3.0.1") == (REPO, "9.3.0.1", None)
    assert O.split_image_reference(f"{REPO}:9.3.0.1@{DIGEST}") == (REPO, "9.3.0.1", DIGEST)
    assert O.split_image_reference(REPO) == (REPO, None, None)  # the registry's port is no tag
    assert O.split_image_reference("onlyoffice/documentserver-ee") == ("onlyoffice/documentserver-ee", None, None)


def test_running_image_from_captured_inspect() -> None:
    container = DsContainer().process(CAPTURED_CONTAINER.splitlines())
    digests = O.parse_repo_digests(CAPTURED_REPO_DIGESTS)
    assert O.running_image(container, digests) == ImageRef(REPO, "9.3.0.1", DIGEST)
    # no RepoDigests (an image loaded, not pulled): no digest, never a made-up one
    assert O.running_image(container, []) == ImageRef(REPO, "9.3.0.1", None)
    # a digest of another repository is not this image's
    assert O.running_image(container, [f"other/repo@{DIGEST}"]).digest is None
    # the reference's own digest (ds_image_digest set) wins
    pinned = dict(container, image=f"{REPO}:9.3.0.1@sha256:{'a' * 64}")
    assert O.running_image(pinned, digests).digest == f"sha256:{'a' * 64}"


def test_running_image_none_when_not_running_or_untagged() -> None:
    container = DsContainer().process(CAPTURED_CONTAINER.splitlines())
    assert O.running_image(None) is None
    assert O.running_image(dict(container, running=False, status="exited")) is None
    assert O.running_image(dict(container, image=REPO)) is None
    assert O.parse_repo_digests("Error: No such image") == []


def test_sessions_health_version() -> None:
    assert O.parse_sessions("0") == 0 and O.parse_sessions("12\n") == 12
    assert O.parse_sessions("") is None and O.parse_sessions("<html>502</html>") is None and O.parse_sessions("-1") is None
    assert O.healthcheck_answer({"status": 200, "body": "true"}) == "true"
    assert O.healthcheck_answer({"status": 200, "body": "false"}) == "false"
    assert O.healthcheck_answer({"status": 502, "body": "<html>"}) == "HTTP 502"
    assert O.healthcheck_answer({"status": 0, "body": ""}) is None
    assert O.version_answer({"error": 0, "version": "9.3.0.1"}) == "9.3.0.1"
    assert O.version_answer({"error": 6}) is None and O.version_answer(None) is None


# --- data tier ------------------------------------------------------------------------------


def test_patroni_members_from_captured_cluster() -> None:
    members = O.patroni_members(PatroniCluster().process(CAPTURED_PATRONI.splitlines()))
    by_name = {m.name: m for m in members}
    assert by_name["data3"] == gates.PatroniMember("data3", "leader", "running", 0)
    # Patroni 3.0.2 says "running" for replicas: the leader's pg_stat_replication says streaming
    assert by_name["data1"] == gates.PatroniMember("data1", "sync_standby", "streaming", 0)
    assert by_name["data2"].role == "replica" and by_name["data2"].state == "streaming"
    assert gates.patroni_gate(members, 16 * 1024 * 1024).ok


def test_patroni_sync_standby_not_streaming_fails_the_gate() -> None:
    raw = json.loads(CAPTURED_PATRONI)
    raw["status"]["data3"]["replication"] = [r for r in raw["status"]["data3"]["replication"] if r["application_name"] != "data1"]
    members = O.patroni_members(PatroniCluster().process([json.dumps(raw)]))
    assert {m.name: m.state for m in members}["data1"] == "running"
    assert not gates.patroni_gate(members, 16 * 1024 * 1024).ok
    assert O.patroni_members(None) is None
    assert O.patroni_members(PatroniCluster().process([""])) is None


def test_etcd_members_from_captured_health() -> None:
    members = O.etcd_members(EtcdClusterHealth().process(CAPTURED_ETCD.splitlines()))
    assert members == tuple(gates.EtcdMember(n, True) for n in ("data1", "data2", "data3"))
    down = CAPTURED_ETCD.replace('{"endpoint":"https://198.18.2.31:2379","health":true',
                                 '{"endpoint":"https://198.18.2.31:2379","health":false,"error":"context deadline exceeded"')
    members = O.etcd_members(EtcdClusterHealth().process(down.splitlines()))
    assert [m.healthy for m in members] == [True, False, True]
    assert gates.etcd_gate(members).ok  # 2 of 3
    # the health command printed nothing (timed out): every member unhealthy, no quorum
    blind = "\n" + CAPTURED_ETCD.split("\n", 1)[1]
    assert not gates.etcd_gate(O.etcd_members(EtcdClusterHealth().process(blind.splitlines()))).ok
    assert O.etcd_members(None) is None


def test_sentinel_rabbit_backup_from_captured_outputs() -> None:
    assert SentinelPrimaryByAddress().process(CAPTURED_SENTINEL.splitlines()) == {"198.18.1.31": "198.18.1.31"}
    expected = ["rabbit@data1", "rabbit@data2", "rabbit@data3"]
    view = O.rabbit_view(expected, RabbitmqClusterStatus().process(CAPTURED_RABBIT.splitlines()))
    assert view == gates.RabbitView(tuple(expected), ("rabbit@data1", "rabbit@data2", "rabbit@data3"), (), ())
    assert gates.rabbitmq_gate(view).ok
    split = json.loads(CAPTURED_RABBIT)
    split.update(running_nodes=["rabbit@data1"], partitions={"rabbit@data1": ["rabbit@data2", "rabbit@data3"]},
                 alarms=[{"node": "rabbit@data1", "type": "disk_limit"}])
    view = O.rabbit_view(expected, RabbitmqClusterStatus().process([json.dumps(split)]))
    assert view.partitions == ("rabbit@data1: rabbit@data2, rabbit@data3",) and view.alarms == ("rabbit@data1: disk_limit",)
    assert len(gates.rabbitmq_gate(view).problems) == 3
    assert O.rabbit_view(expected, None) is None
    info = PgBackRestInfo().process(CAPTURED_PGBACKREST.splitlines())
    assert O.newest_backup_end(info) == 1796474226.0
    failed = dict(info, backups=[dict(b, error=True) for b in info["backups"]])
    assert O.newest_backup_end(failed) is None and O.newest_backup_end(None) is None


# --- LB access logs --------------------------------------------------------------------------


def test_count_upstream_tries() -> None:
    assert O.count_upstream_tries(CAPTURED_ACCESS, "198.18.1.21:80") == (2, 0)
    assert O.count_upstream_tries(CAPTURED_ACCESS, "198.18.2.21:80") == (1, 0)
    # ds1: k1 failed try, k2 last try 504, POST 502, redirect twice ok, client gone ok
    assert O.count_upstream_tries(RETRIES, "198.18.1.21:80") == (6, 3)
    # ds2: k1 good try, k2 503 then nginx went on
    assert O.count_upstream_tries(RETRIES, "198.18.2.21:80") == (2, 1)
    # an address that is a prefix of another is not that other
    assert O.count_upstream_tries(RETRIES, "198.18.1.2:80") == (0, 0)


def test_count_script_runs_on_a_bare_python() -> None:
    """The LB runs the function's own source with python3 -I: same numbers, nothing imported from here."""
    lines = "\n".join(CAPTURED_ACCESS + RETRIES) + "\n"
    done = subprocess.run([sys.executable, "-I", "-c", O._COUNT_SCRIPT, "198.18.1.21:80"], input=lines,
                          capture_output=True, text=True, timeout=30, check=True)
    assert O.parse_counts(done.stdout) == (8, 3)
    assert O.parse_counts("") is None and O.parse_counts("Traceback") is None


def test_counter_delta() -> None:
    before = {"lb1": (10, 1), "lb2": (5, 0)}
    after = {"lb1": (25, 2), "lb2": (2, 0), "lb3": (9, 9)}
    requests, errors = O.counter_delta(before, after)
    assert requests == {"lb1": 15, "lb2": 2} and errors == {"lb1": 1, "lb2": 0}  # lb2 rotated; lb3 new


# --- synthetic session -----------------------------------------------------------------------


NODES = ["ds1", "ds2", "ds3"]


def test_probe_key_follows_first_sight_with_states() -> None:
    for node in NODES:
        key = O.probe_key(node, NODES, {})
        assert key.startswith(f"{O.PROBE_PREFIX}-{node}-") and first_sight_node(NODES, key, {}) == node
    states = {"ds1": "draining", "ds3": "out"}
    assert first_sight_node(NODES, O.probe_key("ds2", NODES, states), states) == "ds2"
    assert O.probe_key("ds1", NODES, states) is None


def test_websocket_handshake_helpers() -> None:
    assert O.websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example
    status, headers = O.parse_upgrade_response(
        b"HTTP/1.1 101 Switching Protocols\r\nServer: nginx\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: GXrz0YruvXdvzPnefM1zI611HdA=")
    assert status == 101 and headers["sec-websocket-accept"] == "GXrz0YruvXdvzPnefM1zI611HdA="
    assert O.parse_upgrade_response(b"garbage") == (0, {})
    key = "ooha-rollout-probe-ds2-1796474466656832660-0"
    assert O.served_node(WELCOME, {}, key) == "ds2"
    assert O.served_node(WELCOME, {}, "another-key") is None
    assert O.served_node('0{"sid":"x","upgrades":[],"pingInterval":25000}', {}, key) is None  # real engine.io
    assert O.served_node("0{}", {"x-ooha-node": "ds3"}, key) == "ds3"


class _FakeEditorServer:
    """A one-shot websocket server on loopback: answers the handshake, sends ``message`` split
    in two fragments after a ping, and records what the client sent after it."""

    def __init__(self, node: str = "ds2", status: int = 101) -> None:
        self.node, self.status = node, status
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            request = head.decode()
            key = next(line.split(":", 1)[1].strip() for line in request.split("\r\n") if line.lower().startswith("sec-websocket-key"))
            doc = request.split(" ")[1].split("/")[2]
            if self.status != 101:
                conn.sendall(f"HTTP/1.1 {self.status} Nope\r\nContent-Length: 0\r\n\r\n".encode())
                return
            text = json.dumps({"type": "welcome", "node": self.node, "key": doc}).encode()
            frames = bytes([0x89, 0]) + bytes([0x01, 10]) + text[:10] + bytes([0x80, 126]) + len(text[10:]).to_bytes(2, "big") + text[10:]
            conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Accept: {O.websocket_accept(key)}\r\n\r\n".encode() + frames)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
            except OSError:
                pass


def test_open_editing_session_against_a_loopback_server() -> None:
    server = _FakeEditorServer("ds2")
    ok, why = O.synthetic_session_detail(f"http://127.0.0.1:{server.port}", "ds2", NODES, {}, None, timeout=5)
    server.thread.join(5)
    assert ok, why
    assert server.received[:1] == b"\x88" and server.received[1] & 0x80  # a masked close frame: the session ended


@pytest.mark.parametrize("node,status,want", [("ds1", 101, "opened on ds1, want ds2"), ("ds2", 503, "HTTP 503")])
def test_synthetic_session_says_why_it_failed(node: str, status: int, want: str) -> None:
    server = _FakeEditorServer(node, status)
    ok, why = O.synthetic_session_detail(f"http://127.0.0.1:{server.port}", "ds2", NODES, {}, None, timeout=5)
    server.thread.join(5)
    assert not ok and want in why


def test_synthetic_session_false_when_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    assert O.synthetic_session(f"http://127.0.0.1:{port}", "ds2", NODES, {}, None, timeout=2) is False


# --- plumbing over fake connected hosts -------------------------------------------------------


class FakeHost:
    """A connected pyinfra Host as remote.run uses it: answers a command by the first matching needle."""

    def __init__(self, name: str, answers: dict[str, str], data: dict[str, Any] | None = None, inventory: Any = None) -> None:
        self.name, self.answers, self.inventory = name, answers, inventory
        self.data = data or {"private_address": f"198.18.0.{len(name)}"}
        self.commands: list[str] = []

    def run_shell_command(self, command: Any, **_: Any) -> tuple[bool, Any]:
        text = command.get_raw_value()
        self.commands.append(text)
        for needle, stdout in self.answers.items():
            if needle in text:
                if stdout is None:
                    return False, SimpleNamespace(stdout_lines=[], stderr_lines=["ChannelException"])
                return True, SimpleNamespace(stdout_lines=stdout.splitlines(), stderr_lines=[])
        return True, SimpleNamespace(stdout_lines=[], stderr_lines=[])


class FakeInventory:
    def __init__(self, groups: dict[str, list[FakeHost]]) -> None:
        self.groups = groups

    def get_group(self, name: str, default: Any = None) -> list[FakeHost]:
        return self.groups.get(name, default)

    def get_host(self, name: str) -> FakeHost:
        return next(h for hosts in self.groups.values() for h in hosts if h.name == name)


def _ds_host(sessions: str | None = "0", health: str = "true\n200") -> FakeHost:
    return FakeHost("ds1", {
        "docker inspect --type container": CAPTURED_CONTAINER,
        "RepoDigests": CAPTURED_REPO_DIGESTS,
        "connections/edit": sessions,
        "/healthcheck": health,
        "/command": '{"error":0,"version":"9.3.0.1"}',
    }, {"private_address": "198.18.1.21", "secrets": {"jwt_secret": "s3cret"}})


def test_node_view_and_health_over_a_fake_host() -> None:
    host = _ds_host()
    view = O.node_view(host, "az1")
    assert view == O.NodeView("ds1", "az1", ImageRef(REPO, "9.3.0.1", DIGEST), 0, True, "active")
    assert O.node_health(host) == (ImageRef(REPO, "9.3.0.1", DIGEST), "true", "9.3.0.1")
    assert not any("s3cret" in c or "Bearer" in c for c in host.commands)  # the JWT went on stdin
    sick = O.node_view(_ds_host(sessions=None, health="false\n200"), "az1", "draining")
    assert sick.sessions is None and not sick.healthy and sick.lb_state == "draining"


def test_cluster_view_asks_the_next_member_when_one_is_blind() -> None:
    blind = FakeHost("data1", {"": None}, {"private_address": "198.18.1.31"})
    answers = {
        "/cluster": CAPTURED_PATRONI, "endpoint health": CAPTURED_ETCD, "get-master-addr-by-name": CAPTURED_SENTINEL,
        "cluster_status": CAPTURED_RABBIT, "pgbackrest": CAPTURED_PGBACKREST,
    }
    good = FakeHost("data2", answers, {"private_address": "198.18.1.31"})
    inventory = FakeInventory({g: [blind, good] for g in ("postgres", "etcd", "redis", "rabbitmq")})
    view = O.cluster_view(inventory)
    assert view.patroni is not None and view.etcd is not None and view.rabbitmq is not None
    assert view.sentinels == {"data1": None, "data2": "198.18.1.31"}  # every Sentinel on its own host
    assert view.rabbitmq.expected == ("rabbit@data1", "rabbit@data2")
    assert view.newest_backup_end == 1796474226.0
    empty = O.cluster_view(FakeInventory({}))
    assert empty == gates.ClusterView(None, None, None, None, None)


def test_lb_counters_over_fake_hosts() -> None:
    inventory = FakeInventory({"docs": [FakeHost("ds1", {}, {"private_address": "198.18.1.21"})]})
    lb1 = FakeHost("lb1", {"access.log": "7 1"}, inventory=inventory)
    lb2 = FakeHost("lb2", {"access.log": None}, inventory=inventory)
    assert O.lb_counters([lb1, lb2], "ds1") == {"lb1": (7, 1)}
    assert "198.18.1.21:80" in lb1.commands[0]
    assert O.lb_counters([], "ds1") == {}
