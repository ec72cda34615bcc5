"""PostgreSQL layer: Patroni-managed PostgreSQL on the postgres hosts, one member per AZ.

Placeholder so the main job's layer order exists before the layer does (issue 3).
"""

from typing import Any

from pyinfra.api import deploy

POSTGRES_DEFAULTS: dict[str, Any] = {}


@deploy("postgres", data_defaults=POSTGRES_DEFAULTS)
def postgres() -> None:
    """Converge this layer on one host (nothing yet)."""
