"""Redis layer: a primary and replicas across AZs with a Sentinel quorum.

Placeholder so the main job's layer order exists before the layer does (issue 3).
"""

from typing import Any

from pyinfra.api import deploy

REDIS_DEFAULTS: dict[str, Any] = {}


@deploy("redis", data_defaults=REDIS_DEFAULTS)
def redis() -> None:
    """Converge this layer on one host (nothing yet)."""
