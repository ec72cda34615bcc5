"""The one client of the lab used by the lab tests (tests/integration) and the benchmarks.

Tests and benchmarks both talk to the lab the same way: read its status, SSH into a host,
load its secrets, hold its lock, poll for a condition, run pyinfra from the repo root.  They
used to import these from each other (tests from benchmarks, benchmarks from tests/), with
copies that had drifted apart (one lock ignored OOHA_LAB_LOCK_HELD; four pollers took
their arguments in two orders).  Here is the one copy; neither side imports the other.

Import-light on purpose: no pytest (a benchmark is a plain script), only the standard
library plus paramiko and yaml (imported when used).  Failures a test should report are
AssertionError subclasses (pytest shows them as failures; a benchmark gets a traceback).

SSH is what pyinfra does: paramiko with the lab key, the lab's known_hosts and
RejectPolicy, so a check can only pass against the host whose key the lab recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # paramiko is imported when a connection is opened
    import paramiko

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
SSH_USER = "admin"

LOCK_FILE = "/tmp/ooha-lab.lock"
LOCK_HELD_ENV = "OOHA_LAB_LOCK_HELD"
"""Set to 1 by a caller that already holds the lab lock (``flock -x /tmp/ooha-lab.lock ...``,
or ``lab_lock`` itself for the code and the child processes it runs): taking the lock again
from another open file would wait for ever, so ``lab_lock`` then takes nothing."""


# --- the lab's status ---------------------------------------------------------------------


class LabNotUp(RuntimeError):
    """``python -m lab status --json`` failed: the lab is not up (the message says why)."""


def lab_cli(*args: str, timeout: float = 1800, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lab ARGS`` from the repo root, bounded in time.

    ``check=True`` raises RuntimeError with the end of stderr when the command fails
    (for ``stop``/``start``/``cut``/``heal`` inside a drill or a benchmark).
    """
    result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL, env=dict(os.environ))
    if check and result.returncode != 0:
        raise RuntimeError(f"python -m lab {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return result


def lab_state(timeout: float = 120) -> dict[str, Any]:
    """The lab's status dict (``python -m lab status --json``; docs/architecture.md "Lab state")."""
    result = lab_cli("status", "--json", timeout=timeout)
    if result.returncode != 0:
        raise LabNotUp(result.stderr.strip() or f"python -m lab status --json exited {result.returncode}")
    return json.loads(result.stdout)


def host_entry(lab: dict[str, Any], host: str) -> dict[str, Any]:
    """The status entry of one host by name."""
    return next(h for h in lab["hosts"] if h["name"] == host)


def hosts_in(lab: dict[str, Any], role: str) -> list[str]:
    """Names of the hosts that have ``role``, in status order."""
    return [h["name"] for h in lab["hosts"] if role in (h.get("roles") or [])]


def address_of(lab: dict[str, Any], host: str) -> str:
    return host_entry(lab, host)["address"]


def secrets(lab: dict[str, Any]) -> dict[str, Any]:
    """The lab's secrets file (the values the deploys use), as a dict."""
    import yaml

    with open(lab["secrets_file"], encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# --- SSH ------------------------------------------------------------------------------------


def connect(lab: dict[str, Any], host: str, user: str = SSH_USER, timeout: float = 10) -> paramiko.SSHClient:
    """Open SSH to a lab host with the lab key, the lab known_hosts and RejectPolicy."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(lab["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    entry = host_entry(lab, host)
    client.connect(entry["address"], username=user, key_filename=entry["ssh_key"], timeout=timeout,
                   banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False, allow_agent=False)
    return client


def ssh(lab: dict[str, Any], host: str, cmd: str, timeout: float = 60) -> tuple[int, str]:
    """Run cmd on host over SSH as admin; return (exit code, stdout + stderr)."""
    from lab.hosts import run_and_close

    return run_and_close(connect(lab, host), cmd, timeout)


def reaches(lab: dict[str, Any], src: str, dst_address: str, port: int = 22) -> bool:
    """Whether host src opens a TCP connection to dst_address:port within 3 seconds."""
    rc, _ = ssh(lab, src, f"timeout 3 bash -c '</dev/tcp/{dst_address}/{port}'")
    return rc == 0


def put_private_file(lab: dict[str, Any], host: str, path: str, content: str) -> None:
    """Write a file readable by admin only on ``host``, content over stdin (never in argv)."""
    import shlex

    client = connect(lab, host)
    try:
        stdin, stdout, _ = client.exec_command(f"umask 077 && cat > {shlex.quote(path)}", timeout=30)
        stdin.write(content)
        stdin.channel.shutdown_write()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


# --- the lab lock ---------------------------------------------------------------------------


@contextlib.contextmanager
def lab_lock(exclusive: bool = True, timeout: float = 1800, path: str = LOCK_FILE) -> Iterator[None]:
    """Hold the lab's lock: exclusive for disruptive work (drills, failover benchmarks), shared
    for deploys and non-disruptive tests; TimeoutError if not obtained within ``timeout`` s.

    Takes nothing when OOHA_LAB_LOCK_HELD=1: the caller already holds it (``flock -x``, or an
    enclosing ``lab_lock``), and a second lock on the same file from another open file would
    wait for ever.  While held, OOHA_LAB_LOCK_HELD=1 is set in this process's environment, so
    a nested ``lab_lock`` and the children it runs (a test running a benchmark) do not
    deadlock on it; the previous value is restored on release.
    """
    if os.environ.get(LOCK_HELD_ENV) == "1":
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not take {path} in {timeout:.0f} s") from None
                time.sleep(1)
        previous = os.environ.get(LOCK_HELD_ENV)
        os.environ[LOCK_HELD_ENV] = "1"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_HELD_ENV, None)
            else:
                os.environ[LOCK_HELD_ENV] = previous
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- polling --------------------------------------------------------------------------------


@contextlib.contextmanager
def locked_lab() -> Iterator[dict[str, Any]]:
    """A benchmark's lab: the status under the exclusive lab lock, or exit 1 saying why.

    Benchmarks stop hosts and restore clusters: they must not run beside the suite or
    another benchmark, and a lab that is not up is a clear one-line refusal.
    """
    try:
        lab = lab_state()
    except LabNotUp as exc:
        print(f"the lab is not up: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    with lab_lock():
        yield lab


class WaitTimeout(AssertionError):
    """``wait_for``'s condition did not hold by its deadline (a test failure, not an error)."""


def wait_for(what: str, condition: Callable[[], Any], deadline: float, *, interval: float = 1.0,
             tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``condition()`` until it returns something truthy and return that value; raise
    WaitTimeout naming ``what`` (and the last value or error) after ``deadline`` seconds.

    The condition is asked at least once and once more at the deadline.  An exception of a
    type in ``tolerate`` (a host or service in transition refusing the question) counts as
    "not yet"; any other exception propagates at once.
    """
    if not isinstance(what, str) or not callable(condition):
        raise TypeError("wait_for(what: str, condition: callable, deadline: seconds)")
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            last = condition()
        except tolerate as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= end:
            raise WaitTimeout(f"timed out after {deadline:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(max(0.0, min(interval, end - time.monotonic())))


# --- pyinfra --------------------------------------------------------------------------------


def run_pyinfra(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pyinfra CLI from the repo root (so config.py applies), bounded in time."""
    return subprocess.run(
        [PYINFRA, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYINFRA_PROGRESS": "off", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


TARGETS = ("lb1", "lb2", "ds1", "ds2", "ds3", "data1", "data2", "data3")
RESULT_ROW = re.compile(
    r"^\s*(?P<op>.+?)\s{2,}(?P<hosts>\d+)\s+(?P<success>\d+|-)\s+(?P<error>\d+|-)\s+(?P<no_change>\d+|-)\s*$"
)


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


class PyinfraRun:
    """A pyinfra CLI run in the background whose output is read line by line as it comes.

    For drills that act in the middle of a long job (a second rollout while the first holds
    the lock, a Ctrl-C between two waves): ``wait_line`` polls the lines with a deadline.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import threading

        self.args = args
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [PYINFRA, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, "PYINFRA_PROGRESS": "off", **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, deadline: float) -> str:
        """The first output line matching ``pattern`` (a regex); TimeoutError with the tail if none."""
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for line in list(self.lines):
                if regex.search(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise TimeoutError(f"no line matching {pattern!r} within {deadline} s; last lines:\n" + "\n".join(self.lines[-30:]))

    def wait(self, timeout: float = 1800) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def interrupt(self) -> None:
        """Ctrl-C, as an operator at the terminal (SIGINT to the CLI process)."""
        import signal

        self.proc.send_signal(signal.SIGINT)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def free_address_in_az(lab: dict[str, Any], original: str) -> str:
    """A free address of ``original``'s AZ subnet (.99 unless taken, then upwards), for a
    replacement host at a new address (``python -m lab recreate HOST --address A``)."""
    used = {a for h in lab["hosts"] for a in (h.get("addresses") or {}).values()}
    candidate = ipaddress.ip_address(int(ipaddress.ip_address(original)) & ~0xFF | 99)
    while str(candidate) in used:
        candidate += 1
    return str(candidate)
