"""The front door under failure: the VIP's move when its LB stops, requests during a DS host stop.

    .venv/bin/python benchmarks/frontdoor_failover.py [--runs 3]

(Takes the exclusive lab lock itself; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)
- VIP move gap (goal <= 3 s): a client on this machine GETs https://VIP/healthcheck (new
  connection each time, lab CA verified) about 20 times a second; the LB holding the VIP is
  stopped with ``python -m lab stop``; the gap is the longest time between two answered
  requests.  The LB is started again (keepalived's nopreempt: the VIP stays where it went).
  Median of ``--runs``.
- Failed requests during a DS host stop (goal 0): idempotent GETs through the VIP
  (/healthcheck and a keyed GET routed to the stopped node) while that host is stopped and
  for 15 s after; the host is started and the run ends once its /healthcheck says true.
  Failed = no HTTP 200 within 10 s.  A 200 whose body is ``false`` (Document Server's
  health answer while its own services stop) is counted and printed apart: nginx cannot
  retry on a body.
Settings that shape the figures: lb_vrrp_advert_int, lb_fail_timeout, lb_connect_timeout,
lb_next_upstream_tries (ooha/layers/loadbalancer.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.redis_failover import lab, lab_lock, lab_state  # noqa: E402
from ooha.layers.loadbalancer import hash_node  # noqa: E402

REQUEST_INTERVAL = 0.05
"""Seconds between two requests of the client loop: its request rate, not a wait for a condition."""


def vip(state: dict[str, Any]) -> str:
    """The floating address (without prefix) from the lab's state."""
    return state["front"]["vip"].split("/")[0]


def hosts_in(state: dict[str, Any], role: str) -> list[str]:
    return [h["name"] for h in state["hosts"] if role in (h.get("roles") or [])]


def address_of(state: dict[str, Any], name: str) -> str:
    return next(h["address"] for h in state["hosts"] if h["name"] == name)


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


def wait_until(condition, deadline: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``condition()`` until truthy; raise naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = condition()
        except Exception as exc:  # a host in transition may refuse the question
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {deadline:.0f} s (last: {last!r})")


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
    holder = wait_until(lambda: vip_holder(state), 30, "one LB holding the VIP")
    new = None
    try:
        with Loop(state, ["/healthcheck"]) as loop:
            wait_until(lambda: loop.ok >= 5, 10, "requests answered before the stop", interval=0.1)
            lab("stop", holder)
            new = wait_until(lambda: (h := vip_holder(state)) and h != holder and h, 30, "the VIP on another LB")
            answered = loop.ok
            wait_until(lambda: loop.ok >= answered + 10, 30, "requests answered after the move", interval=0.1)
        return loop.gap, holder, new
    finally:
        lab("start", holder)
        wait_until(lambda: get(state, "/healthcheck").status_code == 200, 60, "the front door after the restart")


def ds_stop(state: dict[str, Any], settle_seconds: float = 15.0) -> Loop:
    """Stop one DS host during a loop of idempotent GETs through the VIP; the loop (counts).

    The stopped node is the one a fresh key hashes to, and the loop also GETs that key, so
    keyed requests are routed to the stopped node and must be retried on another.
    """
    nodes = hosts_in(state, "docs")
    victim = nodes[0]
    key = key_for(victim, nodes, "bench")
    try:
        # A request that nginx retries on another node takes up to lb_connect_timeout longer:
        # the client waits 10 s, so only a request that really fails counts.
        with Loop(state, ["/healthcheck", f"/healthcheck?shardkey={key}"], timeout=10.0) as loop:
            wait_until(lambda: loop.ok >= 10, 20, "requests answered before the stop", interval=0.1)
            lab("stop", victim)
            stopped_at = time.monotonic()
            wait_until(lambda: time.monotonic() - stopped_at >= settle_seconds, settle_seconds + 5,
                       "the loop running with the host stopped", interval=0.5)
        return loop
    finally:
        lab("start", victim)
        wait_until(lambda: node_healthy(state, victim), 180, f"{victim} healthy again", interval=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    state = lab_state()
    gaps = []
    with lab_lock():
        for run in range(1, args.runs + 1):
            gap, old, new = vip_move(state)
            gaps.append(gap)
            print(f"run {run}: VIP moved {old} -> {new}, gap {gap:.2f} s", flush=True)
        print(f"VIP move gap: median {statistics.median(gaps):.2f} s of {len(gaps)} (goal <= 3 s)", flush=True)
        loop = ds_stop(state)
        print(f"DS host stop: {loop.failed} failed of {loop.ok + loop.failed} idempotent requests "
              f"({loop.answered_false} answered 200 'false' by a node shutting down; longest gap {loop.gap:.2f} s){'; ' + ', '.join(loop.failures[:5]) if loop.failures else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
