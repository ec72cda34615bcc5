"""The validation report: one line per layer per host, checked from facts at execute time.

Each layer registers a check with ``register_check(layer, func)``; ``func(host)``
reads facts from the host (at execute time, after the layer's operations ran) and
returns a ``CheckResult``.  The ``report`` deploy runs every registered check on
every host, prints a table such as::

    ds1     base     OK    chrony synced to 198.18.20.10 (stratum 9), sysctl baseline applied
    data2   base     FAIL  chrony not running; fix: rerun the deploy (systemctl status chrony)

then the front door's address, and fails the run (exit 1) if any check failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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

    def text(self) -> str:
        """The part of the report line after the status."""
        return self.detail if self.ok or not self.fix else f"{self.detail}; fix: {self.fix}"


LayerCheck = Callable[[Any], CheckResult]
"""Takes the pyinfra ``Host`` being checked; reads facts from it."""

_CHECKS: dict[str, tuple[LayerCheck, Callable[[Any], bool]]] = {}
_RESULTS: dict[str, list[tuple[str, CheckResult]]] = {}


def _always(_host: Any) -> bool:
    return True


def register_check(layer: str, check: LayerCheck, applies: Callable[[Any], bool] = _always) -> None:
    """Add (or replace) the check for ``layer``; ``applies(host)`` selects its hosts.

    Layers report in registration order, so register in deploy order.
    """
    _CHECKS[layer] = (check, applies)


def registered_layers() -> list[str]:
    """Names of the layers that have a check, in report order."""
    return list(_CHECKS)


def in_group(*groups: str) -> Callable[[Any], bool]:
    """An ``applies`` predicate: the host is in one of the inventory ``groups``."""
    return lambda target: any(group in target.groups for group in groups)


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


def run_checks(target: Any, layers: Iterable[str] | None = None) -> list[tuple[str, CheckResult]]:
    """Every applicable layer check on ``target`` (only ``layers`` when given).

    An exception counts as a failure.
    """
    results = []
    for layer, (check, applies) in _CHECKS.items():
        if (layers is not None and layer not in layers) or not applies(target):
            continue
        try:
            result = check(target)
        except Exception as exc:  # a check that blows up is a failed check, not a crash
            result = CheckResult(False, f"check raised {type(exc).__name__}: {exc}", "see the error above")
        results.append((layer, result))
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
    _RESULTS[host.name] = run_checks(host, layers)
    host.noop(f"{len(_RESULTS[host.name])} layer check(s) run")
    yield from ()


def report_table(results: dict[str, list[tuple[str, CheckResult]]], order: list[str]) -> list[str]:
    """The report's lines: hosts in inventory order, layers in registration order."""
    ranked = sorted(results, key=lambda name: order.index(name) if name in order else len(order))
    return [format_line(name, layer, result) for name in ranked for layer, result in results[name]]


@operation(is_idempotent=True)
def print_report():
    """Print the table, the totals and the front door, once (execute time only)."""
    if not _executing():
        return
    for line in report_table(_RESULTS, [target.name for target in inventory]):
        click.echo(line)
    total = sum(len(results) for results in _RESULTS.values())
    failed = [f"{name}/{layer}" for name, results in _RESULTS.items() for layer, r in results if not r.ok]
    summary = f"validation: {total - len(failed)}/{total} checks OK on {len(_RESULTS)} host(s)"
    click.echo(summary + (f", FAILED: {', '.join(failed)}" if failed else ""))
    click.echo(_front_door())
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


def _front_door() -> str:
    """Where users reach the service; the app tier will register a real answer."""
    provider = _FRONT_DOOR[0]
    return provider() if provider else "front door: not deployed yet (app tier comes in a later issue)"


_FRONT_DOOR: list[Callable[[], str] | None] = [None]


def register_front_door(provider: Callable[[], str]) -> None:
    """Set the function that returns the report's last line (e.g. the LB's address)."""
    _FRONT_DOOR[0] = provider


@deploy("Validation report")
def report(layers: list[str] | None = None) -> None:
    """Check every registered layer on every host and print the report.

    The checks run inside operations that act only at execute time, so they read
    facts after the layers changed the hosts, not at plan time.
    """
    validate_layers(name="Validate layers", layers=layers)
    print_report(name="Print the report", _run_once=True)
    fail_on_failed_checks(name="Fail on failed checks")
