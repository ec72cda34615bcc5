"""Run the lab's deploys from tests.

Reading pyinfra's output (changed operations, report lines, ``explain``) is lab/client.py,
shared with the benchmarks; it is re-exported here for tests/unit/test_private_files.py.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

from lab.client import TARGETS, changed_operations, explain, lab_lock, output_of, report_lines

__all__ = ["TARGETS", "changed_operations", "deploy", "drill_lab", "explain", "output_of", "report_lines"]


def deploy(pyinfra_cli, deploy_file: str = "deploys/ha.py", *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a deploy against the lab, bounded; the output is kept for assertions."""
    return pyinfra_cli("-y", "inventories/lab.py", deploy_file, *extra, timeout=1200)


@contextlib.contextmanager
def drill_lab(request: Any, restore: Callable[[dict[str, Any]], None]) -> Iterator[dict[str, Any]]:
    """A drill module's lab: converged, under the exclusive lab lock for all its tests, and put
    back by ``restore`` once at the end, also after a failure (drills group to restore once)."""
    with lab_lock():
        lab = dict(request.getfixturevalue("converged"))
        try:
            yield lab
        finally:
            restore(lab)
