"""The report's fleet line: the DS nodes' answered versions, mixed flagged outside a rollout."""

from __future__ import annotations

import pytest

from ooha import report
from ooha.report import CheckResult, add_fleet_row, fleet_result


def test_one_version_is_ok_and_names_every_node() -> None:
    result = fleet_result({"ds2": "9.3.1.2", "ds1": "9.3.1.2", "ds3": "9.3.1.2"}, None)
    assert result == CheckResult(True, "9.3.1.2 on ds1, ds2, ds3")


def test_mixed_outside_a_rollout_fails_with_the_way_out() -> None:
    result = fleet_result({"ds1": "9.3.1.2", "ds2": "9.3.0.1", "ds3": "9.3.0.1"}, False)
    assert not result.ok
    assert result.detail == "mixed versions outside a rollout: 9.3.0.1 on ds2, ds3; 9.3.1.2 on ds1"
    assert "deploys/rollback.py" in result.fix and "deploys/patch.py" in result.fix


def test_mixed_during_a_rollout_is_the_expected_state() -> None:
    result = fleet_result({"ds1": "9.3.1.2", "ds2": "9.3.0.1"}, True)
    assert result.ok and result.detail.endswith("(rollout in progress)")


def test_mixed_with_an_unreadable_lock_fails_and_says_so() -> None:
    result = fleet_result({"ds1": "9.3.1.2", "ds2": "9.3.0.1"}, None)
    assert not result.ok and "rollout lock not readable" in result.detail


def _ds(version: str, ok: bool = True) -> list[tuple[str, CheckResult]]:
    return [("base", CheckResult(True, "chrony")),
            ("documentserver", CheckResult(ok, "running", facts={"version": version} if ok else {}))]


def test_the_row_goes_to_the_first_node_in_inventory_order_and_only_ok_nodes_count(monkeypatch) -> None:
    monkeypatch.setattr(report, "_rollout_open", lambda: pytest.fail("a uniform fleet never reads the lock"))
    results = {"ds3": _ds("9.3.1.2"), "ds2": _ds("9.3.1.2"), "ds1": _ds("9.3.0.1", ok=False), "lb1": []}
    add_fleet_row(results, ["lb1", "ds1", "ds2", "ds3"])
    assert results["ds2"][-1] == ("fleet", CheckResult(True, "9.3.1.2 on ds2, ds3"))
    assert [layer for layer, _ in results["ds3"]] == ["base", "documentserver"]
    add_fleet_row(results, ["lb1", "ds1", "ds2", "ds3"])  # printed twice: still one row
    assert [layer for layer, _ in results["ds2"]].count("fleet") == 1


def test_a_mixed_fleet_asks_the_lock_and_no_ds_check_means_no_row(monkeypatch) -> None:
    monkeypatch.setattr(report, "_rollout_open", lambda: False)
    results = {"ds1": _ds("9.3.1.2"), "ds2": _ds("9.3.0.1")}
    add_fleet_row(results, ["ds1", "ds2"])
    assert results["ds1"][-1][0] == "fleet" and not results["ds1"][-1][1].ok
    only_lb = {"lb1": [("loadbalancer", CheckResult(True, "ok"))]}
    add_fleet_row(only_lb, ["lb1"])
    assert only_lb == {"lb1": [("loadbalancer", CheckResult(True, "ok"))]}
