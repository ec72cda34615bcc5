"""Rollout plan: canary first by fewest sessions, one AZ at a time, idempotent at the target."""

from __future__ import annotations

import pytest

from ooha.rollout.plan import NodeView, azs_of_wave, plan_rollout
from ooha.rollout.release import ImageRef

OLD = ImageRef("reg/ds-ee", "9.3.0.1")
NEW = ImageRef("reg/ds-ee", "9.3.1.2")
DIG = "sha256:" + "a" * 64


def nodes(*spec: tuple[str, str, int]) -> list[NodeView]:
    return [NodeView(name, az, OLD, sessions) for name, az, sessions in spec]


def test_canary_is_the_node_with_fewest_sessions_then_its_az_then_others_by_load() -> None:
    fleet = nodes(("ds1", "az1", 9), ("ds2", "az2", 1), ("ds3", "az3", 4), ("ds4", "az2", 7))
    plan = plan_rollout(fleet, NEW)
    assert plan.canary == "ds2"
    assert plan.waves == (("ds2",), ("ds4",), ("ds3",), ("ds1",))


def test_ties_follow_inventory_order() -> None:
    plan = plan_rollout(nodes(("ds1", "az1", 0), ("ds2", "az2", 0), ("ds3", "az3", 0)), NEW)
    assert plan.waves == (("ds1",), ("ds2",), ("ds3",))


def test_waves_never_span_two_azs_and_respect_max_per_wave() -> None:
    fleet = nodes(("a1", "az1", 1), ("a2", "az1", 2), ("a3", "az1", 3), ("b1", "az2", 0), ("b2", "az2", 5))
    plan = plan_rollout(fleet, NEW, max_per_wave=2)
    assert plan.waves[0] == ("b1",)
    for wave in plan.waves:
        assert len(azs_of_wave(wave, fleet)) == 1 and len(wave) <= 2
    assert sorted(plan.nodes()) == ["a1", "a2", "a3", "b1", "b2"]


def test_nodes_already_on_target_and_active_are_skipped_and_all_done_is_empty() -> None:
    fleet = [NodeView("ds1", "az1", NEW, 3), NodeView("ds2", "az2", OLD, 5)]
    plan = plan_rollout(fleet, NEW)
    assert plan.waves == (("ds2",),) and "ds1" in plan.skipped
    done = [NodeView("ds1", "az1", NEW, 3), NodeView("ds2", "az2", NEW, 5)]
    assert plan_rollout(done, NEW).empty


def test_a_node_on_target_but_still_drained_is_planned_again() -> None:
    fleet = [NodeView("ds1", "az1", NEW, 0, lb_state="draining"), NodeView("ds2", "az2", NEW, 0)]
    assert plan_rollout(fleet, NEW).waves == (("ds1",),)


def test_digest_must_match_when_wanted() -> None:
    wanted = ImageRef("reg/ds-ee", "9.3.1.2", DIG)
    assert not NEW.satisfies(wanted)
    assert ImageRef("reg/ds-ee", "9.3.1.2", DIG).satisfies(wanted)
    assert wanted.satisfies(NEW)
    assert wanted.ref == f"reg/ds-ee:9.3.1.2@{DIG}"
    with pytest.raises(ValueError):
        ImageRef("reg/ds-ee", "9.3.1.2", "sha256:short")


def test_bad_inputs_refused() -> None:
    with pytest.raises(ValueError):
        plan_rollout(nodes(("ds1", "az1", 0)), NEW, max_per_wave=0)
    with pytest.raises(ValueError):
        plan_rollout(nodes(("ds1", "az1", 0), ("ds1", "az2", 0)), NEW)
