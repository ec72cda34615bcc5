"""What the lab's registry should hold, and a cheap read of what it does hold."""
from __future__ import annotations

import base64
import json
import ssl
import urllib.request

from lab import state

DS_REPOSITORY = "onlyoffice/documentserver-ee"
#: Stand-in versions pushed to the registry: (version, release date), see docs/architecture.md.
#: The oldest tag is the one the lab deploys (inventories/labstate.py), so a new entry must sort after it.
DS_VERSIONS = [("9.3.0.1", "2026-02-10"), ("9.3.1.2", "2026-03-17"), ("9.3.2.9", "2026-04-14")]
#: Deliberately broken builds among DS_VERSIONS: version -> defect (lab.standin.DEFECTS). 9.3.2.9 is
#: a plain tag, as a bad upstream release would be; the rollout's compat gate and soak must refuse it.
DS_BROKEN = {"9.3.2.9": "healthcheck-decay"}


def registry_tags(registry: str, secrets: dict[str, str], repository: str = DS_REPOSITORY) -> list[str]:
    """Tags of repository in the registry over TLS (lab CA) with basic auth; [] if it does not answer."""
    ca = state.ca_dir() / "ca.crt"
    if not ca.exists() or "registry_username" not in secrets:
        return []
    ctx = ssl.create_default_context(cafile=str(ca))
    auth = base64.b64encode(f"{secrets['registry_username']}:{secrets['registry_password']}".encode()).decode()
    req = urllib.request.Request(f"https://{registry}/v2/{repository}/tags/list",
                                 headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=3) as resp:
            return sorted(json.load(resp).get("tags") or [])
    except (OSError, ValueError):
        return []
