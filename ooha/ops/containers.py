"""A container that is recreated when, and only when, its wanted spec differs from the running one.

Why not pyinfra's ``docker.container``: in pyinfra 3.10 it never recreates an existing
container when its image or arguments change (its ``diff_from_inspect`` returns nothing),
and ``force=True`` recreates on every run.  A version change (patch, rollback) must
recreate the container; a rerun with nothing changed must not touch it (idempotence: a
recreation of a Document Server drops its editing sessions).

``container`` compares a ``ContainerSpec`` with ``docker inspect`` (ooha.facts.documentserver
``DsContainer``) field by field: image reference (tag and optional digest), a sha256 of
the managed environment, the named volumes and bind mounts, the published ports, restart
policy, memory/CPU limits, hostname and the labels the deploy sets.  Then:

* no container, or a difference: ``docker pull`` FIRST (a bad tag or an unreachable
  registry fails here, while the old container still runs); then, if the old container
  runs, the caller's ``drain`` shell snippet (``$1`` = container name; it must bound its
  own wait, and its stdout lines are logged in the deploy output; a failure is logged and
  tolerated) and ``docker stop -t <stop_grace>`` (SIGTERM, so the image's own shutdown
  runs; SIGKILL only after the grace); then ``docker rm -v`` (a container that was not
  running: ``docker rm -f -v``, nothing to drain) (``-v`` removes only
  anonymous volumes; named volumes keep Data, cache and logs), then ``docker run -d``
  with ``--env-file`` (the env with its secrets is never on a command line: the caller
  writes the file with ``private_put``, mode 0600);
* same spec, container stopped: ``docker start``, unless the caller's ``keep_stopped()``
  (read at execute time) gives a reason to leave it stopped (a watchdog gave up on it);
* otherwise nothing.

Secrets: the spec carries only the env's digest and key names; the running container's
env is digested on the host, never returned.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.api.state import StateStage

from ooha.facts.documentserver import DsContainer

_MEMORY = re.compile(r"^([1-9][0-9]*)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def env_sha256(env: dict[str, str]) -> str:
    """sha256 of the sorted ``KEY=value`` lines (the same digest DsContainer computes on the host)."""
    return hashlib.sha256("\n".join(sorted(f"{k}={v}" for k, v in env.items())).encode()).hexdigest()


def env_file_text(env: dict[str, str]) -> str:
    """``docker run --env-file`` content: one ``KEY=value`` per line, values taken literally."""
    for key, value in env.items():
        if "\n" in str(value) or "\r" in str(value) or "=" in key:
            raise ValueError(f"env {key}: values in an env-file cannot hold a newline")
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def memory_bytes(value: Any) -> int:
    """``"4g"`` / ``"512m"`` / bytes -> bytes, as docker counts them (1024 multiples); None/0 -> 0."""
    if value in (None, "", 0):
        return 0
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a size like 512m or 4g")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def nano_cpus(value: Any) -> int:
    """``2`` / ``1.5`` CPUs -> docker's NanoCpus; None/0 -> 0 (no limit)."""
    if value in (None, "", 0):
        return 0
    cpus = float(value)
    if cpus <= 0:
        raise ValueError(f"{value!r} is not a positive number of CPUs")
    return int(round(cpus * 1e9))


@dataclass(frozen=True)
class Mount:
    """A named volume (``kind="volume"``, source = volume name) or a bind mount (source = host path)."""

    kind: str
    source: str
    destination: str
    read_only: bool = False

    def as_inspected(self) -> list[Any]:
        return [self.kind, self.source, self.destination, not self.read_only]

    def run_args(self) -> list[str]:
        suffix = ":ro" if self.read_only else ""
        return ["-v", f"{self.source}:{self.destination}{suffix}"]


@dataclass(frozen=True)
class Port:
    """``host_ip:host_port`` -> ``container_port/tcp``."""

    host_ip: str
    host_port: int
    container_port: int

    def as_inspected(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/tcp"

    def run_args(self) -> list[str]:
        return ["-p", f"{self.host_ip}:{self.host_port}:{self.container_port}"]


@dataclass(frozen=True)
class ContainerSpec:
    """What the container must look like; never holds a secret (the env only as a digest)."""

    name: str
    image: str
    env_file: str
    env_keys: tuple[str, ...]
    env_sha256: str
    hostname: str
    mounts: tuple[Mount, ...] = ()
    ports: tuple[Port, ...] = ()
    restart_policy: str = "unless-stopped"
    memory: int = 0
    nano_cpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def run_command(self) -> StringCommand:
        """``docker run -d`` for this spec (env from the 0600 env-file, never on the command line)."""
        args: list[Any] = ["docker", "run", "-d", "--name", QuoteString(self.name), "--hostname", QuoteString(self.hostname),
                           "--env-file", QuoteString(self.env_file), "--restart", QuoteString(self.restart_policy)]
        for mount in self.mounts:
            args += [QuoteString(a) for a in mount.run_args()]
        for port in self.ports:
            args += [QuoteString(a) for a in port.run_args()]
        if self.memory:
            args += ["--memory", str(int(self.memory))]
        if self.nano_cpus:
            args += ["--cpus", f"{self.nano_cpus / 1e9:g}"]
        for key, value in sorted(self.labels.items()):
            args += ["--label", QuoteString(f"{key}={value}")]
        args.append(QuoteString(self.image))
        return StringCommand(*args)


def spec_differences(current: dict[str, Any] | None, wanted: ContainerSpec) -> list[str]:
    """Why the running container does not match ``wanted`` (empty: it matches).

    Only what the deploy sets is compared: image volumes the deploy does not mount
    (anonymous volumes) and labels baked into the image are ignored.
    """
    if current is None:
        return ["no container"]
    reasons = []
    if current.get("image") != wanted.image:
        reasons.append(f"image {current.get('image')} -> {wanted.image}")
    if current.get("env_sha256") != wanted.env_sha256:
        reasons.append("environment changed")
    if current.get("hostname") != wanted.hostname:
        reasons.append(f"hostname {current.get('hostname')} -> {wanted.hostname}")
    destinations = {m.destination for m in wanted.mounts}
    have_mounts = sorted(tuple(m) for m in current.get("mounts") or [] if m[2] in destinations)
    want_mounts = sorted(tuple(m.as_inspected()) for m in wanted.mounts)
    if have_mounts != want_mounts:
        reasons.append("mounts changed")
    if sorted(current.get("ports") or []) != sorted(p.as_inspected() for p in wanted.ports):
        reasons.append(f"ports {current.get('ports')} -> {[p.as_inspected() for p in wanted.ports]}")
    if current.get("restart_policy") != wanted.restart_policy:
        reasons.append(f"restart policy {current.get('restart_policy')} -> {wanted.restart_policy}")
    if int(current.get("memory") or 0) != wanted.memory:
        reasons.append("memory limit changed")
    if int(current.get("nano_cpus") or 0) != wanted.nano_cpus:
        reasons.append("cpu limit changed")
    labels = current.get("labels") or {}
    changed = sorted(k for k, v in wanted.labels.items() if labels.get(k) != v)
    if changed:
        reasons.append(f"labels changed: {', '.join(changed)}")
    return reasons


def run_drain(state: Any, host: Any, container_name: str, drain: str) -> bool:
    """Run the ``drain`` snippet on the host (as the operation's user: sudo) and log what it printed.

    A FunctionCommand, not a StringCommand, so its report (e.g. how many sessions remained)
    is in the deploy output without -v.  Always True: a node that cannot be drained (an
    older image, a hung service) is still replaced; ``docker stop`` follows.
    """
    arguments = {k: v for k, v in (host.current_op_global_arguments or {}).items() if k in CONNECTOR_ARGUMENT_KEYS}
    ok, output = host.run_shell_command(
        StringCommand("sh", "-c", QuoteString(drain), "drain", QuoteString(container_name)), **arguments)
    for line in output.stdout_lines:
        logger.info(f"{host.print_prefix}container {container_name}: {line}")
    if not ok:
        logger.warning(f"{host.print_prefix}container {container_name}: drain failed ({' / '.join(output.stderr_lines[-3:])}); stopping anyway")
    return True


@operation()
def container(spec: ContainerSpec, drain: str | None = None, stop_grace: int = 10,
              keep_stopped: Any = None):
    """Create, recreate (only on a difference) or start the container of ``spec``; see the module docstring.

    ``drain``: shell run on the host before a RUNNING container is replaced (``$1`` is its
    name); ``stop_grace``: seconds ``docker stop`` waits after SIGTERM before SIGKILL;
    ``keep_stopped``: a callable returning a reason (str) to leave a stopped container with
    the wanted spec stopped, or None to start it.
    """
    current = host.get_fact(DsContainer, container=spec.name, env_keys=spec.env_keys)
    reasons = spec_differences(current, spec)
    if reasons:
        if state.current_stage == StateStage.Execute:
            logger.info(f"{host.print_prefix}container {spec.name}: {'; '.join(reasons)}: (re)creating")
        # Pull first: a bad tag or an unreachable registry fails before the old container goes.
        yield StringCommand("docker", "pull", "-q", QuoteString(spec.image), ">/dev/null")
        if current is not None:
            if current["running"]:
                if drain:
                    yield FunctionCommand(run_drain, (spec.name, drain), {})
                yield StringCommand("docker", "stop", "-t", str(int(stop_grace)), QuoteString(spec.name), ">/dev/null")
                yield StringCommand("docker", "rm", "-v", QuoteString(spec.name), ">/dev/null")
            else:
                # Not running (exited, or in a restart loop): nothing to drain or stop gracefully.
                yield StringCommand("docker", "rm", "-f", "-v", QuoteString(spec.name), ">/dev/null")
        yield StringCommand(spec.run_command(), ">/dev/null")
    elif not current["running"]:
        reason = keep_stopped() if keep_stopped is not None else None
        if reason:
            host.noop(f"container {spec.name} stays stopped: {reason}")
        else:
            yield StringCommand("docker", "start", QuoteString(spec.name), ">/dev/null")
    else:
        host.noop(f"container {spec.name} runs as wanted ({spec.image})")
