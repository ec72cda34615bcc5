"""lab.workload's host-patching helpers (the drill's and the benchmark's figures), without a lab."""

from __future__ import annotations

import threading
import time

from lab.workload import (LineClock, PatchTimeline, WritePause, hold_session, patch_timeline, write_pauses)


def test_write_pauses_span_from_the_last_ack_to_the_next_and_count_the_failures_between() -> None:
    events = [("ok", 1, 10.0), ("ok", 2, 10.1), ("fail", 3, 10.4), ("fail", 4, 11.0), ("ok", 5, 12.1),
              ("ok", 6, 12.2), ("ok", 7, 14.0), ("ok", 8, 14.1)]
    pauses = write_pauses(events, threshold=1.0)
    assert [(p.start, round(p.seconds, 3), p.failed) for p in pauses] == [(10.1, 2.0, 2), (12.2, 1.8, 0)]
    assert all(isinstance(p, WritePause) for p in pauses)
    assert write_pauses(events, threshold=2.5) == []


def test_a_writer_that_died_or_never_started_has_no_pause() -> None:
    assert write_pauses([("ok", 1, 1.0), ("ok", 2, 1.1), ("fail", 3, 1.2), ("fail", 4, 9.0)]) == []
    assert write_pauses([("fail", 1, 1.0), ("fail", 2, 5.0), ("ok", 3, 9.0)]) == []
    assert write_pauses([]) == []


LINES = [
    "[     3s] observing every host (apt-get update, pending updates, roles); packages ooha-lab-canary, reboot auto",
    "[    20s] plan: ds3 -> data1 -> lb1",
    "    ds3 (tier ds): ds_drain apt_upgrade reboot host_up no_pending_left ds_healthy ds_return",
    "[    25s] host 1/3 ds3 (az3) step ds_drain: start",
    "[    26s] host 1/3 ds3 (az3) step ds_drain: 3 session(s) left",
    "[    35s] host 1/3 ds3 (az3) step ds_drain: OK 0 sessions left after 9 s",
    "[    36s] host 1/3 ds3 (az3) step reboot: start",
    "[    60s] host 1/3 ds3 (az3) step reboot: OK back in 24 s",
    "[    61s] host 1/3 ds3 (az3): patched, rebooted in 36s",
    "[    62s] host 2/3 data1 (az1): fresh look before its turn",
    "[    70s] host 2/3 data1 (az1) step patroni_switchover_to_sync_standby: start",
    "[    72s] host 2/3 data1 (az1) step patroni_switchover_to_sync_standby: FAILED: no sync standby; fix: wait",
    "host patching abc failed in 1m12s: data1 step patroni_switchover_to_sync_standby failed: no sync standby",
]


def test_the_timeline_has_each_turn_and_step_on_the_clock_of_the_lines() -> None:
    timeline = patch_timeline([(1000.0 + i, line) for i, line in enumerate(LINES)])
    assert timeline.hosts() == ["ds3", "data1"]
    assert timeline.turns["ds3"] == (1003.0, 1008.0)
    drain = timeline.step("ds3", "ds_drain")
    assert drain is not None and (drain.start, drain.end, drain.ok) == (1003.0, 1005.0, True)
    assert drain.seconds == 2.0 and drain.detail.startswith("0 sessions left")
    failed = timeline.step("data1", "patroni_switchover_to_sync_standby")
    assert failed is not None and failed.ok is False and failed.detail.startswith("no sync standby")
    assert timeline.host_at(1006.5) == "ds3" and timeline.host_at(1010.0) == "data1" and timeline.host_at(999.0) is None
    assert timeline.step("lb1", "vip_move") is None
    assert timeline.where(1004.0) == "ds3 ds_drain" and timeline.where(1008.0) == "ds3 between reboot and its end" and timeline.where(1.0) == "-"
    assert isinstance(patch_timeline([]), PatchTimeline)


def test_the_line_clock_stamps_each_line_when_it_appears() -> None:
    class Run:
        lines: list[str] = []

    run = Run()
    run.lines = ["a"]
    clock = LineClock(run)
    time.sleep(0.5)
    run.lines.append("b")
    stamped = clock.stop()
    assert [line for _, line in stamped] == ["a", "b"]
    assert stamped[1][0] - stamped[0][0] >= 0.3


def test_a_released_session_ends_on_its_own_at_its_next_ping() -> None:
    class Socket:
        closed = False

        def ping(self) -> "Socket":
            return self

        def wait(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            self.closed = True

    ws, release = Socket(), threading.Event()
    threading.Timer(0.5, release.set).start()
    t0 = time.monotonic()
    assert hold_session(ws, 30.0, release) is None
    assert time.monotonic() - t0 < 3 and ws.closed
