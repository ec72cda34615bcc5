"""Per-node names of the Document Server "shards" design: one place for every layer.

Each Document Server host (group ``docs``) has its OWN database, RabbitMQ vhost and Redis
key prefix on the shared HA data tier.  Why: the real image's SIGTERM trap broadcasts
``PUT /internal/cluster/inactive`` over the RabbitMQ fanout ``ds.pubsub`` of its vhost, and
a version change runs ``removetbl.sql`` on its database.  With a vhost and a database per
node both reach only the node that is being stopped or changed (see docs/architecture.md,
"App tier: Document Server").  The postgres layer creates the databases, the rabbitmq layer
the vhosts, the documentserver layer points each container at its own; they all call these
functions so the names can never drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

_UNSAFE = re.compile(r"[^a-z0-9_]")


def node_slug(host_name: str) -> str:
    """The host's inventory name lower-cased, every character outside [a-z0-9_] made '_'."""
    return _UNSAFE.sub("_", str(host_name).lower())


def node_database(host_name: str) -> str:
    """PostgreSQL database of one DS node (owner: role onlyoffice)."""
    return f"onlyoffice_{node_slug(host_name)}"


def node_vhost(host_name: str) -> str:
    """RabbitMQ vhost of one DS node (user onlyoffice has permissions on it)."""
    return f"onlyoffice_{node_slug(host_name)}"


def node_redis_prefix(host_name: str) -> str:
    """Redis key prefix of one DS node (services.CoAuthoring.redis.prefix)."""
    return f"ds:{node_slug(host_name)}:"


def docs_hosts(inventory: Any) -> list[str]:
    """Names of every DS host, from the whole inventory (--limit notwithstanding), in order."""
    return [target.name for target in inventory.get_group("docs")]


def docker_gateway(docker_bip: str | None) -> str | None:
    """The Docker bridge gateway from ``docker_bip`` ("198.19.0.1/24" -> "198.19.0.1").

    The Document Server container reaches the data tier's stable endpoints (HAProxy) there;
    None when no bridge address is configured.
    """
    if not docker_bip:
        return None
    return str(ipaddress.ip_interface(str(docker_bip)).ip)
