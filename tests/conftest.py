"""Shared test fixtures: where the repo is and how to run pyinfra from it (lab/client.py).

The repo root is on sys.path through pytest's ``pythonpath = ["."]`` (and the venv's .pth).
"""

from __future__ import annotations

from pathlib import Path

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
