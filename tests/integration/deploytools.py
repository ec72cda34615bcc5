"""Run the lab's deploys from tests and read pyinfra's output: changed operations, report lines."""

from __future__ import annotations

import re
import subprocess

TARGETS = ("lb1", "lb2", "ds1", "ds2", "ds3", "data1", "data2", "data3")
RESULT_ROW = re.compile(
    r"^\s*(?P<op>.+?)\s{2,}(?P<hosts>\d+)\s+(?P<success>\d+|-)\s+(?P<error>\d+|-)\s+(?P<no_change>\d+|-)\s*$"
)


def deploy(pyinfra_cli, deploy_file: str = "deploys/ha.py", *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a deploy against the lab, bounded; the output is kept for assertions."""
    return pyinfra_cli("-y", "inventories/lab.py", deploy_file, *extra, timeout=1200)


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def changed_operations(output: str) -> dict[str, str]:
    """Rows of pyinfra's results table whose Success column (= changed hosts) is not '-'."""
    table = output.split("--> Results:", 1)[-1]
    changed = {}
    for line in table.splitlines():
        match = RESULT_ROW.match(line)
        if match and match["op"].strip() != "Operation" and match["success"] != "-":
            changed[match["op"].strip()] = match["success"]
    return changed


def report_lines(output: str, targets: tuple[str, ...] = TARGETS) -> dict[tuple[str, str], str]:
    """{(host, layer): "OK ..." | "FAIL ..."} from the validation report, for ``targets``."""
    lines = {}
    for line in output.splitlines():
        match = re.match(r"^(\S+)\s+(\S+)\s+(OK|FAIL)\s+(.*)$", line)
        if match and match[1] in targets:
            lines[(match[1], match[2])] = f"{match[3]} {match[4]}"
    return lines


def explain(result: subprocess.CompletedProcess[str], tail: int = 3000) -> str:
    """A failed run's report FAIL lines first (they say what broke), then the output's tail."""
    output = output_of(result)
    failed = [line for line in output.splitlines() if re.match(r"^\S+\s+\S+\s+FAIL\s", line)]
    return "\n".join(["report FAIL lines:", *(failed or ["(none)"]), "--- output tail ---", output[-tail:]])
