"""Rollout journal: the phase state machine, JSON round trip, resume from any phase, start decisions."""

from __future__ import annotations

import pytest

from ooha.rollout.journal import (Journal, Phase, Status, decide_start, interrupt, new_journal, next_step, record,
                                  resume)
from ooha.rollout.progress import elapsed_text, progress_line
from ooha.rollout.release import ImageRef

OLD = ImageRef("reg/ds-ee", "9.3.0.1")
NEW = ImageRef("reg/ds-ee", "9.3.1.2")


def journal(compat: bool = True, waves: list[list[str]] | None = None) -> Journal:
    waves = waves if waves is not None else [["ds2"], ["ds1"], ["ds3"]]
    prev = {n: OLD for w in waves for n in w}
    return new_journal("r1", "patch", NEW, waves, prev, compat, "admin@ctl", now=100.0)


def walk(j: Journal, outcomes: list[bool]) -> list[tuple[str, int]]:
    seen = []
    for i, ok in enumerate(outcomes):
        seen.append((j.phase.value, j.wave))
        record(j, ok, now=200.0 + i, detail="" if ok else "boom")
    return seen


def test_happy_path_walks_every_phase_of_every_wave_then_done() -> None:
    j = journal()
    seen = walk(j, [True] * (2 + 5 * 3))
    assert seen[:7] == [("preflight", -1), ("compat", -1), ("drain", 0), ("replace", 0), ("health", 0), ("return", 0), ("soak", 0)]
    assert seen[-1] == ("soak", 2)
    assert j.status is Status.DONE and j.finished_nodes() == ["ds2", "ds1", "ds3"]


def test_compat_skipped_when_not_needed() -> None:
    j = journal(compat=False)
    record(j, True, 101.0)
    assert (j.phase, j.wave) == (Phase.DRAIN, 0)


@pytest.mark.parametrize("failing", [Phase.REPLACE, Phase.HEALTH, Phase.RETURN, Phase.SOAK])
def test_failure_after_drain_reverts_the_wave_and_aborts(failing: Phase) -> None:
    j = journal()
    record(j, True, 1)
    record(j, True, 2)  # compat
    while j.phase is not failing:
        record(j, True, 3)
    record(j, False, 4, "healthcheck false")
    assert (j.phase, j.wave, j.status) == (Phase.REVERT, 0, Status.RUNNING)
    record(j, True, 5)
    record(j, True, 6)
    record(j, True, 7)
    assert j.status is Status.ABORTED
    assert j.reason == f"{failing.value} failed on ds2: healthcheck false"
    assert j.finished_nodes() == []


def test_failed_drain_goes_straight_to_revert_return_and_failed_revert_stops() -> None:
    j = journal(compat=False)
    record(j, True, 1)
    record(j, False, 2, "redis unreachable")
    assert j.phase is Phase.REVERT_RETURN
    j2 = journal(compat=False)
    record(j2, True, 1)
    record(j2, True, 2)
    record(j2, False, 3, "pull failed")
    record(j2, False, 4, "old image gone")
    assert j2.status is Status.REVERT_FAILED
    assert "replace failed on ds2: pull failed" in j2.reason and "revert failed" in j2.reason
    with pytest.raises(ValueError):
        next_step(j2, True)


def test_preflight_or_compat_failure_refuses_without_change() -> None:
    j = journal()
    record(j, False, 1, "no sync standby")
    assert j.status is Status.REFUSED
    j = journal()
    record(j, True, 1)
    record(j, False, 2, "healthcheck false")
    assert j.status is Status.REFUSED and j.phase is Phase.COMPAT


def test_json_round_trip_and_resume_from_every_phase() -> None:
    j = journal()
    for step in range(2 + 5 * 3):
        copy = Journal.from_json(j.to_json())
        assert copy.to_dict() == j.to_dict()
        interrupt(copy, now=300.0)
        assert copy.status is Status.INTERRUPTED
        back = resume(Journal.from_json(copy.to_json()), now=400.0)
        assert (back.phase, back.wave, back.status) == (j.phase, j.wave, Status.RUNNING)
        record(j, True, now=500.0 + step)
    with pytest.raises(ValueError):
        resume(j, 600.0)


def test_unknown_format_and_missing_previous_refused() -> None:
    data = journal().to_dict()
    data["format"] = 2
    with pytest.raises(ValueError):
        Journal.from_dict(data)
    with pytest.raises(ValueError):
        new_journal("r", "patch", NEW, [["ds1"]], {}, True, "me", 0.0)
    with pytest.raises(ValueError):
        new_journal("r", "patch", NEW, [["ds1"], ["ds1"]], {"ds1": OLD}, True, "me", 0.0)


def test_empty_plan_after_preflight_is_done() -> None:
    j = journal(compat=False, waves=[])
    record(j, True, 1)
    assert j.status is Status.DONE


def test_start_decisions() -> None:
    assert decide_start(None, "patch", NEW).action == "new"
    j = journal()
    record(j, True, 1)
    assert decide_start(j, "patch", NEW).action == "resume"
    assert decide_start(j, "rollback", OLD).action == "supersede"
    refused = decide_start(j, "patch", ImageRef("reg/ds-ee", "9.4.0.0"))
    assert refused.action == "refuse" and "ds_version=9.3.1.2" in refused.message
    j.status = Status.ABORTED
    assert decide_start(j, "patch", NEW).action == "new"


def test_progress_line() -> None:
    j = journal(compat=False)
    record(j, True, 1)
    line = progress_line(j, started=0.0, now=134.0, azs={"ds2": "az2"}, detail="3 session(s) left")
    assert line == "[  2m14s] wave 1/3 ds2 (az2) drain: 3 session(s) left"
    assert elapsed_text(3725) == "1h02m" and elapsed_text(5) == "5s"
