"""Fixtures shared by the lab's Docker-free unit tests (lab lifecycle, address moves)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab import engine


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private lab state directory ($OOHA_LAB_DIR) for one test."""
    monkeypatch.setenv("OOHA_LAB_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any contact with the Docker engine fails the test: these commands must refuse before it."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the engine was contacted")

    monkeypatch.setattr(engine, "client", refuse)
    monkeypatch.setattr(engine, "ensure_engine", refuse)
