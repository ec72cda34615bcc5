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
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        last_ok = time.monotonic()
        i = 0
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
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



def hold_session(ws: Any, hold: float) -> float | None:
    """Keep an editor's socket open ``hold`` seconds, pinged every second, then close it; the
    seconds after which it died (cut under the editor), or None when it lived to its own end."""
    end = time.monotonic() + hold
    try:
        while time.monotonic() < end:
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
