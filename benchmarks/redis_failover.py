"""Client-side write unavailability when the Redis primary's host is lost (goal <= 10 s).

    .venv/bin/python benchmarks/redis_failover.py [--runs 3]

(The script takes the exclusive lab lock itself, so plain `.venv/bin/python
benchmarks/redis_failover.py` is enough; under `flock -x` set OOHA_LAB_LOCK_HELD=1.)  Each run: a client on this machine discovers the primary through the
three Sentinels (redis-py, like Document Server's ioredis with ``sentinels``) and SETs
numbered keys about 20 times a second; the primary's host is stopped with
``python -m lab stop``; the window is the longest gap between two acknowledged writes;
every acknowledged key is then read back from the new primary ("writes lost"); the host
is started again and the run ends once it is a replica of the new primary with its link
up.  Prints one line per run, then the median.  Settings that shape the figure:
redis_down_after_ms / redis_failover_timeout_ms in ooha/layers/redis.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from redis.sentinel import Sentinel

REPO = Path(__file__).resolve().parent.parent
LOCK_FILE = "/tmp/ooha-lab.lock"
MASTER = "onlyoffice"
SENTINEL_PORT = 26379
WRITE_INTERVAL = 0.05
"""Seconds between two writes of the client loop: its write rate, not a wait for a condition."""


# --- the lab ----------------------------------------------------------------------------


def lab_state() -> dict[str, Any]:
    """The lab's status (python -m lab status --json)."""
    import json

    out = subprocess.run([sys.executable, "-m", "lab", "status", "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def redis_hosts(state: dict[str, Any]) -> dict[str, str]:
    """``{address: host name}`` of the lab's redis hosts."""
    return {h["address"]: h["name"] for h in state["hosts"] if "redis" in (h.get("roles") or [])}


def sentinel_primary(state: dict[str, Any]) -> str:
    """The primary's address as the Sentinels name it now (redis-py's discovery)."""
    return sentinel_client(state).discover_master(MASTER)[0]


def secrets(state: dict[str, Any]) -> dict[str, str]:
    with open(state["secrets_file"], encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def lab(*args: str, timeout: float = 300) -> None:
    """`python -m lab ARGS`, failing loudly."""
    result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"python -m lab {' '.join(args)} failed: {result.stderr.strip()[-500:]}")


@contextlib.contextmanager
def lab_lock(exclusive: bool = True, deadline_seconds: float = 1800) -> Iterator[None]:
    """Hold the lab's lock: exclusive for disruptive work (drills, this benchmark), shared for
    deploys and non-disruptive tests.  Skipped when OOHA_LAB_LOCK_HELD=1 (the caller holds it,
    e.g. `flock -x`), since a second lock on the same file from a child would wait forever."""
    if os.environ.get("OOHA_LAB_LOCK_HELD") == "1":
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(LOCK_FILE, "a") as handle:
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not take {LOCK_FILE} in {deadline_seconds:.0f} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- clients ----------------------------------------------------------------------------


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


def wait_for(condition, deadline_seconds: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition()`` until it returns something truthy; raise after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {deadline_seconds:.0f} s")
        time.sleep(interval)


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
        wait_for(lambda: len(writer.acked) >= 20, 30, "writes before the failure")
        stop_at = time.monotonic()
        lab("stop", names[old])
        stopped = True
        new = wait_for(lambda: next(iter(sentinels_primary(state, [a for a in names if a != old]) - {old}), None), 60,
                       "Sentinels promote a replica")
        wait_for(lambda: writer.acked_since(stop_at) >= 40, 60, "writes continue on the new primary")
        writer.stop()
        window = writer.longest_gap(after=stop_at)
        lost = writer.lost()
        started = time.monotonic()
        lab("start", names[old])
        stopped = False
        wait_for(lambda: (info := role_of(state, old)) and info.get("role") == "slave"
                 and info.get("master_host") == new and info.get("master_link_status") == "up",
                 120, f"{names[old]} rejoins as a replica of {names[new]}")
        return FailoverRun(names[old], names[new], window, len(writer.acked), len(lost), time.monotonic() - started)
    finally:
        writer.stop()
        if stopped:
            lab("start", names[old])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    state = lab_state()
    with lab_lock(exclusive=True):
        runs = []
        for index in range(1, args.runs + 1):
            run = primary_loss(state, f"run{index}")
            runs.append(run)
            print(f"run {index}: primary {run.old} stopped -> {run.new} promoted; write unavailability "
                  f"{run.window:.2f} s; writes acknowledged {run.acked}, lost {run.lost}; "
                  f"{run.old} back as replica {run.rejoin_seconds:.1f} s after start", flush=True)
    windows = [r.window for r in runs]
    print(f"median write unavailability over {len(runs)} run(s): {statistics.median(windows):.2f} s "
          f"(goal <= 10 s); writes lost: {sum(r.lost for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
