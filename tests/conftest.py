"""Shared test helpers: where the repo is and how to run pyinfra from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))

# Test modules import helpers as `tests.<dir>.<module>`; `pytest` (unlike
# `python -m pytest`) does not put the repo root on sys.path by itself.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def run_pyinfra(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pyinfra CLI from the repo root (so config.py applies), bounded in time."""
    return subprocess.run(
        [PYINFRA, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYINFRA_PROGRESS": "off", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (pyinfra must run from here to load config.py)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def pyinfra_cli():
    """``run_pyinfra(*args, timeout=..., env=...)``: the pyinfra CLI from the repo root."""
    return run_pyinfra
