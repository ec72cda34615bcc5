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

from pyinfra import host
from pyinfra.api import operation


@dataclass(frozen=True)
class Layer:
    """A layer: its name, the inventory groups it runs on (None: every host), its deploy.

    ``groups`` is a tuple because some layers serve several roles: the client-side
    endpoints run on the Document Server hosts and on the load balancers (whose shard
    table lives in Redis, reached through the local :6379 endpoint).
    """

    name: str
    groups: tuple[str, ...] | None
    module: str
    function: str

    def applies(self, target: Any) -> bool:
        """True when ``target`` (a pyinfra Host) is in one of this layer's groups."""
        return self.groups is None or any(group in target.groups for group in self.groups)

    def deploy(self) -> Callable[[], None]:
        """The layer's public @deploy function (imported late: importing registers checks)."""
        return getattr(importlib.import_module(self.module), self.function)


LAYERS: tuple[Layer, ...] = (
    Layer("base", None, "ooha.layers.base", "base"),
    Layer("docker", ("docs",), "ooha.layers.docker", "docker"),
    Layer("etcd", ("etcd",), "ooha.layers.etcd", "etcd"),
    Layer("postgres", ("postgres",), "ooha.layers.postgres", "postgres"),
    Layer("redis", ("redis",), "ooha.layers.redis", "redis"),
    Layer("rabbitmq", ("rabbitmq",), "ooha.layers.rabbitmq", "rabbitmq"),
    Layer("endpoints", ("docs", "lb"), "ooha.layers.endpoints", "endpoints"),
    Layer("documentserver", ("docs",), "ooha.layers.documentserver", "documentserver"),
    Layer("loadbalancer", ("lb",), "ooha.layers.loadbalancer", "loadbalancer"),
    Layer("filebackup", ("docs", "lb"), "ooha.layers.filebackup", "filebackup"),
    Layer("backup", ("postgres",), "ooha.layers.pgbackrest", "pgbackrest"),
)
LAYER_NAMES: tuple[str, ...] = tuple(layer.name for layer in LAYERS)
ALWAYS = ("base",)


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


@operation(is_idempotent=True)
def layer_converged(layer: str):
    """A barrier: the same operation on every host after ``layer``; changes nothing.

    pyinfra runs each operation on all hosts before the next one, in an order merged from
    every host's own call order; hosts outside a layer's groups add no edge between that
    layer's operations and the next layer's, so without a shared operation they interleave.
    """
    host.noop(f"layer {layer} done here")
    yield from ()
