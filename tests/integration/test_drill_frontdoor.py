"""Front-door drills: a Document Server host and the VIP's load balancer stop under traffic.

Each drill holds the exclusive lab lock and restarts what it stopped in a ``finally``.
- A DS host stops while editor sessions are open and idempotent GETs run through the VIP:
  no request fails; the stopped node's documents open on another node; when the node
  returns, a document still open on the node it moved to stays there (never two nodes).
- The LB holding the VIP stops: the VIP moves to the other LB and the front door answers
  (the gap is printed; benchmarks/frontdoor_failover.py measures it).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from lab.client import hosts_in, lab_cli, lab_lock, ssh, wait_for
from lab.workload import get, key_for, Loop, node_healthy, vip_holder, vip_move
from tests.integration.frontdoor import alive, close_all, session

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

SETTLE = 15
"""Seconds the request loop keeps running with the DS host stopped."""


@pytest.fixture(scope="module")
def front(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The converged lab (the whole main job: under the exclusive lock)."""
    with lab_lock():
        return dict(request.getfixturevalue("converged"))


def test_ds_host_stop_moves_its_documents_and_its_return_never_splits_one(front: dict[str, Any]) -> None:
    nodes = hosts_in(front, "docs")
    victim = nodes[0]
    moved_key = key_for(victim, nodes, "drill-moved")    # open on the victim when it stops
    other_key = key_for(nodes[1], nodes, "drill-other")  # open elsewhere: must not notice
    held = []
    stopped = False
    with lab_lock():
        try:
            ws, node = session(front, moved_key)
            held.append(ws)
            assert node == victim
            other_ws, other_node = session(front, other_key)
            held.append(other_ws)
            with Loop(front, ["/healthcheck", f"/healthcheck?shardkey={moved_key}"], timeout=10.0) as loop:
                wait_for("requests answered before the stop",
                         lambda: loop.ok >= 10,
                         20, interval=0.1, tolerate=(Exception,))
                lab_cli("stop", victim, timeout=300, check=True)
                stopped = True
                stopped_at = time.monotonic()
                # the document reopens on another node, and every new session follows it there
                ws2, moved_to = session(front, moved_key)
                held.append(ws2)
                assert moved_to != victim
                for _ in range(3):
                    ws3, again = session(front, moved_key)
                    held.append(ws3)
                    assert again == moved_to
                assert alive(other_ws), "a session on another node broke when the victim stopped"
                wait_for("the loop running",
                         lambda: time.monotonic() - stopped_at >= SETTLE,
                         SETTLE + 5, interval=0.5, tolerate=(Exception,))
            print(f"\nDS host {victim} stopped: {loop.failed} failed of {loop.ok + loop.failed} idempotent GETs "
                  f"through the VIP ({loop.answered_false} answered 'false' by the node shutting down); "
                  f"{moved_key} moved {victim} -> {moved_to}")
            assert loop.failed == 0, loop.failures

            lab_cli("start", victim, timeout=300, check=True)
            stopped = False
            wait_for(f"{victim} healthy again",
                     lambda: node_healthy(front, victim),
                     180, interval=2, tolerate=(Exception,))
            # the victim takes new documents again (after nginx's fail_timeout)...
            def lands_on_victim() -> bool:
                ws4, where = session(front, key_for(victim, nodes, "drill-back"))
                held.append(ws4)
                return where == victim
            wait_for(f"a new document on {victim} again", lands_on_victim, 60, interval=2, tolerate=(Exception,))
            # ...but the document open on the node it moved to stays there: never two nodes
            assert alive(ws2)
            for _ in range(3):
                ws5, where = session(front, moved_key)
                held.append(ws5)
                assert where == moved_to, f"{moved_key} served by {where} while open on {moved_to}"
        finally:
            close_all(held)
            if stopped:
                lab_cli("start", victim, timeout=300, check=True)
                wait_for(f"{victim} healthy again",
                         lambda: node_healthy(front, victim),
                         180, interval=2, tolerate=(Exception,))


def test_vip_moves_to_the_other_lb_when_its_holder_stops(front: dict[str, Any]) -> None:
    with lab_lock():
        gap, old, new = vip_move(front)  # starts the stopped LB again before it returns
        print(f"\nVIP moved {old} -> {new}; longest gap between answered requests {gap:.2f} s (goal <= 3 s)")
        assert new != old
        assert vip_holder(front) in hosts_in(front, "lb")
        for name in hosts_in(front, "lb"):
            wait_for(f"nginx and keepalived active on {name}",
                     lambda n=name: ssh(front, n, "systemctl is-active nginx keepalived")[1].split() == ["active", "active"],
                     60, interval=0.5, tolerate=(Exception,))
        assert get(front, "/healthcheck", timeout=10).text.strip() == "true"

