"""LB node states (drain) and the routing rule the Lua must mirror; the rollout core has no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

from ooha.layers.loadbalancer import node_ranking
from ooha.rollout import drain as D

NODES = ["ds1", "ds2", "ds3"]
KEYS = [f"doc-{i}" for i in range(200)]


def test_all_active_routes_like_today() -> None:
    states = D.parse_states({}, NODES)
    for key in KEYS:
        assert D.first_sight_node(NODES, key, states) == node_ranking(NODES, key)[0]
        assert D.route_node(NODES, key, "ds2", states) == ("ds2", False)


def test_draining_node_gets_no_new_document_but_keeps_its_open_ones() -> None:
    states = D.parse_states({"ds1": "draining"}, NODES)
    assert all(D.first_sight_node(NODES, key, states) != "ds1" for key in KEYS)
    assert D.route_node(NODES, "doc-1", "ds1", states) == ("ds1", False)


def test_out_node_gets_nothing_and_its_entries_are_repointed() -> None:
    states = D.parse_states({"ds1": "out"}, NODES)
    for key in KEYS:
        node, repoint = D.route_node(NODES, key, "ds1", states)
        assert node != "ds1" and repoint
        assert node == [n for n in node_ranking(NODES, key) if n != "ds1"][0]


def test_all_out_falls_back_to_the_ranking_and_unknown_states_are_active() -> None:
    states = D.parse_states({n: "out" for n in NODES}, NODES)
    assert D.first_sight_node(NODES, "k", states) == node_ranking(NODES, "k")[0]
    assert D.parse_states({"ds1": "typo"}, NODES)["ds1"] == "active"
    assert D.route_node(NODES, "k", "gone", D.parse_states({}, NODES))[1]


def test_transitions_never_skip_the_drain() -> None:
    assert D.transition_allowed("active", "draining") and D.transition_allowed("draining", "out")
    assert D.transition_allowed("out", "active") and D.transition_allowed("draining", "active")
    assert D.transition_allowed("out", "out")
    assert not D.transition_allowed("active", "out")


def test_drain_finished() -> None:
    assert D.drain_finished(0, 12, 600) == (True, "drained in 12 s")
    done, text = D.drain_finished(3, 600, 600)
    assert done and text.startswith("3 editing session(s) still open after 600 s")
    assert D.drain_finished(None, 10, 600) == (False, "? session(s) left, 10 s of 600")


FORBIDDEN_MODULES = {"subprocess", "socket", "os", "time", "pyinfra", "requests", "shutil", "pathlib", "urllib", "http"}
FORBIDDEN_CALLS = {"open", "input", "print"}


def test_rollout_core_does_no_io() -> None:
    """The core is pure: the I/O layer (ooha/rollout/live/) is the only place that touches hosts or the clock."""
    root = Path(__file__).resolve().parents[2] / "ooha" / "rollout"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            assert not set(names) & FORBIDDEN_MODULES, f"{path.name} imports {names}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"
