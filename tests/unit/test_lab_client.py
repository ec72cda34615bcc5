"""lab/client.py pieces that need no lab: the poller's deadline, the lab lock's re-entrancy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lab import client
from lab.client import LOCK_HELD_ENV, WaitTimeout, lab_lock, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", {"leader": "data2"}])
    assert wait_for("a leader", lambda: next(answers), 5, interval=0.01) == {"leader": "data2"}


def test_wait_for_fails_at_the_deadline_naming_what_and_the_last_value() -> None:
    calls = []
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waiting for three nodes \(last: \[\]\)") as caught:
        wait_for("three nodes", lambda: calls.append(1) or [], 0.3, interval=0.05)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5
    assert len(calls) >= 3  # polled, and once more at the deadline
    assert isinstance(caught.value, AssertionError)  # a failed expectation, as pytest reports it


def test_wait_for_asks_at_least_once_even_with_no_time() -> None:
    assert wait_for("at once", lambda: "yes", 0) == "yes"


def test_wait_for_propagates_errors_unless_tolerated() -> None:
    def refuses() -> bool:
        raise ConnectionRefusedError("not yet")

    with pytest.raises(ConnectionRefusedError):
        wait_for("a port", refuses, 5, interval=0.01)
    with pytest.raises(WaitTimeout, match="ConnectionRefusedError"):
        wait_for("a port", refuses, 0.1, interval=0.01, tolerate=(OSError,))
    answers = iter([ConnectionRefusedError("booting"), "up"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for("a port", flaky, 5, interval=0.01, tolerate=(OSError,)) == "up"


def test_wait_for_refuses_the_old_argument_order() -> None:
    with pytest.raises(TypeError):
        wait_for(lambda: True, 5, "what")  # type: ignore[arg-type]


CHILD = """
import sys
from lab.client import lab_lock
with lab_lock(exclusive=True, timeout=float(sys.argv[2]), path=sys.argv[1]):
    print("child got it")
"""


def _child(lock: str, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, lock, str(timeout)], capture_output=True, text=True,
                          timeout=30, env=env, cwd=client.REPO)


@pytest.fixture()
def no_held_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_HELD_ENV, raising=False)


@pytest.mark.usefixtures("no_held_env")
def test_lab_lock_nests_and_a_child_of_the_holder_does_not_deadlock(tmp_path) -> None:
    lock = str(tmp_path / "lab.lock")
    with lab_lock(exclusive=True, timeout=2, path=lock):
        assert os.environ[LOCK_HELD_ENV] == "1"
        with lab_lock(exclusive=False, timeout=2, path=lock):  # nested: would wait for ever on the file
            pass
        child = _child(lock, 2, dict(os.environ))  # e.g. a test running a benchmark
        assert child.returncode == 0 and "child got it" in child.stdout, child.stderr
    assert LOCK_HELD_ENV not in os.environ


@pytest.mark.usefixtures("no_held_env")
def test_lab_lock_excludes_another_process_that_does_not_hold_it(tmp_path) -> None:
    lock = str(tmp_path / "lab.lock")
    with lab_lock(exclusive=True, timeout=2, path=lock):
        env = {k: v for k, v in os.environ.items() if k != LOCK_HELD_ENV}
        child = _child(lock, 1, env)
    assert child.returncode != 0 and "TimeoutError" in child.stderr, child.stdout + child.stderr
    with lab_lock(exclusive=True, timeout=2, path=lock):  # released: free again
        pass


def test_lab_lock_takes_nothing_when_the_caller_holds_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_HELD_ENV, "1")  # e.g. under `flock -x /tmp/ooha-lab.lock ...`
    lock = tmp_path / "lab.lock"
    with lab_lock(exclusive=True, timeout=1, path=str(lock)):
        pass
    assert not lock.exists()
    assert os.environ[LOCK_HELD_ENV] == "1"


@pytest.mark.usefixtures("no_held_env")
def test_lab_lock_shared_holders_coexist(tmp_path) -> None:
    lock = str(tmp_path / "lab.lock")
    shared = """
import sys
from lab.client import lab_lock
with lab_lock(exclusive=False, timeout=1, path=sys.argv[1]):
    print("shared too")
"""
    with lab_lock(exclusive=False, timeout=2, path=lock):
        env = {k: v for k, v in os.environ.items() if k != LOCK_HELD_ENV}
        child = subprocess.run([sys.executable, "-c", shared, lock], capture_output=True, text=True, timeout=30, env=env)
    assert child.returncode == 0 and "shared too" in child.stdout, child.stderr


def test_client_does_not_import_pytest() -> None:
    probe = subprocess.run([sys.executable, "-c", "import sys, lab.client, lab.workload; print('pytest' in sys.modules)"],
                           capture_output=True, text=True, timeout=60, cwd=client.REPO)
    assert probe.stdout.strip() == "False", probe.stderr


def test_pyinfra_output_helpers() -> None:
    output = ("--> Results:\n    Operation            Hosts   Success   Error   No Change\n"
              "    Base | apt packages   8       2         -       6\n    Base | sysctl   8   -   -   8\n"
              "ds1  base  OK   everything fine\nlb1  loadbalancer  FAIL  no VIP\nsvc1 base OK ignored\n")
    assert client.changed_operations(output) == {"Base | apt packages": "2"}
    assert client.report_lines(output) == {("ds1", "base"): "OK everything fine", ("lb1", "loadbalancer"): "FAIL no VIP"}
    result = subprocess.CompletedProcess([], 1, stdout=output, stderr="")
    assert client.explain(result).splitlines()[:2] == ["report FAIL lines:", "lb1  loadbalancer  FAIL  no VIP"]
