"""The cross-layer contract: every value one layer sets and another layer relies on, once.

Why this module: a port, a user name or a path that two layers must agree on used to be
written in each of them (the endpoints layer re-declared the data tier's ports, the
documentserver layer had literal fallbacks for the RabbitMQ user and the endpoint ports,
the load balancer copied the DS HTTP port).  Changing one copy silently broke the other
side.  Now the DEFAULT of each such value lives here only, with the layer that owns it
named in a comment; the owning layer's ``data_defaults`` and every reader take it from
``CONTRACT_DEFAULTS``.  The keys stay ordinary inventory data keys: an inventory (or
``--data``) that overrides one moves both ends together, because both read the same key.

Also here, for the same reason: the per-node names of the Document Server "shards" design
 and a host's peer address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# --- PostgreSQL (owner: postgres layer) --------------------------------------------------

POSTGRES_VERSION = 15
"""Debian's PostgreSQL major version; packages, data and bin dirs below derive from it."""


def postgres_packages(version: int) -> list[str]:
    """Debian packages of one PostgreSQL major version, plus Patroni and its etcd client."""
    return [f"postgresql-{version}", f"postgresql-client-{version}", "patroni", "python3-etcd"]


def postgres_data_dir(version: int) -> str:
    """The data directory Patroni runs PostgreSQL in (pgBackRest's pg1-path reads the same key)."""
    return f"/var/lib/postgresql/{version}/onlyoffice"


def postgres_bin_dir(version: int) -> str:
    """Debian's directory of the server binaries (Patroni's bin_dir, the restore script's BIN)."""
    return f"/usr/lib/postgresql/{version}/bin"


def debian_cluster_dir(version: int) -> str:
    """The configuration directory of Debian's default cluster (``<version>/main``), never used."""
    return f"/etc/postgresql/{version}/main"


CONTRACT_DEFAULTS: dict[str, Any] = {
    # --- PostgreSQL: owner postgres layer (Patroni).  Read by: endpoints (HAProxy backend
    # and health-check ports), pgbackrest (pg1-port, pg1-path, Patroni REST), restore.
    "postgres_version": POSTGRES_VERSION,
    "postgres_port": 5432,
    "patroni_rest_port": 8008,
    "postgres_data_dir": postgres_data_dir(POSTGRES_VERSION),
    # Document Server's database role: made by postgres, used by documentserver (DB_USER).
    "postgres_ds_role": "onlyoffice",
    # --- Redis: owner redis layer.  Read by: endpoints (HAProxy backend port), documentserver
    # (Sentinel port and master name for ioredis).
    "redis_port": 6379,
    "redis_sentinel_port": 26379,
    # Sentinel's name for the replication group.
    "redis_master_name": "onlyoffice",
    # --- RabbitMQ: owner rabbitmq layer.  Read by: endpoints (HAProxy backend port),
    # documentserver (AMQP_URI user).
    "rabbitmq_amqp_port": 5672,
    "rabbitmq_user": "onlyoffice",
    # --- etcd: owner etcd layer.  Read by: postgres (Patroni's etcd hosts, via
    # ooha.layers.etcd.client_endpoints).
    "etcd_client_port": 2379,
    # --- Client-side endpoints (HAProxy listen ports on DS hosts and LBs): owner endpoints
    # layer.  Read by: documentserver (DB_PORT, AMQP_URI, REDIS_SERVER_PORT), loadbalancer
    # (the shard table's Redis port), drills and benchmarks.
    "endpoint_pg_primary_port": 5432,
    "endpoint_pg_replicas_port": 5433,
    "endpoint_redis_port": 6379,
    "endpoint_amqp_port": 5672,
    "endpoint_stats_port": 8404,
    # --- Document Server: owner documentserver layer (the host port publishing the
    # container's nginx).  Read by: loadbalancer (nginx upstream servers).
    "ds_http_port": 80,
}


def contract_defaults(*keys: str) -> dict[str, Any]:
    """``{key: CONTRACT_DEFAULTS[key]}`` for a layer's ``data_defaults`` (KeyError on a typo)."""
    return {key: CONTRACT_DEFAULTS[key] for key in keys}


# --- a host's peer address -------------------------------------------------------------


def peer_address(target: Any) -> str:
    """The address other hosts reach ``target`` at: ``private_address``, else ``ssh_hostname``,
    else its inventory name (HAProxy backends, nginx upstreams, cluster peers)."""
    data = target.data
    return str(data.get("private_address") or data.get("ssh_hostname") or target.name)


# --- per-node names of the Document Server "shards" design ------------------------------
#
# Each Document Server host (group ``docs``) has its OWN database, RabbitMQ vhost and Redis
# key prefix on the shared HA data tier.  Why: the real image's SIGTERM trap broadcasts
# ``PUT /internal/cluster/inactive`` over the RabbitMQ fanout ``ds.pubsub`` of its vhost, and
# a version change runs ``removetbl.sql`` on its database.  With a vhost and a database per
# node both reach only the node that is being stopped or changed (see docs/architecture.md,
# "App tier: Document Server").  The postgres layer creates the databases, the rabbitmq layer
# the vhosts, the documentserver layer points each container at its own; they all call these
# functions so the names can never drift apart.

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


def node_compat_database(host_name: str) -> str:
    """Scratch database of the rollout's compat gate on one DS node (ooha/rollout/live/compat.py
    creates it owned by role onlyoffice and drops it around each run).  One fixed name per node,
    not a random one: pg_hba must name the databases a DS host may reach, and PostgreSQL 15 has
    no pattern for database names."""
    return f"ooha_compat_{node_slug(host_name)}"


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
