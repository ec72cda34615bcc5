"""ooha/ops/barrier.py: the barrier yields no command (its body only logs a noop), and a run of it
through the pyinfra CLI on @local changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

from pyinfra.context import ctx_host

from ooha.ops.barrier import layer_converged
from tests.conftest import PYINFRA
from tests.integration.deploytools import changed_operations


def test_the_barrier_yields_no_command() -> None:
    noops: list[str] = []
    with ctx_host.use(SimpleNamespace(noop=noops.append)):
        assert list(layer_converged._inner(layer="redis")) == []
    assert noops == ["layer redis done here"]


def test_cli_the_barrier_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text(
        "from ooha.ops.barrier import layer_converged\n"
        "for name in ('base', 'redis'):\n"
        "    layer_converged(name=f'Layer {name} converged on every host', layer=name)\n"
    )
    result = subprocess.run(
        [PYINFRA, "@local", "deploy.py", "-y"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYINFRA_PROGRESS": "off"}, stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Layer redis converged on every host" in output
    assert changed_operations(output) == {}, output[-3000:]
