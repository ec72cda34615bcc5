"""etcd layer: one member per AZ on the etcd hosts, the consensus store Patroni uses.

Placeholder so the main job's layer order exists before the layer does (issue 3).
"""

from typing import Any

from pyinfra.api import deploy

ETCD_DEFAULTS: dict[str, Any] = {}


@deploy("etcd", data_defaults=ETCD_DEFAULTS)
def etcd() -> None:
    """Converge this layer on one host (nothing yet)."""
