"""RabbitMQ layer: a cluster across AZs with Document Server's vhost and user.

Placeholder so the main job's layer order exists before the layer does (issue 3).
"""

from typing import Any

from pyinfra.api import deploy

RABBITMQ_DEFAULTS: dict[str, Any] = {}


@deploy("rabbitmq", data_defaults=RABBITMQ_DEFAULTS)
def rabbitmq() -> None:
    """Converge this layer on one host (nothing yet)."""
