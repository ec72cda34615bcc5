"""Parsers of the base facts, and the report's formatting and registry."""

from __future__ import annotations

from types import SimpleNamespace

from ooha.layers.base import BASE_DEFAULTS, wanted_sysctls
from ooha.report import CheckResult, Registered, format_line, front_door_line, poll, registry_for, run_checks
from ooha.facts.base import AptProxyConfigured, TimeZoneName, parse_chrony_sources, parse_chrony_tracking

TRACKING_SYNCED = """\
Reference ID    : C6121A0A (198.18.20.10)
Stratum         : 9
Ref time (UTC)  : Sat Nov 21 15:20:01 2026
System time     : 0.000012345 seconds slow of NTP time
Last offset     : -0.000001234 seconds
RMS offset      : 0.000001234 seconds
Frequency       : 1.234 ppm fast
Residual freq   : +0.001 ppm
Skew            : 0.123 ppm
Root delay      : 0.000123 seconds
Root dispersion : 0.000456 seconds
Update interval : 2.0 seconds
Leap status     : Normal""".splitlines()

TRACKING_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Leap status     : Not synchronised""".splitlines()


def test_tracking_synced() -> None:
    parsed = parse_chrony_tracking(TRACKING_SYNCED)
    assert parsed == {
        "reference_id": "C6121A0A", "reference": "198.18.20.10", "stratum": 9,
        "offset_seconds": -0.000012345, "leap_status": "Normal",
    }


def test_tracking_unsynced_has_no_reference() -> None:
    parsed = parse_chrony_tracking(TRACKING_UNSYNCED)
    assert parsed is not None and parsed["reference"] is None and parsed["leap_status"] == "Not synchronised"


def test_tracking_without_chronyd_is_none() -> None:
    assert parse_chrony_tracking(["506 Cannot talk to daemon"]) is None


def test_sources() -> None:
    lines = [
        "MS Name/IP address         Stratum Poll Reach LastRx Last sample",
        "===============================================================================",
        "^* 198.18.20.10                  8   6   377    12   +123us[ +150us] +/-  200us",
        "^? 198.18.20.11                  0   6     0     -     +0ns[   +0ns] +/-    0ns",
    ]
    assert parse_chrony_sources(lines) == [
        {"address": "198.18.20.10", "state": "*", "stratum": 8},
        {"address": "198.18.20.11", "state": "?", "stratum": 0},
    ]


def test_apt_proxy_and_time_zone_facts() -> None:
    assert AptProxyConfigured().process(['Acquire::http::Proxy "http://198.18.20.10:3142";']) == "http://198.18.20.10:3142"
    assert AptProxyConfigured().process(["// nothing"]) is None
    assert TimeZoneName().process(["/usr/share/zoneinfo/Etc/UTC"]) == "Etc/UTC"


def test_wanted_sysctls_merges_both_baselines() -> None:
    data = SimpleNamespace(sysctl_baseline={"net.core.somaxconn": 1}, sysctl_host_baseline={"vm.swappiness": 2})
    assert wanted_sysctls(data) == {"net.core.somaxconn": 1, "vm.swappiness": 2}
    assert all(k.startswith("net.") for k in BASE_DEFAULTS["sysctl_baseline"])
    assert all(k.startswith("vm.") for k in BASE_DEFAULTS["sysctl_host_baseline"])


def test_report_line_shows_fix_only_on_failure() -> None:
    assert format_line("ds1", "base", CheckResult(True, "fine", "never shown")) == "ds1      base       OK    fine"
    assert format_line("ds1", "base", CheckResult(False, "broken", "do X")).endswith("FAIL  broken; fix: do X")


def test_registry_is_built_from_the_layer_table_and_a_crashing_check_is_a_failure() -> None:
    from ooha.layers.base import check_base
    from ooha.stack import LAYER_NAMES

    assert [entry.layer for entry in registry_for(None)] == list(LAYER_NAMES)
    [base] = registry_for(["base"])
    assert base.check is check_base and base.front_door is None

    def explodes(_target):
        raise RuntimeError("boom")

    registry = [Registered("zz-test", explodes, applies=lambda target: target.name == "x")]
    assert run_checks(SimpleNamespace(name="y"), registry) == []  # not applicable: not run
    [(layer, result)] = run_checks(SimpleNamespace(name="x"), registry)
    assert layer == "zz-test" and not result.ok and "boom" in result.detail


def test_front_door_line_only_when_a_layer_of_the_run_has_the_front_door() -> None:
    # validate.py --data layers=redis and backup.py: no false "not deployed yet".
    assert front_door_line(registry_for(["base", "redis"])) is None
    assert front_door_line(registry_for(["backup"])) is None
    [lb] = registry_for(["loadbalancer"])
    assert lb.front_door is not None
    door = [Registered("lb", lambda _t: CheckResult(True, ""), lambda _t: True, lambda: "front door: here")]
    assert front_door_line(door) == "front door: here"


def test_poll_returns_first_passing_result_and_gives_up_at_deadline() -> None:
    calls = []

    def flips(_target):
        calls.append(1)
        return CheckResult(len(calls) >= 3, f"call {len(calls)}")

    assert poll(flips, None, deadline_seconds=10, interval=0.01).detail == "call 3"
    never = poll(lambda _t: CheckResult(False, "no"), None, deadline_seconds=0.05, interval=0.01)
    assert not never.ok


def test_poll_stops_at_a_final_failure() -> None:
    calls = []

    def down(_target):
        calls.append(1)
        return CheckResult(False, "daemon down", final=True)

    assert not poll(down, None, deadline_seconds=10, interval=0.01).ok
    assert len(calls) == 1


def test_report_table_follows_inventory_order() -> None:
    from ooha.report import report_table

    results = {
        "ds1": [("base", CheckResult(True, "a"))],
        "lb1": [("base", CheckResult(False, "b", "c"))],
    }
    lines = report_table(results, ["lb1", "ds1"])
    assert [line.split()[0] for line in lines] == ["lb1", "ds1"]
