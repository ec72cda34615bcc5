"""The rollout driver's command-line plumbing and the rollout keys' validation (no lab)."""

from __future__ import annotations

import sys

import pytest

from ooha.rollout.live.driver import explicit_data, wave_command
from ooha.rollout.options import ROLLOUT_DEFAULTS, option_problems, rollout_options
from ooha.rollout.release import ImageRef

ARGV = [".venv/bin/pyinfra", "inventories/lab.py", "deploys/patch.py", "--data", "ds_version=9.3.1.2",
        "--data", "rollout_soak_seconds=10", "--data=lb_vip=198.18.10.100/24", "--data", "layers=redis"]


def test_a_wave_is_the_main_job_on_its_nodes_with_only_the_documentserver_layer_and_the_image() -> None:
    args = wave_command(ARGV, ["ds2"], ImageRef("registry:5000/ds", "9.3.0.1", "sha256:" + "a" * 64))
    assert args[:4] == [sys.executable, "-m", "pyinfra", "-y"]
    assert "deploys/ha.py" in args and "deploys/patch.py" not in args
    assert args[args.index("--limit") + 1] == "ds2"
    data = [args[i + 1] for i, a in enumerate(args) if a == "--data"] + [a[7:] for a in args if a.startswith("--data=")]
    assert "layers=documentserver" in data and "layers=redis" not in data
    assert "ds_version=9.3.0.1" in data and "ds_version=9.3.1.2" not in data
    assert "ds_image=registry:5000/ds" in data and f"ds_image_digest=sha256:{'a' * 64}" in data
    assert "lb_vip=198.18.10.100/24" in data            # the operator's own overrides are kept
    assert not any(d.startswith("rollout_") for d in data)  # the main job does not know the rollout's keys


def test_rollback_file_becomes_the_main_job_too_and_yes_is_not_doubled() -> None:
    args = wave_command([".venv/bin/pyinfra", "-y", "inv.py", "/x/deploys/rollback.py"], ["ds1", "ds3"], ImageRef("ds", "1"))
    assert args.count("-y") == 1 and "/x/deploys/ha.py" in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--limit"] == ["ds1", "ds3"]


def test_explicit_data_reads_the_command_line_only() -> None:
    assert explicit_data(ARGV, "ds_version") == "9.3.1.2"
    assert explicit_data(ARGV, "lb_vip") == "198.18.10.100/24"
    assert explicit_data(ARGV, "ds_image") is None


def test_rollout_keys_default_and_convert() -> None:
    options = rollout_options({"rollout_soak_seconds": "20"})
    assert options.rollout_soak_seconds == 20 and options.rollout_compat is True
    assert options.limits().node_capacity_sessions == ROLLOUT_DEFAULTS["rollout_node_capacity"]


@pytest.mark.parametrize("data, field", [
    ({"rollout_max_per_wave": 0}, "rollout_max_per_wave"),
    ({"rollout_soak_seconds": "soon"}, "rollout_soak_seconds"),
    ({"rollout_capacity_headroom": 1.5}, "rollout_capacity_headroom"),
    ({"rollout_break_lock": "r1; rm -rf"}, "rollout_break_lock"),
    ({"rollout_lock_stale_seconds": 60, "rollout_lock_heartbeat_seconds": 30}, "rollout_lock_stale_seconds"),
])
def test_each_bad_rollout_key_is_one_line_naming_it_and_the_fix(data: dict, field: str) -> None:
    lines = option_problems(data)
    assert len(lines) == 1 and lines[0].startswith(f"{field}: ") and "fix:" in lines[0]
    with pytest.raises(ValueError):
        rollout_options(data)


def test_the_operators_limit_and_exclude_never_reach_a_wave() -> None:
    args = wave_command(["pyinfra", "inv.py", "deploys/patch.py", "--limit", "ds1", "--exclude=ds3", "--data", "ds_version=2"],
                       ["ds2"], ImageRef("ds", "2"))
    assert [args[i + 1] for i, a in enumerate(args) if a == "--limit"] == ["ds2"]
    assert not any(a.startswith("--exclude") for a in args) and "ds1" not in args
