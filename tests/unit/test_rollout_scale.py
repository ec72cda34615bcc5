"""Scale in/out (issue 11, deliverable 4): the pure rules of ooha/rollout/scale.py and the
command-line/journal glue of ooha/rollout/live/scale.py (no lab)."""

from __future__ import annotations

import pytest

import ooha.layers.loadbalancer as lb
from ooha.rollout import scale
from ooha.rollout.journal import Phase, decide_start, new_journal
from ooha.rollout.live.scale import PHASES, join_command
from ooha.rollout.live.store import sql_drop_releases
from ooha.rollout.release import ImageRef
from tests.unit.test_loadbalancer import lab_like, render  # noqa: F401  (the fixture, shared)

DOCS = ["ds1", "ds2", "ds3"]
IMAGE = ImageRef("onlyoffice/documentserver-ee", "9.3.0.1")


# --- inputs ------------------------------------------------------------------------------------


def test_one_valid_request_has_no_problem() -> None:
    assert scale.scale_problems({"ds_retire": "ds3"}, DOCS) == []
    assert scale.scale_problems({"ds_join": "ds2"}, DOCS) == []
    assert scale.scale_request({"ds_retire": "ds3"}) == ("scale-in", "ds3")
    assert scale.scale_request({"ds_join": "ds4"}) == ("scale-out", "ds4")


@pytest.mark.parametrize("data, expected", [
    ({}, "neither is set"),
    ({"ds_retire": "ds3", "ds_join": "ds2"}, "both are set"),
    ({"ds_retire": "ds9"}, "ds_retire: 'ds9' is not in the inventory's docs group"),
    ({"ds_join": "ds9"}, "ds_join: 'ds9' is not in the inventory's docs group"),
    ({"ds_retire": "ds 3"}, "ds_retire: 'ds 3': is not a host name"),
    ({"ds_join": ""}, "ds_join: '': is not a host name"),
])
def test_bad_requests_are_refused_one_line_each(data: dict, expected: str) -> None:
    problems = scale.scale_problems(data, DOCS)
    assert len(problems) == 1, problems
    assert expected in problems[0] and "fix:" in problems[0]


def test_the_last_node_cannot_be_retired() -> None:
    problems = scale.scale_problems({"ds_retire": "ds1"}, ["ds1"])
    assert problems and "only Document Server node" in problems[0]


# --- the LBs' deployed table and the main job's refusal -----------------------------------------


def test_lua_nodes_reads_the_rendered_table(lab_like) -> None:  # noqa: F811
    text = render("loadbalancer/ooha_shard.lua.j2", lb.nginx_vars(lab_like["lb1"], lb.CONF_DIR))
    names = scale.lua_nodes(text.splitlines())
    assert names == [n["name"] for n in lb.ds_nodes(80)] == ["ds1", "ds2", "ds3"]
    assert scale.lua_nodes(None) is None and scale.lua_nodes([]) is None


def test_membership_without_change_or_first_converge_passes() -> None:
    assert scale.membership_problems("lb1", DOCS, DOCS, {}) == []
    assert scale.membership_problems("lb1", None, DOCS, {}) == []  # nothing deployed yet


def test_a_removed_node_needs_its_retirement() -> None:
    problems = scale.membership_problems("lb1", DOCS, ["ds1", "ds2"], {}, "inventories/lab.py")
    assert len(problems) == 1
    assert problems[0].startswith("lb1: docs: ds3 is in the load balancers' table but no longer in the inventory")
    assert "deploys/scale.py --data ds_retire=ds3" in problems[0]
    assert "a host lost for good: --data ds_membership_change=<why>" in problems[0]
    retired = {"ds3": {"change": scale.RETIRED, "rollout_id": "r1"}}
    assert scale.membership_problems("lb1", DOCS, ["ds1", "ds2"], retired) == []
    # a joining marker is not a retirement
    joining = {"ds3": {"change": scale.JOINING, "rollout_id": "r1"}}
    assert scale.membership_problems("lb1", DOCS, ["ds1", "ds2"], joining)


def test_an_added_node_needs_the_join() -> None:
    problems = scale.membership_problems("lb2", ["ds1", "ds2"], DOCS, {})
    assert len(problems) == 1 and "ds3 is new" in problems[0] and "--data ds_join=ds3" in problems[0]
    assert scale.membership_problems("lb2", ["ds1", "ds2"], DOCS, {"ds3": {"change": scale.JOINING, "rollout_id": "r"}}) == []


def test_markers_round_trip_and_prune() -> None:
    text = scale.with_marker({}, "ds3", scale.RETIRED, "r1")
    markers = scale.parse_markers(text)
    assert markers == {"ds3": {"change": "retired", "rollout_id": "r1"}}
    markers = scale.parse_markers(scale.with_marker(markers, "ds4", scale.JOINING, "r2"))
    assert set(markers) == {"ds3", "ds4"}
    assert scale.parse_markers(scale.with_marker(markers, "ds3", scale.JOINING, "r3"))["ds3"]["change"] == "joining"
    # retired but still in the inventory: kept; removed: done; joining and rendered: done
    assert scale.remaining_markers(markers, ["ds1", "ds3"]) == {"ds3": markers["ds3"]}
    assert scale.remaining_markers(markers, ["ds1", "ds4"]) == {}
    assert scale.parse_markers("not json") == {} and scale.parse_markers(None) == {}
    assert scale.parse_markers('{"ds3": {"change": "bogus"}}') == {}


def test_a_retired_node_still_in_the_inventory_is_refused() -> None:
    assert scale.retired_refusal("ds3", None) is None and scale.retired_refusal("ds3", []) is None
    refusal = scale.retired_refusal("ds3", ['{"rollout_id": "r20261205-1"}'])
    assert refusal is not None and "r20261205-1" in refusal and "--data ds_join=ds3" in refusal
    assert "remove ds3 from the inventory" in refusal


# --- driver glue -------------------------------------------------------------------------------


def test_join_runs_the_whole_main_job_without_the_scale_keys() -> None:
    argv = ["/venv/bin/pyinfra", "inventories/lab.py", "deploys/scale.py", "--data", "ds_join=ds4",
            "--data=rollout_soak_seconds=30", "--data", "ds_drain_seconds=20"]
    command = join_command(argv)
    assert command[1:4] == ["-m", "pyinfra", "-y"]
    assert command[4:] == ["inventories/lab.py", "deploys/ha.py", "--data", "ds_drain_seconds=20"]
    assert "--limit" not in command


def test_phase_lists() -> None:
    assert PHASES["scale-in"] == (Phase.PREFLIGHT, Phase.DRAIN, Phase.STOP)  # out of the LBs before the stop
    assert PHASES["scale-out"][-2:] == (Phase.HEALTH, Phase.RETURN)  # active only after the health gate


def test_an_open_scale_blocks_patches_and_rollbacks() -> None:
    journal = new_journal("r1", "scale-in", IMAGE, [["ds3"]], {"ds3": IMAGE}, False, "op@c", 0.0)
    for kind in ("patch", "rollback"):
        decision = decide_start(journal, kind, ImageRef(IMAGE.image, "9.3.1.2"))
        assert decision.action == "refuse" and "deploys/scale.py --data ds_retire=ds3" in decision.message


def test_dropping_ledger_rows_is_fenced_by_the_lock() -> None:
    sql = sql_drop_releases(["ds3"], "tok")
    assert "DELETE FROM node_release" in sql and "token = " in sql and "EXISTS (SELECT 1 FROM l)" in sql


def test_the_main_job_guard_refuses_unless_the_operator_says_why(monkeypatch) -> None:
    """membership_guard on a fake LB host: a dropped node is refused; ds_membership_change (a
    host lost for good, which deploys/scale.py cannot reach) lets the render go on."""
    from pyinfra.api.exceptions import DeployError

    deployed = [f'  {{ name = "{n}", host = "198.18.0.{i}", port = 80 }},' for i, n in enumerate(DOCS)]

    class FakeLb:
        name = "lb1"

        def __init__(self, data: dict) -> None:
            self.data, self.noted = data, []

        def get_fact(self, _fact, path: str):
            return deployed if path.endswith(".lua") else None

        def noop(self, text: str) -> None:
            self.noted.append(text)

    monkeypatch.setattr(lb, "ds_nodes", lambda _port: [{"name": "ds1"}, {"name": "ds2"}])
    with pytest.raises(DeployError, match="ds3 is in the load balancers' table"):
        lb.membership_guard(FakeLb({}))
    forced = FakeLb({"ds_membership_change": "ds3 lost for good"})
    assert lb.membership_guard(forced) == {}
    assert forced.noted and "ds3" in forced.noted[0]
