"""Production-shaped inventory: copy it, edit it, run it.

    cp inventories/example.py inventory.py        # then edit hosts and addresses
    install -m 600 /dev/null /etc/onlyoffice-ha/secrets.yml   # then fill it in (README)
    pyinfra inventory.py deploys/ha.py

Same groups and data keys as the lab (docs/architecture.md): lb, docs, postgres,
etcd, redis, rabbitmq.  The reference topology is 3 availability zones with
2 load balancers, 3 Document Server hosts and 3 data hosts (each data host runs
PostgreSQL, etcd, Redis and RabbitMQ).  Every tier must span at least 2 AZs: the
inventory check refuses anything else before a single host is touched.

Everything lives in this one file (no group_data/ folder) so nothing here leaks into
other inventories run from the same directory.

Secrets are never written here: they are loaded from ``$OOHA_SECRETS_FILE``
(default /etc/onlyoffice-ha/secrets.yml), a YAML mapping that must be mode 0600.
"""

from ooha.preflight import check_inventory_groups
from ooha.secrets import load_production_secrets

# --- connection defaults --------------------------------------------------------------
# The deploy logs in as an unprivileged user with passwordless sudo (config.py sets
# SUDO = True).  Host keys are checked against known_hosts: collect them out of band
# (cloud console, image build, `ssh-keyscan` over a trusted path) before the first
# run.  Never set ssh_strict_host_key_checking to "no": the check refuses it.
_CONNECTION = {
    "ssh_user": "deploy",
    "ssh_key": "~/.ssh/onlyoffice_ha_ed25519",
    "ssh_known_hosts_file": "~/.ssh/known_hosts",
    "ssh_strict_host_key_checking": "yes",
}


def _host(name: str, az: str, address: str, **extra: str) -> tuple[str, dict]:
    """One host: logical name, its AZ, and the private address peers use.

    ``ssh_hostname`` is what pyinfra connects to; here the same private address
    (e.g. through a VPN or a bastion configured in ~/.ssh/config).  Use a DNS name
    instead if you have one: ``private_address`` must stay an IP address because it
    goes into service configs.
    """
    return (name, {"az": az, "ssh_hostname": address, "private_address": address, **_CONNECTION, **extra})


# --- hosts ----------------------------------------------------------------------------
# Replace the names, zones and addresses with yours.  The addresses below are from
# the documentation ranges (RFC 5737): nothing answers there.
_HOSTS = [
    # Load balancers: Nginx in front of the Document Server tier, floating address
    # moved by VRRP (a later issue).  Two AZs at least.
    # front_address: each LB's address on the segment that carries the VIP (VRRP needs one
    # L2 segment stretched across the LBs' AZs; keepalived peers talk unicast over it).
    _host("lb1", "eu-west-1a", "192.0.2.11", front_address="203.0.113.11"),
    _host("lb2", "eu-west-1b", "198.51.100.12", front_address="203.0.113.12"),
    # Document Server hosts: Docker engine + the documentserver-ee container.
    _host("ds1", "eu-west-1a", "192.0.2.21"),
    _host("ds2", "eu-west-1b", "198.51.100.22"),
    _host("ds3", "eu-west-1c", "203.0.113.23"),
    # Data hosts: PostgreSQL (Patroni over etcd), Redis + Sentinel, RabbitMQ.
    # Three of them, one per AZ, so every quorum survives the loss of one AZ.
    _host("data1", "eu-west-1a", "192.0.2.31"),
    _host("data2", "eu-west-1b", "198.51.100.32"),
    _host("data3", "eu-west-1c", "203.0.113.33"),
]

# --- global data (the "all" group) ----------------------------------------------------
# Each key is documented in the data_defaults of the layer that reads it
# (ooha/layers/base.py for these).  Omitted keys take those defaults.
_GLOBAL_DATA = {
    # apt caching proxy (apt-cacher-ng) or None to fetch from the mirrors directly.
    "apt_proxy": None,
    # Your NTP servers; an empty list means Debian's pool.
    "ntp_servers": ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"],
    # Real machines may step and slew their clock (containers may not).
    "chrony_may_set_clock": True,
    # Kernel-wide sysctls, on top of ooha/layers/base.py's defaults; {} keeps the defaults.
    # "sysctl_host_baseline": {"vm.swappiness": 10, "vm.overcommit_memory": 1},
    # Docker engine on the Document Server hosts (ooha/layers/docker.py documents every key).
    # Pick ranges unused anywhere in your networks (VPNs, peered VPCs, offices): there is
    # no default bridge address on purpose (Docker's 172.17.0.0/16 clashes with many).
    "docker_bip": "10.200.0.1/24",
    "docker_address_pools": [{"base": "10.201.0.0/16", "size": 24}],
    # "debian" (docker.io) or "docker" (Docker's apt repository, docker-ce).
    "docker_source": "debian",
    # "docker_registry_mirrors": ["https://mirror.example.net"],
    # Private registry the images come from; root logs in with secrets registry_username
    # and registry_password (required once this is set).  The CA file is read on this machine.
    # "docker_registry": "registry.example.net:5000",
    # "docker_registry_ca": "/etc/onlyoffice-ha/registry-ca.crt",
    # Document Server (ooha/layers/documentserver.py documents every key): one container per DS
    # host, image <ds_image>:<ds_version> (pinned tag; ds_image_digest optional) from the
    # registry above.  ee/de share Redis via Sentinel; community warns on several nodes.
    "ds_image": "onlyoffice/documentserver-ee",
    "ds_version": "9.3.0.1",
    "ds_edition": "ee",
    # The test example (never in production): False -> /example/ answers 502 by design.
    "ds_example_enabled": False,
    # Front door (ooha/layers/loadbalancer.py documents every key): the VIP keepalived moves
    # between the LBs, and the TLS chain + key nginx serves (files on this machine).
    "lb_vip": "203.0.113.100/24",
    "lb_tls_certificate": "/etc/onlyoffice-ha/tls/front.crt",
    "lb_tls_key": "/etc/onlyoffice-ha/tls/front.key",
    # "lb_vrrp_router_id": 51,   # unique per VRRP segment
    # PostgreSQL backups (ooha/layers/pgbackrest.py documents every key): pgBackRest into S3,
    # encrypted with secret pgbackrest_cipher_pass; keys s3_access_key/s3_secret_key.
    "pgbackrest_s3_endpoint": "https://s3.eu-west-1.amazonaws.com",
    "pgbackrest_s3_bucket": "example-onlyoffice-backups",
    "pgbackrest_s3_region": "eu-west-1",
    "pgbackrest_s3_uri_style": "host",   # "path" for MinIO and other S3-compatible stores
    # "pgbackrest_s3_ca_cert": "/etc/onlyoffice-ha/s3-ca.crt",   # a private CA's bundle
    # File backups (ooha/layers/filebackup.py documents every key): restic, one repository per
    # DS host and load balancer under this prefix; secrets s3_access_key, s3_secret_key and
    # restic_password (the repositories' encryption password: keep a copy outside the deployment).
    "filebackup_repository_prefix": "s3:https://s3.eu-west-1.amazonaws.com/example-onlyoffice-backups/files",
    "filebackup_s3_region": "eu-west-1",
    # "filebackup_s3_ca_cert": "/etc/onlyoffice-ha/s3-ca.crt",
    # "ds_memory_limit": "8g", "ds_cpus": 4,
    # Loaded from $OOHA_SECRETS_FILE (mode 0600), never written here.
    "secrets": load_production_secrets(),
}

# --- groups ---------------------------------------------------------------------------
# Every module-level list (or (list, data) tuple) is a pyinfra group.  Keep helpers
# private with a leading underscore so pyinfra does not take them for groups.
all = (_HOSTS, _GLOBAL_DATA)  # noqa: A001  (pyinfra's name for the group of every host)
lb = ["lb1", "lb2"]
docs = ["ds1", "ds2", "ds3"]
postgres = ["data1", "data2", "data3"]
etcd = ["data1", "data2", "data3"]
redis = ["data1", "data2", "data3"]
rabbitmq = ["data1", "data2", "data3"]

# Refuse an invalid inventory while pyinfra is loading it: before any connection.  Under the
# pyinfra CLI, config.py's preflight then checks everything else (every layer's inputs,
# --data, files on this machine) on the final data, still before any connection.
check_inventory_groups(globals(), source=__file__)
