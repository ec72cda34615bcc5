"""Workloads and probes that the lab tests and the benchmarks share, on top of lab/client.py.

A drill (tests/integration) and a benchmark (benchmarks/) break the same thing under the
same client loop: the drill asserts on the outcome, the benchmark prints the figures.  The
loops and probes live here so that neither imports the other:

* PostgreSQL: ``PgWriter``, a client on a Document Server host writing numbered rows through
  the stable endpoint (HAProxy 127.0.0.1:5432), and who leads (``cluster_view``,
  ``wait_healthy``).  Each row is one ``psql`` run, i.e. a new connection: a client that
  reconnects after an error, as Document Server's pool does.  A row counts as acknowledged
  only when psql exited 0 after COMMIT (synchronous mode: a standby has it too).
* Redis: ``Writer``, a client on this machine SETting numbered keys through Sentinel
  discovery (redis-py, like Document Server's ioredis with ``sentinels``), and
  ``primary_loss``, one stop of the primary's host measured from that client.
* Front door: GETs through the VIP (``get``), who holds it (``vip_holder``), a request
  ``Loop`` and ``vip_move``, one stop of the LB holding the VIP measured from that loop.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from redis.sentinel import Sentinel

from lab.client import address_of, hosts_in, lab_cli, put_private_file, secrets, ssh, wait_for

# --- PostgreSQL -----------------------------------------------------------------------------

DATA_HOSTS = ("data1", "data2", "data3")
TABLE = "ooha_drill_rows"


def cluster_view(lab: dict[str, Any], hosts: tuple[str, ...] = DATA_HOSTS) -> dict[str, Any] | None:
    """Patroni's /cluster from the first of ``hosts`` that answers, plus each member's own role."""
    from ooha.facts.patroni import _CLUSTER_SCRIPT, parse_patroni_cluster

    for name in hosts:
        try:
            rc, out = ssh(lab, name, f"python3 -c {shlex.quote(_CLUSTER_SCRIPT)} http://127.0.0.1:8008", timeout=20)
        except Exception:  # noqa: BLE001  (a stopped host: ask the next one)
            continue
        view = parse_patroni_cluster(out.strip().splitlines()[-1] if out.strip() else "")
        if rc == 0 and view is not None:
            return view
    return None


def healthy(view: dict[str, Any] | None, members: int = 3) -> bool:
    """One leader, every other member streaming with a known lag, a sync standby, one timeline.

    Right after a failover a streaming replica can still report the previous timeline for a
    few Patroni loops; a settled cluster has every member on the leader's timeline.
    """
    if not view or not view["leader"] or len(view["primaries"]) != 1 or len(view["members"]) != members:
        return False
    if len({m.get("timeline") for m in view["members"]}) != 1:
        return False
    replicas = [m for m in view["members"] if m["name"] != view["leader"]]
    return all(m["streaming"] and m["state"] == "running" and m["lag"] is not None for m in replicas) \
        and bool(view["sync_standbys"])


def wait_healthy(lab: dict[str, Any], deadline: float = 180) -> dict[str, Any]:
    return wait_for("a healthy Patroni cluster", lambda: v if healthy(v := cluster_view(lab)) else None, deadline)


@dataclass
class PgWriter:
    """The writer loop on ``host``; ``start`` it, break something, ``stop`` it, read ``acked``."""

    lab: dict[str, Any]
    host: str = "ds1"
    address: str = "127.0.0.1"
    port: int = 5432
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def _log(self) -> str:
        return f"/tmp/ooha-pgwriter-{self.run}.log"

    @property
    def _stop(self) -> str:
        return f"/tmp/ooha-pgwriter-{self.run}.stop"

    def _psql(self, sql: str, timeout: int = 10) -> str:
        return (f"PGPASSFILE=$HOME/.ooha-pgpass PGCONNECT_TIMEOUT=2 timeout {timeout} psql -h {self.address} "
                f"-p {self.port} -U onlyoffice -d onlyoffice -XAtq -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}")

    def prepare(self, password: str) -> None:
        """The client's password file (0600) and the drill table."""
        put_private_file(self.lab, self.host, ".ooha-pgpass", f"*:*:onlyoffice:onlyoffice:{password}\n")
        sql = f"create table if not exists {TABLE} (run text, id int, at timestamptz default now(), primary key (run, id))"
        rc, out = ssh(self.lab, self.host, self._psql(sql, timeout=20), timeout=40)
        assert rc == 0, out

    def start(self, max_seconds: int = 300) -> None:
        """Start the loop in the background on the host; it stops by itself after max_seconds."""
        # Double quotes so the shell expands $i (run is hex: nothing else to expand).
        insert = self._psql("X", timeout=5).replace("-c X", f"-c \"insert into {TABLE} (run, id) values ('{self.run}', $i)\"")
        loop = (
            f"i=0; end=$((SECONDS+{int(max_seconds)})); "
            f"while [ $SECONDS -lt $end ] && [ ! -e {self._stop} ]; do i=$((i+1)); "
            f"if {insert} >/dev/null 2>&1; then echo \"ok $i $(date +%s.%N)\"; "
            f"else echo \"fail $i $(date +%s.%N)\"; sleep 0.1; fi; done; echo done"
        )
        rc, out = ssh(self.lab, self.host, f"nohup bash -c {shlex.quote(loop)} > {self._log} 2>&1 < /dev/null &")
        assert rc == 0, out

    def events(self) -> list[tuple[str, int, float]]:
        """(ok|fail, id, unix time) lines so far."""
        rc, out = ssh(self.lab, self.host, f"cat {self._log} 2>/dev/null || true")
        events = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("ok", "fail"):
                events.append((parts[0], int(parts[1]), float(parts[2])))
        return events

    def acked(self) -> list[int]:
        return [i for kind, i, _ in self.events() if kind == "ok"]

    def acked_after(self, when: float) -> int:
        """How many rows were acknowledged after unix time ``when``."""
        return sum(1 for kind, _, at in self.events() if kind == "ok" and at > when)

    def stop(self, deadline: float = 30) -> list[tuple[str, int, float]]:
        """Stop the loop and return its events."""
        ssh(self.lab, self.host, f"touch {self._stop}")
        wait_for("the writer loop to end", lambda: ssh(self.lab, self.host, f"tail -n1 {self._log}")[1].strip() == "done", deadline)
        return self.events()

    def present(self) -> set[int]:
        """Ids of this run present in the database (read through the endpoint, from the leader)."""
        rc, out = ssh(self.lab, self.host, self._psql(f"select id from {TABLE} where run = '{self.run}'", timeout=20), timeout=40)
        assert rc == 0, out
        return {int(x) for x in out.split()}

    def cleanup(self) -> None:
        ssh(self.lab, self.host, f"touch {self._stop}; rm -f {self._log}")


def unavailability_window(events: list[tuple[str, int, float]], since: float) -> float:
    """Seconds between the last acknowledged write before ``since`` and the first one after
    the first failure that follows it (0 when no write failed)."""
    before = [at for kind, _, at in events if kind == "ok" and at <= since]
    start = before[-1] if before else since
    fails = [at for kind, _, at in events if kind == "fail" and at >= start]
    if not fails:
        # No error seen: the longest gap between two acknowledgements after `since`.
        oks = [start] + [at for kind, _, at in events if kind == "ok" and at > start]
        return max((b - a for a, b in zip(oks, oks[1:])), default=0.0)
    after = [at for kind, _, at in events if kind == "ok" and at > fails[0]]
    return (after[0] if after else fails[-1]) - start


def leader_psql(lab: dict[str, Any], host: str, sql: str) -> tuple[int, str]:
    """Run SQL as the local superuser on a data host (peer auth through the socket)."""
    cmd = f"echo {shlex.quote(sql)} | sudo -u postgres timeout 10 psql -h /var/run/postgresql -d onlyoffice -XAtq -v ON_ERROR_STOP=1"
    return ssh(lab, host, cmd, timeout=30)


def dumps(view: Any) -> str:
    return json.dumps(view, indent=1, default=str)


# --- Redis ----------------------------------------------------------------------------------

MASTER = "onlyoffice"
SENTINEL_PORT = 26379
WRITE_INTERVAL = 0.05
"""Seconds between two writes of the client loop: its write rate, not a wait for a condition."""


def redis_hosts(state: dict[str, Any]) -> dict[str, str]:
    """``{address: host name}`` of the lab's redis hosts."""
    return {h["address"]: h["name"] for h in state["hosts"] if "redis" in (h.get("roles") or [])}


def sentinel_primary(state: dict[str, Any]) -> str:
    """The primary's address as the Sentinels name it now (redis-py's discovery)."""
    return sentinel_client(state).discover_master(MASTER)[0]


def sentinel_client(state: dict[str, Any]) -> Sentinel:
    """redis-py's Sentinel over the three Sentinels, with short timeouts (a dead host must not stall)."""
    pw = secrets(state)
    return Sentinel(
        [(address, SENTINEL_PORT) for address in redis_hosts(state)],
        sentinel_kwargs={"password": pw["redis_sentinel_password"], "socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        password=pw["redis_password"],
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


def direct(state: dict[str, Any], address: str) -> redis.Redis:
    """A plain client to one Redis (for role checks), short timeouts."""
    return redis.Redis(host=address, port=6379, password=secrets(state)["redis_password"],
                       socket_timeout=1, socket_connect_timeout=1)


def role_of(state: dict[str, Any], address: str) -> dict[str, Any] | None:
    """INFO replication of one Redis, or None if it does not answer."""
    try:
        return direct(state, address).info("replication")
    except redis.RedisError:
        return None


def sentinels_primary(state: dict[str, Any], only: list[str] | None = None) -> set[str]:
    """The primaries the answering Sentinels name (only those at ``only`` if given)."""
    pw = secrets(state)["redis_sentinel_password"]
    named = set()
    for address in only or list(redis_hosts(state)):
        try:
            client = redis.Redis(host=address, port=SENTINEL_PORT, password=pw, socket_timeout=1, socket_connect_timeout=1)
            answer = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
        except redis.RedisError:
            continue
        if answer:
            named.add(answer[0].decode() if isinstance(answer[0], bytes) else answer[0])
    return named


@dataclass
class Writer:
    """A client loop SETting numbered keys through Sentinel discovery, in a thread."""

    state: dict[str, Any]
    prefix: str
    acked: list[tuple[int, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Writer":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        client = sentinel_client(self.state).master_for(MASTER, socket_timeout=0.5, socket_connect_timeout=0.5)
        number = 0
        while not self._stop.is_set():
            number += 1
            try:
                client.set(f"{self.prefix}:{number}", number)
                self.acked.append((number, time.monotonic()))
            except redis.RedisError as exc:
                self.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:120]))
            time.sleep(WRITE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def acked_since(self, moment: float) -> int:
        return sum(1 for _, t in list(self.acked) if t > moment)

    def longest_gap(self, after: float = 0.0) -> float:
        """Longest time between two consecutive acknowledged writes (client-side unavailability)."""
        times = [t for _, t in self.acked]
        gaps = [b - a for a, b in zip(times, times[1:]) if b > after]
        return max(gaps, default=0.0)

    def lost(self) -> list[int]:
        """Acknowledged numbers whose key is missing on the current primary."""
        client = sentinel_client(self.state).master_for(MASTER, socket_timeout=2, socket_connect_timeout=2)
        numbers = [n for n, _ in self.acked]
        missing = []
        for start in range(0, len(numbers), 500):
            chunk = numbers[start:start + 500]
            values = client.mget([f"{self.prefix}:{n}" for n in chunk])
            missing += [n for n, v in zip(chunk, values) if v is None]
        return missing


@dataclass
class FailoverRun:
    old: str
    new: str
    window: float
    acked: int
    lost: int
    rejoin_seconds: float


def primary_loss(state: dict[str, Any], label: str) -> FailoverRun:
    """Stop the primary's host under a write loop, measure, start it again and wait for it to rejoin."""
    names = redis_hosts(state)
    old = sentinel_client(state).discover_master(MASTER)[0]
    writer = Writer(state, f"bench:{label}:{int(time.time())}").start()
    stopped = False
    try:
        wait_for("writes before the failure", lambda: len(writer.acked) >= 20, 30, interval=0.2)
        stop_at = time.monotonic()
        lab_cli("stop", names[old], timeout=300, check=True)
        stopped = True
        new = wait_for("Sentinels promote a replica",
                       lambda: next(iter(sentinels_primary(state, [a for a in names if a != old]) - {old}), None), 60,
                       interval=0.2)
        wait_for("writes continue on the new primary", lambda: writer.acked_since(stop_at) >= 40, 60, interval=0.2)
        writer.stop()
        window = writer.longest_gap(after=stop_at)
        lost = writer.lost()
        started = time.monotonic()
        lab_cli("start", names[old], timeout=300, check=True)
        stopped = False
        wait_for(f"{names[old]} rejoins as a replica of {names[new]}",
                 lambda: (info := role_of(state, old)) and info.get("role") == "slave"
                 and info.get("master_host") == new and info.get("master_link_status") == "up",
                 120, interval=0.2)
        return FailoverRun(names[old], names[new], window, len(writer.acked), len(lost), time.monotonic() - started)
    finally:
        writer.stop()
        if stopped:
            lab_cli("start", names[old], timeout=300, check=True)


# --- the front door -------------------------------------------------------------------------

REQUEST_INTERVAL = 0.05
"""Seconds between two requests of the client loop: its request rate, not a wait for a condition."""


def vip(state: dict[str, Any]) -> str:
    """The floating address (without prefix) from the lab's state."""
    return state["front"]["vip"].split("/")[0]


def get(state: dict[str, Any], path: str, timeout: float = 2.0) -> requests.Response:
    """GET https://VIP<path>, verified with the lab CA, on a new connection (no proxy from the env)."""
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"https://{vip(state)}{path}", verify=state["ca_cert"], timeout=timeout)


def vip_holder(state: dict[str, Any]) -> str | None:
    """The LB whose interfaces hold the VIP (docker exec: works whatever the network does)."""
    import docker

    client = docker.from_env(version="auto")
    holders = []
    for name in hosts_in(state, "lb"):
        container = next(h["container"] for h in state["hosts"] if h["name"] == name)
        try:
            out = client.containers.get(container).exec_run(["ip", "-o", "addr", "show"]).output.decode()
        except Exception:  # a stopped host holds nothing
            continue
        if f" {vip(state)}/" in out:
            holders.append(name)
    return holders[0] if len(holders) == 1 else None


def node_healthy(state: dict[str, Any], node: str) -> bool:
    """The node's own /healthcheck (bypassing the LBs) says true."""
    try:
        with requests.Session() as session:
            session.trust_env = False
            return session.get(f"http://{address_of(state, node)}/healthcheck", timeout=2).text.strip() == "true"
    except requests.RequestException:
        return False


def key_for(node: str, nodes: list[str], prefix: str) -> str:
    """A fresh shard key whose hash names ``node`` (so a new document lands there)."""
    from ooha.layers.loadbalancer import hash_node  # the LBs' own hash (imported when used)

    for i in range(10000):
        key = f"{prefix}-{time.time_ns()}-{i}"
        if hash_node(nodes, key) == node:
            return key
    raise RuntimeError(f"no key hashes to {node}")


@dataclass
class Loop:
    """A bounded request loop in a thread: counts answers and failures, keeps the longest gap."""

    state: dict[str, Any]
    paths: list[str]
    timeout: float = 1.0
    ok: int = 0
    failed: int = 0
    answered_false: int = 0
    """HTTP 200 with body ``false``: a node reporting itself sick (e.g. while it shuts down)."""
    failures: list[str] = field(default_factory=list)
    gap: float = 0.0
    failed_at: list[float] = field(default_factory=list)
    """time.time() when each failed request was sent (the first 20): which job step it met."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        last_ok = time.monotonic()
        i = 0
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            sent = time.time()
            try:
                response = get(self.state, path, timeout=self.timeout)
                good = response.status_code == 200
                if good and response.text.strip() == "false":
                    self.answered_false += 1
                detail = f"{path}: {response.status_code} {response.text[:60]!r}"
            except requests.RequestException as exc:
                good, detail = False, f"{path}: {type(exc).__name__}"
            now = time.monotonic()
            if good:
                self.ok += 1
                self.gap = max(self.gap, now - last_ok)
                last_ok = now
            else:
                self.failed += 1
                if len(self.failures) < 20:
                    self.failures.append(detail)
                    self.failed_at.append(sent)
            self._stop.wait(REQUEST_INTERVAL)

    def __enter__(self) -> "Loop":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


def vip_move(state: dict[str, Any]) -> tuple[float, str, str]:
    """Stop the LB holding the VIP under a request loop; (gap s, old holder, new holder).

    The stopped LB is started again before returning (in a finally).
    """
    holder = wait_for("one LB holding the VIP", lambda: vip_holder(state), 30, interval=0.5, tolerate=(Exception,))
    new = None
    try:
        with Loop(state, ["/healthcheck"]) as loop:
            wait_for("requests answered before the stop", lambda: loop.ok >= 5, 10, interval=0.1, tolerate=(Exception,))
            lab_cli("stop", holder, timeout=300, check=True)
            new = wait_for("the VIP on another LB", lambda: (h := vip_holder(state)) and h != holder and h, 30,
                           interval=0.5, tolerate=(Exception,))
            answered = loop.ok
            wait_for("requests answered after the move", lambda: loop.ok >= answered + 10, 30, interval=0.1,
                     tolerate=(Exception,))
        return loop.gap, holder, new
    finally:
        lab_cli("start", holder, timeout=300, check=True)
        wait_for("the front door after the restart", lambda: get(state, "/healthcheck").status_code == 200, 60,
                 interval=0.5, tolerate=(Exception,))


# --- Editing sessions -------------------------------------------------------------------------


def editor_session(state: dict[str, Any], key: str, shardkey: bool = True, timeout: float = 10) -> tuple[Any, str]:
    """Open an editor websocket for document ``key`` through the VIP (lab CA verified).

    Returns the open connection and the node named in the server's welcome message.
    ``shardkey=False`` leaves the query argument out (routing by the /doc/<key>/ path).
    """
    import ssl

    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=state["ca_cert"])
    # websockets' sync client over TLS 1.3 stalls ~1 in 100 handshakes for 60 s on this machine
    # (the request never reaches nginx; raw upgrades through the LBs never stall): a client
    # race, not the front door's. TLS 1.2 showed 0 stalls in 200 sessions.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    query = f"?shardkey={key}&EIO=4&transport=websocket" if shardkey else "?EIO=4&transport=websocket"
    url = f"wss://{vip(state)}/doc/{key}/c/{query}"
    try:
        ws = connect(url, ssl=context, proxy=None, open_timeout=timeout)
    except TimeoutError:
        # An editor reconnects when its socket does not open; so does this client, once,
        # saying so (seen rarely on the shared 2-core test machine, never twice in a row).
        print(f"\nsession {key}: handshake timed out after {timeout} s, reconnecting once")
        ws = connect(url, ssl=context, proxy=None, open_timeout=timeout)
    welcome = json.loads(ws.recv(timeout=timeout))
    if welcome.get("type") != "welcome" or welcome.get("key") != key:
        ws.close()
        raise RuntimeError(f"unexpected welcome for {key}: {welcome}")
    return ws, str(welcome["node"])



def hold_session(ws: Any, hold: float, release: threading.Event | None = None) -> float | None:
    """Keep an editor's socket open ``hold`` seconds, pinged every second, then close it; the
    seconds after which it died (cut under the editor), or None when it lived to its own end.
    ``release`` (optional): once set, the editor closes the document at its next ping (its own
    end, sooner: a drill ends its sessions at a moment of the job it watches)."""
    end = time.monotonic() + hold
    try:
        while time.monotonic() < end and not (release is not None and release.is_set()):
            time.sleep(1)  # the editor's pace, not a wait for a condition
            try:
                alive = ws.ping().wait(5)
            except Exception:
                alive = False
            if not alive:
                return hold - (end - time.monotonic())
        return None
    finally:
        try:
            ws.close()
        except Exception:
            pass


@dataclass
class SessionChurn:
    """Editors coming and going through the front door, as during a working day.

    Every ``every`` seconds a new document is opened (a fresh shard key: the load balancers
    place it on an active node), held ``hold`` seconds while pinged every second, then
    closed.  ``cut`` counts sessions whose socket died before their own end: what a rollout
    must keep at 0 when ``ds_drain_seconds`` is longer than ``hold``.
    """

    state: dict[str, Any]
    hold: float = 8.0
    every: float = 1.5
    opened: int = 0
    failed_open: int = 0
    cut: int = 0
    by_node: dict[str, int] = field(default_factory=dict)
    opened_at: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic() when it opened, node): which node took new documents when."""
    cut_at: list[tuple[float, str]] = field(default_factory=list)
    """(time.time() when it died, node) of every cut session: which job step cut it."""
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, key: str) -> None:
        try:
            ws, node = editor_session(self.state, key)
        except Exception as exc:
            with self._lock:
                self.failed_open += 1
                self.failures.append(f"open {key}: {type(exc).__name__}: {exc}"[:200])
            return
        with self._lock:
            self.opened += 1
            self.by_node[node] = self.by_node.get(node, 0) + 1
            self.opened_at.append((time.monotonic(), node))
        died = hold_session(ws, self.hold)
        if died is not None:
            with self._lock:
                self.cut += 1
                self.cut_at.append((time.time(), node))
                self.failures.append(f"cut {key} on {node} after {died:.1f} s")

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            thread = threading.Thread(target=self._one, args=(f"churn-{uuid.uuid4().hex[:8]}-{i}",), daemon=True)
            thread.start()
            self._threads.append(thread)
            i += 1
            self._stop.wait(self.every)

    def __enter__(self) -> "SessionChurn":
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=self.hold + 15)

    def summary(self) -> str:
        return (f"{self.opened} editing sessions opened ({', '.join(f'{n}: {c}' for n, c in sorted(self.by_node.items()))}), "
                f"{self.failed_open} failed to open, {self.cut} cut")


@dataclass
class HeldSessions:
    """Editing sessions opened on one node and held in threads (``hold_sessions_on``)."""

    opened: int = 0
    on_node: int = 0
    ended: int = 0
    cut: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    """Set it to end every held session at its next ping (closed by the editor: not a cut)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def join(self, timeout: float) -> None:
        """Wait (bounded) for every held session to end or die."""
        end = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))

    def summary(self, node: str) -> str:
        return (f"{self.opened} sessions held ({self.on_node} on {node}), {self.ended} ended on their own, "
                f"{len(self.cut)} cut")


def hold_sessions_on(state: dict[str, Any], node: str, count: int, hold: float,
                     nodes: list[str] | None = None, prefix: str = "held") -> HeldSessions:
    """Open ``count`` editing sessions whose documents land on ``node`` (shard keys hashing to it
    over ``nodes``, default the lab's docs hosts: the LBs' table) and hold each ``hold`` seconds
    (or until ``HeldSessions.release`` is set) in a thread, pinged every second: what a drain
    must wait for (none may be cut when the drain bound is longer than the hold)."""
    held = HeldSessions()
    table = nodes or hosts_in(state, "docs")
    opened = []
    for i in range(count):
        key = key_for(node, table, f"{prefix}-{i}")
        ws, served = editor_session(state, key)
        opened.append((key, ws, served))
        held.opened += 1
        held.on_node += served == node

    def hold_one(key: str, ws: Any, served: str) -> None:
        died = hold_session(ws, hold, held.release)
        with held._lock:
            if died is None:
                held.ended += 1
            else:
                held.cut.append(f"{key} on {served} after {died:.1f} s")

    held.threads = [threading.Thread(target=hold_one, args=item, daemon=True) for item in opened]
    for thread in held.threads:
        thread.start()
    return held


# --- Host patching (issue 12) ---------------------------------------------------------------


def boot_marker(state: dict[str, Any], host: str) -> str:
    """When this boot's PID 1 started on ``host`` (systemd's UserspaceTimestamp, over SSH): it
    changes with every reboot of a lab host, unlike boot_id (the container shares this machine's)."""
    from lab.reboot import BOOT_MARKER

    rc, out = ssh(state, host, BOOT_MARKER, timeout=20)
    if rc != 0 or not out.strip():
        raise AssertionError(f"{host}: no boot marker ({out.strip()[-200:]})")
    return out.strip()


def boot_markers(state: dict[str, Any], names: list[str] | tuple[str, ...]) -> dict[str, str]:
    return {name: boot_marker(state, name) for name in names}


def package_version(state: dict[str, Any], host: str, package: str) -> str | None:
    """The installed version of ``package`` on ``host`` (None: not installed)."""
    rc, out = ssh(state, host, f"dpkg-query -W -f '${{Status}}|${{Version}}' {shlex.quote(package)} 2>/dev/null", timeout=30)
    status, _, version = out.strip().partition("|")
    return version if rc == 0 and status.endswith(" installed") else None


@dataclass(frozen=True)
class WritePause:
    """A stretch without acknowledged writes: from the last ack before it to the first after."""

    start: float
    seconds: float
    failed: int


def write_pauses(events: list[tuple[str, int, float]], threshold: float = 1.0) -> list[WritePause]:
    """The pauses longer than ``threshold`` s between consecutive acknowledged writes of a
    ``PgWriter``'s events (a switchover shows as failed inserts between two acks, or as one
    commit that waited).  A writer's own end (no ack after the last) is not a pause."""
    pauses = []
    last_ok: float | None = None
    failed = 0
    for kind, _, at in sorted(events, key=lambda e: e[2]):
        if kind == "fail":
            failed += 1
            continue
        if last_ok is not None and at - last_ok > threshold:
            pauses.append(WritePause(last_ok, at - last_ok, failed))
        last_ok, failed = at, 0
    return pauses


class LineClock:
    """When each output line of a ``PyinfraRun`` appeared (time.time(), polled every 0.2 s):
    puts a driver's progress lines and a client loop's events on one time axis."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            while len(self.times) < len(self.run.lines):
                self.times.append(now)
            self._stop.wait(0.2)  # the clock's resolution, not a wait for a condition

    def stop(self) -> list[tuple[float, str]]:
        """Stop watching; (time, line) for every line seen."""
        self._stop.set()
        self._thread.join(timeout=5)
        now = time.time()
        while len(self.times) < len(self.run.lines):
            self.times.append(now)
        return list(zip(self.times, self.run.lines))


def container_of(state: dict[str, Any], host: str) -> Any:
    """The host's container (docker SDK): the lab's out-of-band console, works when SSH does not."""
    import docker

    name = next(h["container"] for h in state["hosts"] if h["name"] == host)
    return docker.from_env(version="auto").containers.get(name)


class NoRestart:
    """While entered, ``host`` does not come back from a reboot: its container loses its restart
    policy (``docker update --restart no``), so `systemctl reboot` inside ends with the container
    exited, like a VM stuck at boot; the next `python -m lab start HOST` boots it.  On exit the
    lab's policy is put back (``lab.hosts.ensure_restart_policy``), whatever happened.

    Deterministic, unlike stopping the container once it went down: the engine restarts a
    rebooted host within a second, and a stop racing that restart could lose to it."""

    def __init__(self, state: dict[str, Any], host: str) -> None:
        self.state, self.host = state, host

    def __enter__(self) -> "NoRestart":
        container = container_of(self.state, self.host)
        container.update(restart_policy={"Name": "no"})
        return self

    def __exit__(self, *exc: Any) -> None:
        from lab.hosts import ensure_restart_policy

        ensure_restart_policy(container_of(self.state, self.host))

    def down(self) -> bool:
        """The host's container has exited (its reboot ended and nothing started it again)."""
        return container_of(self.state, self.host).status == "exited"


class DurablePgWriter(PgWriter):
    """A ``PgWriter`` whose log survives a reboot of its host: /var/tmp, not /tmp (Debian's
    tmpfiles.d empties /tmp at boot), so the rows a writer had acknowledged before its host
    went down can still be checked afterwards."""

    @property
    def _log(self) -> str:
        return f"/var/tmp/ooha-pgwriter-{self.run}.log"


class PgWriters:
    """PostgreSQL writers through the endpoints of several client hosts, each started again (a
    new run) once its host is back from a reboot.

    Why: a run that patches every host reboots every client host, and a writer loop dies with
    its host; with writers on two hosts patched one at a time, one always writes.  Each run of
    each host is a ``DurablePgWriter`` segment: its pauses and lost rows are its own (the time
    its host was down is not a PostgreSQL pause)."""

    def __init__(self, state: dict[str, Any], hosts: list[str], password: str, max_seconds: int = 3600,
                 check_every: float = 2.0) -> None:
        self.state, self.hosts, self.password = state, list(hosts), password
        self.max_seconds, self.check_every = max_seconds, check_every
        self.segments: list[DurablePgWriter] = []
        self.current: dict[str, DurablePgWriter] = {}
        self.markers: dict[str, str] = {}
        self.events: dict[str, list[tuple[str, int, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _begin(self, host: str, prepare: bool) -> None:
        writer = DurablePgWriter(self.state, host=host)
        if prepare:
            writer.prepare(self.password)
        writer.start(max_seconds=self.max_seconds)
        self.current[host] = writer
        self.segments.append(writer)

    def start(self) -> "PgWriters":
        for host in self.hosts:
            self.markers[host] = boot_marker(self.state, host)
            self._begin(host, prepare=True)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every):  # the watcher's pace, not a wait for a condition
            for host in self.hosts:
                try:
                    marker = boot_marker(self.state, host)
                    if marker != self.markers[host]:
                        self._begin(host, prepare=False)
                        self.markers[host] = marker
                except Exception:  # noqa: BLE001  (the host is down or booting: ask again later)
                    continue

    def acked(self) -> int:
        """Rows acknowledged so far by the writers running now."""
        return sum(len(w.acked()) for w in self.current.values())

    def stop(self) -> None:
        """Stop watching and every writer; keep every segment's events."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
        for writer in self.segments:
            if writer is self.current.get(writer.host):
                try:
                    self.events[writer.run] = writer.stop(deadline=60)
                    continue
                except Exception:  # noqa: BLE001  (its host went down again: read what it logged)
                    pass
            self.events[writer.run] = writer.events()

    def lost(self) -> list[str]:
        """``host:run:id`` of every acknowledged row missing from the database."""
        missing = []
        for writer in self.segments:
            acked = {i for kind, i, _ in self.events.get(writer.run, []) if kind == "ok"}
            missing += [f"{writer.host}:{writer.run}:{i}" for i in sorted(acked - writer.present())]
        return missing

    def pauses(self, threshold: float = 1.0) -> list[tuple[str, WritePause]]:
        """(client host, pause) of every segment, in time order."""
        found = [(w.host, p) for w in self.segments for p in write_pauses(self.events.get(w.run, []), threshold)]
        return sorted(found, key=lambda item: item[1].start)

    def total_acked(self) -> int:
        return sum(1 for events in self.events.values() for kind, _, _ in events if kind == "ok")

    def cleanup(self) -> None:
        for writer in self.segments:
            try:
                writer.cleanup()
            except Exception:  # noqa: BLE001  (best effort: a log left in /var/tmp harms nothing)
                pass


# --- the host-patching command's progress lines ------------------------------------------------

PATCH_LINE = re.compile(r"^\[\s*[0-9hms]+\] host (?P<n>\d+)/(?P<of>\d+) (?P<host>\S+) \((?P<az>[^)]*)\)"
                        r"(?: step (?P<step>\S+))?(?:: (?P<detail>.*))?$")
"""``[  2m14s] host 3/8 data2 (az2) step patroni_switchover_to_sync_standby: detail`` (hostdriver.host_progress)."""


@dataclass
class StepSpan:
    """One step of one host's turn, from its ``start`` line to its ``OK``/``FAILED`` line."""

    host: str
    step: str
    start: float
    end: float | None = None
    ok: bool | None = None
    detail: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class PatchTimeline:
    """Who was patched when, from the stamped lines of a deploys/patch_hosts.py run (``LineClock``)."""

    turns: dict[str, tuple[float, float]] = field(default_factory=dict)
    steps: list[StepSpan] = field(default_factory=list)

    def host_at(self, when: float) -> str | None:
        """The host whose turn covered ``when`` (None: before, between or after the turns)."""
        return next((h for h, (a, b) in self.turns.items() if a <= when <= b), None)

    def where(self, when: float) -> str:
        """``host step`` running at ``when`` (else the host whose turn it was, else ``-``): to
        name what a client's failure met."""
        span = next((s for s in reversed(self.steps) if s.start <= when <= (s.end or s.start)), None)
        if span is not None:
            return f"{span.host} {span.step}"
        host = self.host_at(when)
        before = next((s for s in reversed(self.steps) if s.host == host and (s.end or s.start) < when), None)
        after = next((s for s in self.steps if s.host == host and s.start > when), None)
        if host and (before or after):
            return (f"{host} between {before.step if before else 'its fresh look'} and "
                    f"{after.step if after else 'its end'}")
        return host or "-"

    def step(self, host: str, name: str) -> StepSpan | None:
        """The last run of step ``name`` on ``host``."""
        return next((s for s in reversed(self.steps) if s.host == host and s.step == name), None)

    def hosts(self) -> list[str]:
        return sorted(self.turns, key=lambda h: self.turns[h][0])


def patch_timeline(stamped: list[tuple[float, str]]) -> PatchTimeline:
    """Parse a run's progress lines: each host's turn (its first to its last line) and its steps."""
    timeline = PatchTimeline()
    for when, line in stamped:
        match = PATCH_LINE.match(line.strip())
        if not match:
            continue
        host, step, detail = match["host"], match["step"], (match["detail"] or "").strip()
        first, _ = timeline.turns.get(host, (when, when))
        timeline.turns[host] = (first, when)
        if step is None:
            continue
        if detail == "start":
            timeline.steps.append(StepSpan(host, step, when))
            continue
        span = timeline.step(host, step)
        if span is None or span.end is not None:
            continue
        if detail.startswith("OK"):
            span.end, span.ok, span.detail = when, True, detail[2:].strip()
        elif detail.startswith(("FAILED", "did not finish")):
            span.end, span.ok, span.detail = when, False, detail.removeprefix("FAILED:").strip()
    return timeline


def remove_canary(state: dict[str, Any], hosts: list[str] | tuple[str, ...], deadline: float = 240) -> None:
    """The lab's canary package and apt source off ``hosts`` (``python -m lab canary --remove``),
    checked host by host and retried: a removal can lose the dpkg lock to an apt run the host
    started itself, and apt-get purge then fails quietly (lab/aptrepo.py REMOVE_SCRIPT)."""
    from lab.aptrepo import PACKAGE

    lab_cli("canary", *hosts, "--remove", timeout=600)

    def gone() -> bool:
        left = [h for h in hosts if package_version(state, h, PACKAGE) is not None]
        for host in left:
            lab_cli("canary", host, "--remove", timeout=300)
        return not left

    wait_for(f"{PACKAGE} removed from {', '.join(hosts)}", gone, deadline, interval=5, tolerate=(Exception,))
