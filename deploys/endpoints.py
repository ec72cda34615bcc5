"""Endpoints layer: client-side stable addresses on the Document Server hosts that follow failover.

Placeholder so the main job's layer order exists before the layer does (issue 3).
"""

from typing import Any

from pyinfra.api import deploy

ENDPOINTS_DEFAULTS: dict[str, Any] = {}


@deploy("endpoints", data_defaults=ENDPOINTS_DEFAULTS)
def endpoints() -> None:
    """Converge this layer on one host (nothing yet)."""
