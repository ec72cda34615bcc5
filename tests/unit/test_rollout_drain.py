"""LB node states (drain) and the routing rule the Lua must mirror; the rollout core has no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

from ooha.layers.loadbalancer import candidate_order, node_ranking
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


def test_no_active_node_prefers_a_draining_one_to_an_out_one() -> None:
    states = D.parse_states({"ds1": "out", "ds2": "draining", "ds3": "out"}, NODES)
    assert all(D.first_sight_node(NODES, key, states) == "ds2" for key in KEYS)
    assert all(D.route_node(NODES, key, "ds1", states) == ("ds2", True) for key in KEYS)


def test_candidates_with_every_node_active_are_todays_order() -> None:
    states = D.parse_states({}, NODES)
    for key in KEYS[:50]:
        for first in NODES:
            for down in (set(), {"ds1"}, {"ds2", "ds3"}, set(NODES)):
                assert D.candidate_order(NODES, key, first, states, down) == candidate_order(NODES, key, first, down)


def test_retries_try_active_nodes_before_draining_ones_and_never_an_out_one() -> None:
    states = {"ds1": "draining", "ds2": "out"}
    for key in KEYS:
        # the table's draining node first (its editors are there), then the active ds3, then nothing
        assert D.candidate_order(NODES, key, "ds1", states) == ["ds1", "ds3"]
        # an active table node: the draining one only after every active one
        assert D.candidate_order(NODES, key, "ds3", states) == ["ds3", "ds1"]
    four = NODES + ["ds4"]
    states4 = {"ds1": "draining"}
    for key in KEYS:
        order = D.candidate_order(four, key, "ds2", states4, down={"ds3"})
        active = [n for n in node_ranking(four, key) if n not in ("ds1", "ds2", "ds3")]
        assert order == ["ds2"] + active + ["ds3", "ds1"], order  # failed active, then draining


def test_every_node_out_still_tries_them_all() -> None:
    states = {n: "out" for n in NODES}
    for key in KEYS[:20]:
        first = D.first_sight_node(NODES, key, states)
        assert D.candidate_order(NODES, key, first, states) == node_ranking(NODES, key)
    # a draining table node with every other node out: that node alone (nothing else may take it)
    assert D.candidate_order(NODES, "k", "ds1", {"ds2": "out", "ds3": "out", "ds1": "draining"}) == ["ds1"]


def test_requests_without_a_key_rotate_over_active_nodes_only() -> None:
    states = {"ds2": "draining"}
    firsts = [D.keyless_order(NODES, states, offset)[0] for offset in range(6)]
    assert firsts == ["ds1", "ds3"] * 3  # the active nodes lead in turn, evenly
    assert all(D.keyless_order(NODES, states, o)[-1] == "ds2" for o in range(6))
    assert D.keyless_order(NODES, {"ds2": "out"}, 1) == ["ds3", "ds1"]
    assert D.keyless_order(NODES, {"ds2": "out"}, 1, down={"ds3"}) == ["ds1", "ds3"]
    assert D.keyless_order(NODES, {"ds2": "out"}, 1, down={"ds1", "ds3"}) == ["ds3", "ds1"]
    assert D.keyless_order(NODES, {n: "out" for n in NODES}, 2) == ["ds3", "ds1", "ds2"]
    assert D.keyless_order([], {}, 3) == []


def test_settle_time_is_twice_the_cache() -> None:
    assert D.settle_seconds(1000) == 2.0 and D.settle_seconds(100) == 0.2
    assert D.state_of({"ds1": "out", "ds2": "?"}, "ds2") == "active" and D.state_of({}, "ds9") == "active"


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
