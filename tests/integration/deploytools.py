"""Run the lab's deploys from tests.

Reading pyinfra's output (changed operations, report lines, ``explain``) is lab/client.py,
shared with the benchmarks; it is re-exported here for tests/unit/test_private_files.py.
"""

from __future__ import annotations

import subprocess

from lab.client import TARGETS, changed_operations, explain, output_of, report_lines

__all__ = ["TARGETS", "changed_operations", "deploy", "explain", "output_of", "report_lines"]


def deploy(pyinfra_cli, deploy_file: str = "deploys/ha.py", *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a deploy against the lab, bounded; the output is kept for assertions."""
    return pyinfra_cli("-y", "inventories/lab.py", deploy_file, *extra, timeout=1200)
