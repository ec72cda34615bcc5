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
The request loop and the VIP move are ``lab.workload.Loop`` / ``vip_move`` (the front-door
drill in tests/integration/test_drill_frontdoor.py runs the same).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from lab.client import hosts_in, lab_cli, lab_lock, lab_state, wait_for
from lab.workload import Loop, key_for, node_healthy, vip_move


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
            wait_for("requests answered before the stop", lambda: loop.ok >= 10, 20, interval=0.1, tolerate=(Exception,))
            lab_cli("stop", victim, timeout=300, check=True)
            stopped_at = time.monotonic()
            wait_for("the loop running with the host stopped", lambda: time.monotonic() - stopped_at >= settle_seconds,
                     settle_seconds + 5, interval=0.5, tolerate=(Exception,))
        return loop
    finally:
        lab_cli("start", victim, timeout=300, check=True)
        wait_for(f"{victim} healthy again", lambda: node_healthy(state, victim), 180, interval=2, tolerate=(Exception,))


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
