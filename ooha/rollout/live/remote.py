"""The rollout driver's one way to run a command on a host it is already connected to.

Why not operations: a rolling job decides between waves from what the cluster says NOW
(PYINFRA-NOTES "Rolling jobs": facts and ``if``s of a deploy run at prepare time), so the
driver reads and writes the cluster with commands through pyinfra's own connectors (the
inventory's SSH settings, sudo, known_hosts) while the CLI holds the connections. Secrets go
through ``stdin``, never argv. Every call has a timeout: a hung host is a failed gate, not a
hung rollout.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import StringCommand

DEFAULT_TIMEOUT_S = 60


@dataclass(frozen=True)
class Result:
    """Exit status and output of one remote command (stdout without the trailing newline)."""

    ok: bool
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]

    def why(self) -> str:
        """The last stderr (else stdout) lines: what to show when a command failed."""
        tail = (self.stderr or self.stdout).strip().splitlines()[-3:]
        return " / ".join(tail) or "no output"


def run(host: Any, command: str, *, stdin: str | None = None, timeout: int = DEFAULT_TIMEOUT_S,
        sudo: bool = True) -> Result:
    """Run the shell ``command`` on ``host`` (a connected pyinfra Host) and return its result.

    ``command`` is run by ``sh -c`` (quote your arguments with :func:`quote`); ``stdin`` is
    written to it (secrets, SQL, JSON). Never raises for a failing command or a timeout: the
    caller's gate decides.
    """
    arguments: dict[str, Any] = {"_timeout": timeout, "_sudo": sudo}
    if stdin is not None:
        arguments["_stdin"] = stdin
    try:
        ok, output = host.run_shell_command(StringCommand("sh", "-c", shlex.quote(command)), **arguments)
    except Exception as error:  # a timeout or a lost connection: a failed observation
        return Result(False, "", f"{type(error).__name__}: {error}")
    return Result(bool(ok), "\n".join(output.stdout_lines), "\n".join(output.stderr_lines))


def quote(value: str) -> str:
    """Shell-quote one argument for :func:`run`."""
    return shlex.quote(str(value))
