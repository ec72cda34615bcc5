"""The validation report: one line per layer per host, checked from facts at execute time.

The registry is built explicitly from the layer table (ooha/stack.py): each row names
its check, ``check(host)`` reads facts from the host (at execute time, after the layer's
operations ran) and returns a ``CheckResult``.  The ``report`` deploy runs the checks of
the layers in the run on the hosts of their groups, prints a table such as::

    ds1     base     OK    chrony synced to 198.18.20.10 (stratum 9), sysctl baseline applied
    data2   base     FAIL  chrony not running; fix: rerun the deploy (systemctl status chrony)

then the front door's address (only when a layer that has the front door is in the
run), and fails the run (exit 1) if any check failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from pyinfra import host, inventory, state
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.api.state import StateStage


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one layer's check on one host."""

    ok: bool
    detail: str
    fix: str = ""
    final: bool = False
    """For ``poll``: waiting will not change this result (e.g. the daemon is down)."""
    facts: Mapping[str, str] = field(default_factory=dict)
    """What the check established, for checks across hosts (the DS version for the fleet line)."""

    def text(self) -> str:
        """The part of the report line after the status."""
        return self.detail if self.ok or not self.fix else f"{self.detail}; fix: {self.fix}"


LayerCheck = Callable[[Any], CheckResult]
"""Takes the pyinfra ``Host`` being checked; reads facts from it."""

_RESULTS: dict[str, list[tuple[str, CheckResult]]] = {}


@dataclass(frozen=True)
class Registered:
    """One layer's entry in the report's registry."""

    layer: str
    check: LayerCheck
    applies: Callable[[Any], bool]
    front_door: Callable[[], str] | None = None


def build_registry(layers: Iterable[Any]) -> list[Registered]:
    """The registry for ``layers`` (rows of ooha/stack.py's table), in table order."""
    return [
        Registered(layer.name, layer.check_function(), layer.applies, layer.front_door_function())
        for layer in layers
    ]


def registry_for(names: Iterable[str] | None = None) -> list[Registered]:
    """The registry of the named layers (None: every layer of the table)."""
    from ooha.stack import LAYERS

    wanted = None if names is None else set(names)
    return build_registry(layer for layer in LAYERS if wanted is None or layer.name in wanted)


def front_door_line(registry: Iterable[Registered]) -> str | None:
    """The report's last line from the first registered layer that has the front door.

    None when no layer of the run has it (validate.py --data layers=redis, backup.py):
    saying "not deployed" there would be false.
    """
    for entry in registry:
        if entry.front_door is not None:
            return entry.front_door()
    return None


def poll(check: LayerCheck, target: Any, deadline_seconds: float, interval: float = 1.0) -> CheckResult:
    """Run ``check`` until it passes or ``deadline_seconds`` pass; return the last result.

    For conditions that settle shortly after a deploy (chrony's first sync takes a
    few seconds after a restart).  Facts are re-read on every call.
    """
    deadline = time.monotonic() + deadline_seconds
    while True:
        result = check(target)
        if result.ok or result.final or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def format_line(host_name: str, layer: str, result: CheckResult) -> str:
    """One report line: host, layer, OK/FAIL, detail (and the fix on failure)."""
    status = "OK" if result.ok else "FAIL"
    return f"{host_name:<8} {layer:<10} {status:<5} {result.text()}"


def run_checks(target: Any, registry: Iterable[Registered]) -> list[tuple[str, CheckResult]]:
    """Every check of ``registry`` that applies to ``target``, in registry order.

    An exception counts as a failure.
    """
    results = []
    for entry in registry:
        if not entry.applies(target):
            continue
        try:
            result = entry.check(target)
        except Exception as exc:  # a check that blows up is a failed check, not a crash
            result = CheckResult(False, f"check raised {type(exc).__name__}: {exc}", "see the error above")
        results.append((entry.layer, result))
    return results


def _executing() -> bool:
    """True while pyinfra executes; operation bodies also run at plan time (prepare)."""
    return state.current_stage == StateStage.Execute


@operation(is_idempotent=True)
def validate_layers(layers: list[str] | None = None):
    """Run the registered checks on this host at execute time and keep the results.

    Nothing is yielded, so validation never counts as a change.  At plan time it
    does nothing: facts read then would describe the hosts before the deploy.
    """
    if not _executing():
        return
    _RESULTS[host.name] = run_checks(host, registry_for(layers))
    host.noop(f"{len(_RESULTS[host.name])} layer check(s) run")
    yield from ()


def report_table(results: dict[str, list[tuple[str, CheckResult]]], order: list[str]) -> list[str]:
    """The report's lines: hosts in inventory order, layers in registration order."""
    ranked = sorted(results, key=lambda name: order.index(name) if name in order else len(order))
    return [format_line(name, layer, result) for name in ranked for layer, result in results[name]]


FLEET_LAYER = "documentserver"
"""The layer whose checks report each node's version (``facts["version"]``)."""
FLEET_ROW = "fleet"


def fleet_result(versions: Mapping[str, str], rollout_open: bool | None) -> CheckResult:
    """The fleet's line from the versions the nodes answered (pure, unit-tested).

    Why a line of its own: every node can be healthy and match its own inventory entry while
    the fleet is mixed (a host-level ``ds_version`` pin forgotten after an incident, a node the
    release guard kept on a rollout's release). Mixed is the expected state while a rollout
    holds the lock, and a failure otherwise. ``rollout_open`` None: the lock could not be read.
    """
    by_version: dict[str, list[str]] = {}
    for node, version in sorted(versions.items()):
        by_version.setdefault(version, []).append(node)
    text = "; ".join(f"{version} on {', '.join(nodes)}" for version, nodes in sorted(by_version.items()))
    if len(by_version) <= 1:
        return CheckResult(True, text or "no node answered its version")
    if rollout_open:
        return CheckResult(True, f"{text} (rollout in progress)")
    fix = "finish the rollout (rerun deploys/patch.py), roll back (deploys/rollback.py) or align ds_version in the inventory"
    if rollout_open is None:
        return CheckResult(False, f"mixed versions: {text} (rollout lock not readable)", fix)
    return CheckResult(False, f"mixed versions outside a rollout: {text}", fix)


def _rollout_open() -> bool | None:
    """Whether a live rollout holds the lock in ooha_ops (its heartbeat fresh); None when it cannot
    be read here (the postgres hosts outside ``--limit``); read only when the fleet is mixed."""
    from ooha.rollout.live.store import Store, StoreError

    hosts = [member for member in inventory.get_group("postgres", []) if getattr(member, "connected", False)]
    if not hosts:
        return None
    try:
        lock = Store(hosts, retry_window_s=5.0).lock()
    except (StoreError, ValueError):
        return None
    # A stale lock is a rollout that stopped (a lost controller): an operator must act on it.
    return lock is not None and not lock.is_stale(time.time())


def add_fleet_row(results: dict[str, list[tuple[str, CheckResult]]], order: list[str]) -> None:
    """Attach the fleet line to the first DS node checked (its host then fails on a mixed fleet)."""
    versions = {name: result.facts["version"] for name, rows in results.items() for layer, result in rows
                if layer == FLEET_LAYER and result.ok and "version" in result.facts}
    if not versions:
        return
    first = min(versions, key=lambda name: order.index(name) if name in order else len(order))
    line = fleet_result(versions, None if len(set(versions.values())) <= 1 else _rollout_open())
    results[first] = [row for row in results[first] if row[0] != FLEET_ROW] + [(FLEET_ROW, line)]


@operation(is_idempotent=True)
def print_report(layers: list[str] | None = None):
    """Print the table, the totals and the front door, once (execute time only)."""
    if not _executing():
        return
    add_fleet_row(_RESULTS, [target.name for target in inventory])
    for line in report_table(_RESULTS, [target.name for target in inventory]):
        click.echo(line)
    total = sum(len(results) for results in _RESULTS.values())
    failed = [f"{name}/{layer}" for name, results in _RESULTS.items() for layer, r in results if not r.ok]
    summary = f"validation: {total - len(failed)}/{total} checks OK on {len(_RESULTS)} host(s)"
    click.echo(summary + (f", FAILED: {', '.join(failed)}" if failed else ""))
    door = front_door_line(registry_for(layers))
    if door is not None:
        click.echo(door)
    host.noop("report printed")
    yield from ()


@operation(is_idempotent=True)
def fail_on_failed_checks():
    """Fail this host (and, with FAIL_PERCENT = 0, the run) if one of its checks failed."""
    if not _executing():
        return
    failed = [layer for layer, result in _RESULTS.get(host.name, []) if not result.ok]
    if failed:
        message = f"validation failed on {host.name}: {', '.join(failed)} (see the report above)"
        yield StringCommand("echo", QuoteString(message), ">&2", "&&", "exit", "1")
    else:
        host.noop("all checks passed")


@deploy("Validation report")
def report(layers: list[str] | None = None) -> None:
    """Check ``layers`` (names from ooha/stack.py; None: all) on their hosts and print the report.

    The checks run inside operations that act only at execute time, so they read
    facts after the layers changed the hosts, not at plan time.
    """
    validate_layers(name="Validate layers", layers=layers)
    print_report(name="Print the report", layers=layers, _run_once=True)
    fail_on_failed_checks(name="Fail on failed checks")
