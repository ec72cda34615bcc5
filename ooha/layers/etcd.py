"""etcd layer: one member per etcd host (one per AZ), the consensus store Patroni uses.

Debian's ``etcd-server`` (3.4) under its own systemd unit, which reads
/etc/default/etcd.  Peers and clients speak TLS with client-certificate auth, from the
deploy CA (ooha/pki.py).  The static cluster list comes from the inventory's etcd
group (``inventory.get_group``), so ``--limit`` never shrinks it.

A member's data is never re-bootstrapped: ``initial-cluster-state new`` is written only
when no member of the group has data yet; a host added to a running cluster is first
registered with ``etcdctl member add`` and starts with ``existing``; once a member has
data the initial-* values of its file are kept as they are (etcd ignores them), so adding
a host does not rewrite (and restart) the running members.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from ooha.pki import push_host_cert
from ooha.contract import contract_defaults
from ooha.report import CheckResult, poll
from ooha.settings import Settings
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.etcd import (
    ETCD_DEFAULTS_FILE,
    ETCD_PKI,
    EtcdClusterHealth,
    EtcdEnvironment,
    EtcdMemberDataPresent,
    etcdctl,
)


ETCD_DEFAULTS: dict[str, Any] = {
    # Debian packages: the server and etcdctl (health checks, member add).
    "etcd_packages": ["etcd-server", "etcd-client"],
    # The client port: Patroni (postgres layer) reaches it, default in ooha/contract.py.
    **contract_defaults("etcd_client_port"),
    "etcd_peer_port": 2380,
    # A data dir of its own: the package's first start (localhost, /var/lib/etcd/default)
    # never becomes part of the cluster.
    "etcd_data_dir": "/var/lib/etcd/onlyoffice",
    "etcd_cluster_token": "onlyoffice-etcd",
    # Raft timing.  etcd's defaults (100 ms / 1 s) suit links of a few ms between AZs.
    "etcd_heartbeat_ms": 100,
    "etcd_election_ms": 1000,
    # Seconds the report waits for every member to be healthy after a (re)start.
    "etcd_health_deadline": 60,
}


_value = Settings(ETCD_DEFAULTS)
"""A data key with this layer's default (the report runs outside the etcd deploy)."""


def etcd_members() -> list[Any]:
    """Every host of the inventory's etcd group (not only the hosts of this run)."""
    return list(inventory.get_group("etcd"))


def peer_url(target: Any) -> str:
    return f"https://{target.data.private_address}:{_value(target, 'etcd_peer_port')}"


def client_endpoints() -> list[str]:
    """``address:port`` of every member's client port (Patroni's etcd3 ``hosts``)."""
    return [f"{m.data.private_address}:{_value(m, 'etcd_client_port')}" for m in etcd_members()]


def _peers_with_data(data_dir: str) -> list[Any]:
    """Other members of this run that already hold etcd data (the cluster exists).

    Only hosts connected in this run are asked; a host outside ``--limit`` is unknown.
    """
    from pyinfra import state

    found = []
    for member in etcd_members():
        if member.name == host.name or member not in state.activated_hosts:
            continue
        if member.get_fact(EtcdMemberDataPresent, data_dir=data_dir):
            found.append(member)
    return found


def _bootstrap_values(data: Any, has_data: bool) -> tuple[str, str, list[Any]]:
    """(initial cluster, initial cluster state, running peers to join through)."""
    everyone = ",".join(f"{m.name}={peer_url(m)}" for m in etcd_members())
    if has_data:
        # etcd ignores the initial-* values once it has data: keep the file as it is.
        current = host.get_fact(EtcdEnvironment)
        return (
            current.get("ETCD_INITIAL_CLUSTER", everyone),
            current.get("ETCD_INITIAL_CLUSTER_STATE", "new"),
            [],
        )
    running = _peers_with_data(data.etcd_data_dir)
    if running:
        return everyone, "existing", running
    return everyone, "new", []


@deploy("etcd", data_defaults=ETCD_DEFAULTS)
def etcd() -> None:
    """Converge this host's etcd member; data keys are documented in ETCD_DEFAULTS."""
    data = host.data
    apt.packages(name="Install etcd", packages=list(data.etcd_packages), no_recommends=True)
    certs = push_host_cert("etcd", ETCD_PKI, "etcd")

    has_data = host.get_fact(EtcdMemberDataPresent, data_dir=data.etcd_data_dir)
    initial_cluster, cluster_state, running = _bootstrap_values(data, has_data)
    if running:
        # Joining a running cluster: register this member through a running one first.
        via = running[0]
        add = etcdctl(via.data.private_address, _value(via, "etcd_client_port"), "member", "add", host.name,
                      f"--peer-urls={peer_url(host)}")
        listed = etcdctl(via.data.private_address, _value(via, "etcd_client_port"), "member", "list")
        server.shell(
            name="Register this new etcd member with the running cluster",
            commands=[f"{listed} | grep -qF {peer_url(host)} || {add}"],
        )

    config = files.template(
        name="Configure etcd",
        src=str(TEMPLATES / "etcd/etcd.default.j2"),
        dest=ETCD_DEFAULTS_FILE,
        mode="600",
        user="etcd",
        group="etcd",
        member_name=host.name,
        data_dir=data.etcd_data_dir,
        address=data.private_address,
        peer_port=int(data.etcd_peer_port),
        client_port=int(data.etcd_client_port),
        initial_cluster=initial_cluster,
        cluster_token=data.etcd_cluster_token,
        cluster_state=cluster_state,
        pki=ETCD_PKI,
        heartbeat_ms=int(data.etcd_heartbeat_ms),
        election_ms=int(data.etcd_election_ms),
        jinja_env_kwargs=dict(JINJA),
    )
    changed = any_changed(config, *certs)
    if has_data:
        # A running cluster: one member at a time (Type=notify waits until it rejoined),
        # so quorum, and with it Patroni's leader key, survives the change.
        systemd.service(name="Restart etcd (configuration changed), one member at a time",
                        service="etcd.service", restarted=True, _serial=True, _if=changed)
    else:
        # First start of this member: all together, since each waits for a quorum.
        systemd.service(name="Start etcd with its cluster configuration",
                        service="etcd.service", restarted=True, _if=changed)
    systemd.service(name="etcd running and enabled", service="etcd.service", running=True, enabled=True)


# --- validation -----------------------------------------------------------------------


def check_etcd_once(target: Any) -> CheckResult:
    """Every member healthy, and the members are exactly the inventory's etcd group."""
    view = target.get_fact(
        EtcdClusterHealth, address=target.data.private_address, port=int(_value(target, "etcd_client_port"))
    )
    if view is None:
        return CheckResult(False, "etcd not answering on its client port", "see `systemctl status etcd`; rerun the deploy")
    wanted = {m.name for m in etcd_members()}
    names = {m["name"] for m in view["members"]}
    problems = []
    missing, extra = sorted(wanted - names), sorted(names - wanted)
    if missing:
        problems.append(f"member(s) missing: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected member(s): {', '.join(x or '(unstarted)' for x in extra)}")
    sick = [e for e in view["endpoints"] if not e["healthy"]]
    if sick:
        problems.append("unhealthy: " + ", ".join(f"{e['endpoint']} ({e['error'] or 'no answer'})" for e in sick))
    if len(view["endpoints"]) < len(view["members"]):
        problems.append(f"only {len(view['endpoints'])} of {len(view['members'])} endpoints answered")
    if problems:
        return CheckResult(False, "; ".join(problems), "start etcd on the named hosts or rerun the deploy")
    return CheckResult(True, f"{len(names)} members healthy ({', '.join(sorted(names))}), TLS with client certs")


def check_etcd(target: Any) -> CheckResult:
    """check_etcd_once, waiting for members that are still (re)joining."""
    return poll(check_etcd_once, target, float(_value(target, "etcd_health_deadline")), interval=2.0)
