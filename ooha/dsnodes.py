"""Per-node names of the Document Server "shards" design: now defined in ooha/contract.py.

Kept so ``from ooha.dsnodes import ...`` goes on working; the one definition is the
contract's (see its comment on why every layer must derive the names the same way).
"""

from __future__ import annotations

from ooha.contract import docker_gateway, docs_hosts, node_database, node_redis_prefix, node_slug, node_vhost

__all__ = ["docker_gateway", "docs_hosts", "node_database", "node_redis_prefix", "node_slug", "node_vhost"]
