"""The main job's layers, in the order they converge, and which hosts each runs on.

One place decides the order (etcd before Patroni, the data tier before the
client-side endpoints that point at it) so ha.py, validate.py and the report agree.
An operator may converge a subset with ``--data layers=redis,endpoints``; the base
layer always runs because every other layer relies on it (apt proxy, time sync).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layer:
    """One row of the stack's table: everything ha.py, validate.py, the report, the
    preflight and the lab roles need to know about a layer.

    ``groups`` is a tuple because some layers serve several roles: the client-side
    endpoints run on the Document Server hosts and on the load balancers (whose shard
    table lives in Redis, reached through the local :6379 endpoint).  None: every host.

    ``check``, ``front_door`` and ``inputs`` name functions of ``module`` (imported
    late, on first use: importing a layer pulls in pyinfra operations and facts):

    * ``check(host) -> CheckResult``: the layer's report line, read from facts at
      execute time (ooha/report.py);
    * ``front_door() -> str``: the report's last line, for the one layer that has the
      front door (None for every other layer);
    * ``inputs(host) -> list[str]``: the layer's input rules, read from data only (never
      facts), one "host: field: problem; fix: ..." line per problem; the preflight
      (ooha/preflight.py) runs them before pyinfra connects, the deploy again.
    """

    name: str
    groups: tuple[str, ...] | None
    module: str
    function: str
    check: str
    front_door: str | None = None
    inputs: str | None = "input_problems"

    def applies(self, target: Any) -> bool:
        """True when ``target`` (a pyinfra Host) is in one of this layer's groups."""
        return self.groups is None or any(group in target.groups for group in self.groups)

    def _attribute(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)

    def deploy(self) -> Callable[[], None]:
        """The layer's public @deploy function."""
        return self._attribute(self.function)

    def check_function(self) -> Callable[[Any], Any]:
        """The layer's report check: ``check(host) -> CheckResult``."""
        return self._attribute(self.check)

    def front_door_function(self) -> Callable[[], str] | None:
        """The function returning the report's front-door line, or None."""
        return self._attribute(self.front_door) if self.front_door else None

    def input_rules(self) -> Callable[..., list[str]] | None:
        """The layer's data-only input rules (None: the layer has none)."""
        if not self.inputs:
            return None
        return getattr(importlib.import_module(self.module), self.inputs, None)


LAYERS: tuple[Layer, ...] = (
    #     name              groups             module                       @deploy           check                 front door
    Layer("base",           None,              "ooha.layers.base",          "base",           "check_base",           inputs=None),
    Layer("docker",         ("docs",),         "ooha.layers.docker",        "docker",         "check_docker"),
    Layer("etcd",           ("etcd",),         "ooha.layers.etcd",          "etcd",           "check_etcd"),
    Layer("postgres",       ("postgres",),     "ooha.layers.postgres",      "postgres",       "check_postgres"),
    Layer("redis",          ("redis",),        "ooha.layers.redis",         "redis",          "check_redis"),
    Layer("rabbitmq",       ("rabbitmq",),     "ooha.layers.rabbitmq",      "rabbitmq",       "check_rabbitmq"),
    Layer("endpoints",      ("docs", "lb"),    "ooha.layers.endpoints",     "endpoints",      "check_endpoints"),
    Layer("documentserver", ("docs",),         "ooha.layers.documentserver", "documentserver", "check_documentserver"),
    Layer("loadbalancer",   ("lb",),           "ooha.layers.loadbalancer",  "loadbalancer",   "check_loadbalancer",   "front_door_line"),
    Layer("filebackup",     ("docs", "lb"),    "ooha.layers.filebackup",    "filebackup",     "check_filebackup"),
    Layer("backup",         ("postgres",),     "ooha.layers.pgbackrest",    "pgbackrest",     "check_backup"),
)
LAYER_NAMES: tuple[str, ...] = tuple(layer.name for layer in LAYERS)
ALWAYS = ("base",)
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(g for layer in LAYERS for g in layer.groups or ()))
"""Every inventory group the main job deploys to (each must exist and hold hosts), in table order."""


def layer_named(name: str) -> Layer:
    """The table's row for ``name`` (KeyError for an unknown name)."""
    for layer in LAYERS:
        if layer.name == name:
            return layer
    raise KeyError(name)


def parse_layers(value: Any) -> list[str] | None:
    """The ``layers`` data key as a list of names (None or "" or "all": every layer)."""
    if value is None or value == "" or value == "all":
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable):
        return [str(part).strip() for part in value]
    raise TypeError(f"layers must be a comma-separated string or a list, got {type(value).__name__}")


def unknown_layers(value: Any) -> list[str]:
    """Names in the ``layers`` data key that are not layers (for the inventory check)."""
    return [name for name in parse_layers(value) or [] if name not in LAYER_NAMES]


def selected_layers(value: Any) -> list[Layer]:
    """The layers to converge, in deploy order: all of them, or ``value`` plus base."""
    wanted = parse_layers(value)
    if wanted is None:
        return list(LAYERS)
    return [layer for layer in LAYERS if layer.name in wanted or layer.name in ALWAYS]
