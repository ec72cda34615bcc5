"""Shared test fixtures: where the repo is and how to run pyinfra from it (lab/client.py).

The repo root is on sys.path through pytest's ``pythonpath = ["."]`` (and the venv's .pth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.client import PYINFRA, REPO, run_pyinfra

REPO_ROOT = REPO
__all__ = ["PYINFRA", "REPO_ROOT", "run_pyinfra"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (pyinfra must run from here to load config.py)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def pyinfra_cli():
    """``run_pyinfra(*args, timeout=..., env=...)``: the pyinfra CLI from the repo root."""
    return run_pyinfra


_FIGURES: list[str] = []
"""Lines that passing lab tests printed (the drills' measured figures), shown at the end of the run."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep what a passing test printed: pytest would otherwise drop it with the captured output."""
    if report.when == "call" and report.passed and "lab" in report.keywords and report.capstdout.strip():
        name = report.nodeid.split("::")[-1]
        _FIGURES.extend(f"{name}: {line.strip()}" for line in report.capstdout.splitlines() if line.strip())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the drills measured, so CI's log holds them (a benchmark still times them properly)."""
    if _FIGURES:
        terminalreporter.section("figures printed by passing tests")
        for line in _FIGURES:
            terminalreporter.write_line(line)
