"""Release ledger records and the cluster lock's staleness rules."""

from __future__ import annotations

import pytest

from ooha.rollout import ledger as L
from ooha.rollout import lock as K
from ooha.rollout.journal import Status, new_journal, record
from ooha.rollout.release import ImageRef

A = ImageRef("reg/ds-ee", "9.3.0.1")
B = ImageRef("reg/ds-ee", "9.3.1.2")
C = ImageRef("reg/ds-ee", "9.3.2.0")


def test_node_changed_keeps_since_on_same_image_and_shifts_previous_on_change() -> None:
    first = L.node_changed(None, "ds1", A, 10.0, None, verified=False)
    assert first.previous is None and first.since == 10.0
    same = L.node_changed(first, "ds1", A, 20.0, "r1", verified=True)
    assert same.since == 10.0 and same.healthy_verified
    moved = L.node_changed(same, "ds1", B, 30.0, "r2", verified=False)
    assert (moved.current, moved.previous, moved.since, moved.rollout_id) == (B, A, 30.0, "r2")
    assert L.NodeRelease.from_dict(moved.to_dict()) == moved


def test_rollback_target_from_the_ledger() -> None:
    rows = [L.NodeRelease("ds1", B, 30.0, "r2", A), L.NodeRelease("ds2", B, 31.0, "r2", A), L.NodeRelease("ds3", B, 32.0, "r2", A)]
    assert L.rollback_target(rows).target == A
    mixed = rows[:2] + [L.NodeRelease("ds3", B, 33.0, "r3", C)]
    assert "different releases" in L.rollback_target(mixed).problem
    assert "no previous" in L.rollback_target([L.NodeRelease("ds1", B, 1.0, None)]).problem
    assert "ds_version" in L.rollback_target([]).problem


def test_a_revert_restores_the_row_so_rollback_still_finds_the_real_previous() -> None:
    before = L.NodeRelease("ds2", B, 31.0, "r2", A, healthy_verified=True)
    during = L.node_changed(before, "ds2", C, 50.0, "r4", verified=False)  # canary replaced, then its soak failed
    assert during.previous == B
    after = L.node_reverted(before, "ds2", B, 60.0, "r4")
    assert after == before
    rows = [L.NodeRelease("ds1", B, 30.0, "r2", A), after, L.NodeRelease("ds3", B, 32.0, "r2", A)]
    assert L.rollback_target(rows).target == A
    # no row before (first rollout on a fleet the ledger did not know): a plain change
    assert L.node_reverted(None, "ds2", B, 60.0, "r4").previous is None


def test_verified_images_from_rows_and_soaked_rollouts() -> None:
    j = new_journal("r2", "patch", B, [["ds1"]], {"ds1": A}, False, "me", 0.0)
    for i in range(6):
        record(j, True, float(i))
    rec = L.rollout_record(j)
    assert rec.outcome == "done" and rec.ended == 5.0 and rec.who == "me"
    rows = [L.NodeRelease("ds1", A, 1.0, None, healthy_verified=True)]
    assert L.verified_images(rows, [rec]) == {A.ref, B.ref}
    assert L.verified_images([], []) == set()


def test_fleet_line_flags_mixed_versions_outside_a_rollout() -> None:
    rows = [L.NodeRelease("ds1", A, 1.0, None), L.NodeRelease("ds2", B, 2.0, "r")]
    ok, text = L.fleet_line(rows, rollout_open=False)
    assert not ok and "mixed versions outside a rollout" in text
    ok, text = L.fleet_line(rows, rollout_open=True)
    assert ok and text.endswith("(rollout in progress)")
    assert L.fleet_line(rows[:1], False) == (True, f"{A.ref} on ds1")
    assert L.final_outcome_exit_code(Status.DONE) == 0 and L.final_outcome_exit_code(Status.ABORTED) == 1


def lock(heartbeat: float = 1000.0) -> K.LockRecord:
    return K.LockRecord("r7", "tok", "alice@ctl1", 4242, "patch 9.3.1.2", 900.0, heartbeat, 300.0, "drain")


def test_lock_free_is_acquired_and_held_lock_is_explained() -> None:
    assert K.decide_acquire(None, 0.0).action == "acquire"
    refused = K.decide_acquire(lock(), now=1100.0)
    assert refused.action == "refuse"
    assert "alice@ctl1 (pid 4242, patch 9.3.1.2, rollout r7, phase drain)" in refused.message
    assert "alive" in refused.message and "stale in 200 s" in refused.message


def test_stale_lock_is_explained_and_broken_only_explicitly_by_id() -> None:
    now = 1000.0 + 301.0
    assert "STALE" in K.decide_acquire(lock(), now).message
    assert K.decide_acquire(lock(), now).action == "refuse"
    assert K.decide_acquire(lock(), now, break_id="r8").action == "refuse"
    assert K.decide_acquire(lock(), now, break_id="r7").action == "break-and-acquire"
    assert "refusing to break a live lock" in K.decide_acquire(lock(), 1010.0, break_id="r7").message


def test_heartbeat_fences_a_lost_lock() -> None:
    beat = K.heartbeat(lock(), "tok", 1200.0, "soak")
    assert beat.heartbeat_at == 1200.0 and beat.phase == "soak" and not beat.is_stale(1400.0)
    with pytest.raises(K.LockLost):
        K.heartbeat(lock(), "other-token", 1200.0, "soak")
    assert K.LockRecord.from_dict(beat.to_dict()) == beat
    assert K.heartbeat_due(0.0, 30.0) and not K.heartbeat_due(0.0, 29.0)


def test_lock_timing_rule() -> None:
    assert K.timing_problems(300.0, 30.0) == []
    assert K.timing_problems(60.0, 30.0)


def test_a_previous_release_that_ran_healthy_here_stays_verified_after_a_patch() -> None:
    """rollback.py skips the compat gate for the release the fleet ran healthy before a patch."""
    from ooha.rollout.ledger import NodeRelease, node_changed, verified_images
    from ooha.rollout.release import ImageRef

    old, new = ImageRef("ds", "9.3.0.1"), ImageRef("ds", "9.3.1.2")
    first = node_changed(None, "ds1", old, 1.0, None, True)           # first sighting: serving, healthy
    after = node_changed(first, "ds1", new, 2.0, "r1", False)          # the patch's RETURN
    assert after.previous == old and after.previous_verified and not after.healthy_verified
    assert verified_images([after], []) == {old.ref}
    assert NodeRelease.from_dict(after.to_dict()) == after
    unverified = node_changed(node_changed(None, "ds1", old, 1.0, None, False), "ds1", new, 2.0, "r1", False)
    assert verified_images([unverified], []) == set()
