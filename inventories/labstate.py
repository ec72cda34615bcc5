"""Turn the lab's state (``.lab/state.json``, see docs/architecture.md) into inventory groups.

Kept apart from ``inventories/lab.py`` so the translation is plain functions with unit
tests; ``lab.py`` only calls ``lab_groups()`` and names the groups.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from ooha.secrets import load_secrets
from ooha.stack import GROUPS

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_DIR_ENV = "OOHA_LAB_DIR"
ROLES: tuple[str, ...] = GROUPS
"""The lab's target roles: the inventory groups of the layer table (ooha/stack.py)."""
INFRA_ROLE = "services"
"""The services host is lab infrastructure (registry, S3, apt cache, NTP), not a target."""


class LabNotUpError(PyinfraError):
    """The lab has no state file: it was never brought up (or was taken down)."""


def lab_dir() -> Path:
    """The lab's state directory: ``$OOHA_LAB_DIR`` or ``<repo>/.lab``."""
    return Path(os.environ.get(LAB_DIR_ENV) or REPO_ROOT / ".lab")


def load_lab_state(state_dir: Path | None = None) -> dict[str, Any]:
    """Read ``state.json`` from the lab directory, with a clear error if the lab is not up."""
    path = (state_dir or lab_dir()) / "state.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabNotUpError(
            f"the lab is not up ({path} does not exist): run `python -m lab up` "
            f"(or `make lab`) first"
        ) from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabNotUpError(f"{path} is not valid JSON ({exc}): run `python -m lab up` again") from None
    if not isinstance(state, dict) or not isinstance(state.get("hosts"), list):
        raise LabNotUpError(f"{path} has no host list: run `python -m lab up` again")
    return state


def host_data(host: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Per-host data from one state entry (connection keys, az, private_address)."""
    return {
        "az": host.get("az"),
        "ssh_hostname": host.get("address"),
        "ssh_user": host.get("ssh_user"),
        "ssh_key": host.get("ssh_key") or state.get("ssh_key"),
        "ssh_known_hosts_file": state.get("known_hosts"),
        "ssh_strict_host_key_checking": "yes",
        "private_address": host.get("address"),
        "lab_container": host.get("container"),
        "lab_addresses": dict(host.get("addresses") or {}),
        # The load balancers' address on the front network (VRRP peers, the VIP's interface).
        **({"front_address": host["addresses"]["front"]} if "front" in (host.get("addresses") or {}) else {}),
    }


def ds_image_data(state: dict[str, Any]) -> dict[str, Any]:
    """ds_image / ds_version from the lab's registry images (the oldest tag is the deployed one)."""
    image = (state.get("images") or {}).get("documentserver") or {}
    tags = list(image.get("tags") or [])
    if not image.get("repository") or not tags:
        return {}
    return {"ds_image": image["repository"], "ds_version": tags[0], "ds_edition": "ee"}


def _host_of(url: str | None) -> str | None:
    """The host part of a URL (None for None)."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname if url else None


def _with_host(url: str | None, name: str) -> str | None:
    """``url`` with its host replaced by ``name`` (port kept; None for None)."""
    from urllib.parse import urlsplit

    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{name}" + (f":{parts.port}" if parts.port else "")


def global_data(state: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """Data for the ``all`` group: lab services and the loaded secrets."""
    services = state.get("services") or {}
    ntp = services.get("ntp_server")
    return {
        "apt_proxy": services.get("apt_proxy"),
        "ntp_servers": [ntp] if ntp else [],
        # svc1 is next door: poll it often so sync comes back soon after it restarts.
        "ntp_server_options": "iburst minpoll 4 maxpoll 6",
        # Lab hosts are containers without CAP_SYS_TIME: chronyd runs with -x.
        "chrony_may_set_clock": False,
        # Containers share this machine's kernel: kernel-wide sysctls stay untouched.
        "sysctl_host_baseline": {},
        "lab_ca_cert": state.get("ca_cert"),
        # Rollouts' synthetic editing session through the front door trusts the lab CA.
        "rollout_front_door_ca": state.get("ca_cert"),
        "lab_services": dict(services),
        # The deploy CA (ooha/pki.py) lives beside the lab's other state.
        "pki_dir": str(Path(state.get("state_dir") or lab_dir()) / "pki"),
        # Docker engines inside lab hosts use 198.19.0.0/16 only (docs/architecture.md).
        "docker_bip": "198.19.0.1/24",
        "docker_address_pools": [{"base": "198.19.128.0/17", "size": 24}],
        "docker_registry": services.get("registry"),
        "docker_registry_ca": state.get("ca_cert"),
        # Document Server: the stand-in image in the lab registry, its first tag (9.3.0.1).
        **ds_image_data(state),
        # pgBackRest's repository (ooha/layers/pgbackrest.py): the lab S3 on svc1 (moto, path style).
        # Its certificate names svc1 (DNS) and the address (IP SAN); pgBackRest 2.45 checks DNS
        # names only, so it talks to "svc1" and connects to the address.
        "pgbackrest_s3_endpoint": _with_host(services.get("s3_endpoint"), "svc1"),
        "pgbackrest_s3_connect_address": _host_of(services.get("s3_endpoint")),
        "pgbackrest_s3_bucket": services.get("s3_bucket"),
        "pgbackrest_s3_region": services.get("s3_region"),
        "pgbackrest_s3_uri_style": "path",
        "pgbackrest_s3_ca_cert": state.get("ca_cert"),
        # File backups (ooha/layers/filebackup.py): restic, one repository per host under this prefix.
        # restic (Go) checks the certificate's IP SAN, so the address works directly.
        "filebackup_repository_prefix": f"s3:{services.get('s3_endpoint')}/{services.get('s3_bucket')}/files",
        "filebackup_s3_region": services.get("s3_region"),
        "filebackup_s3_ca_cert": state.get("ca_cert"),
        "secrets": secrets,
        # The front door (ooha/layers/loadbalancer.py): the VIP and the certificate from the lab CA.
        **({"lb_vip": front["vip"], "lb_tls_certificate": front["tls_certificate"], "lb_tls_key": front["tls_key"]}
           if (front := state.get("front")) else {}),
    }


def lab_groups(state: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """Inventory groups ``{"all": ([(name, data)...], global), role: [names]...}``.

    Hosts are listed with their data once, in ``all``; role groups list names only.
    The services host is left out.  Roles missing from the lab give empty groups,
    which the inventory check reports.
    """
    targets = [h for h in state["hosts"] if INFRA_ROLE not in (h.get("roles") or [])]
    groups: dict[str, Any] = {
        "all": ([(h["name"], host_data(h, state)) for h in targets], global_data(state, secrets))
    }
    for role in ROLES:
        groups[role] = [h["name"] for h in targets if role in (h.get("roles") or [])]
    return groups


def load_lab_groups(state_dir: Path | None = None) -> dict[str, Any]:
    """Read the lab state and its secrets file and return the inventory groups."""
    state = load_lab_state(state_dir)
    secrets_file = state.get("secrets_file") or str((state_dir or lab_dir()) / "secrets.yml")
    return lab_groups(state, load_secrets(secrets_file))
