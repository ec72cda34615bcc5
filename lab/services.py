"""The services host (svc1): registry, S3, apt cache, NTP. Filled in after the hosts work."""
from __future__ import annotations

from typing import Any, Callable

import docker

from lab.topology import Host, Topology


def configure(cli: docker.DockerClient, topo: Topology, host: Host, secrets: dict[str, str],
              say: Callable[[str], None]) -> None:
    """Configure the regional services on host (not yet implemented)."""
    say("services host: configuration not implemented yet")


def push_standins(cli: docker.DockerClient, host: Host, secrets: dict[str, str],
                  say: Callable[[str], None]) -> None:
    """Build and push the Document Server stand-in versions (not yet implemented)."""
