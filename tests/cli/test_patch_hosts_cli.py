"""deploys/patch_hosts.py through the real pyinfra CLI: bad options are refused at inventory load.

Same harness as test_preflight_cli.py (a copy of inventories/example.py on unroutable addresses,
generated secrets and keys, ``OOHA_PREFLIGHT_ONLY=1``): every bad ``patch_packages`` /
``patch_reboot`` / rollout key is one line naming the key with a fix, all of them at once, before
pyinfra connects to anything; valid options pass the preflight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_preflight_cli import Case, Outcome, _never_connected_nor_leaked, _run

JOB = "patch_hosts.py"

BAD = [
    Case("packages-upper-case", "patch_packages", job=JOB, args=("--data", "patch_packages=OpenSSL")),
    Case("packages-shell-chars", "patch_packages", job=JOB, args=("--data", "patch_packages=libssl3;reboot")),
    Case("reboot-unknown", "patch_reboot", job=JOB, args=("--data", "patch_reboot=sometimes")),
    Case("lock-id-not-an-id", "rollout_break_lock", job=JOB, args=("--data", "rollout_break_lock=r1 x")),
]

VALID = [
    Case("valid-all", "", job=JOB),
    Case("valid-selection", "", job=JOB, args=("--data", "patch_packages=ooha-lab-canary,linux-image-*,libc6:amd64",
                                              "--data", "patch_reboot=never")),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("patch-hosts")
    cases = BAD + VALID
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = list(pool.map(lambda case: _run(base, case), cases))
    return {case.id: result for case, result in zip(cases, results)}


def _lines_naming(output: str, key: str) -> list[str]:
    return [line for line in output.splitlines() if f"{key}:" in line]


@pytest.mark.parametrize("case", BAD, ids=[case.id for case in BAD])
def test_a_bad_option_is_refused_before_connecting(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.id]
    assert outcome.code != 0, outcome.output
    _never_connected_nor_leaked(outcome)
    lines = _lines_naming(outcome.output, case.field)
    assert len(lines) == 1 and "fix:" in lines[0], outcome.output
    assert "no host was contacted" in outcome.output


@pytest.mark.parametrize("case", VALID, ids=[case.id for case in VALID])
def test_valid_options_pass_the_preflight(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.id]
    assert outcome.code == 0, outcome.output
    assert "preflight: OK" in outcome.output and JOB in outcome.output
    _never_connected_nor_leaked(outcome)


def test_every_bad_option_is_one_line_at_once(tmp_path: Path) -> None:
    case = Case("several", "", job=JOB, args=("--data", "patch_packages=Bad_Name,libssl3", "--data", "patch_reboot=yes",
                                              "--data", "rollout_lock_stale_seconds=10"))
    outcome = _run(tmp_path, case)
    assert outcome.code != 0
    _never_connected_nor_leaked(outcome)
    for key in ("patch_packages", "patch_reboot", "rollout_lock_stale_seconds"):
        assert len(_lines_naming(outcome.output, key)) == 1, (key, outcome.output)
    line = _lines_naming(outcome.output, "patch_packages")[0]
    assert "'Bad_Name'" in line and "'libssl3'" not in line, outcome.output  # the good name is not a problem
