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

A blank member (issue 10: the host came back without ``<data_dir>/member``, same name, or
a replacement with the inventory's new address) is REPLACED through the surviving quorum:
the cluster still lists the old member, and starting a blank etcd under that identity
panics (``tocommit out of range``).  Decided at prepare time from the current cluster
(``join_plan``, pure): the other members' view must answer with a majority of the member
list healthy, else the run is refused; the old member (this name or this peer URL) is
removed and this one added in one idempotent shell command (``member_swap_script``), the
file gets ``existing`` and the initial cluster from the member list, then etcd starts and
the run waits until it is healthy and listed as started.  A host with a member dir is
never blank, and nothing here deletes data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import DeployError, deploy
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
    etcdctl_urls,
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


def _peers_with_data(data_dir: str) -> tuple[list[Any], list[str]]:
    """(other members of this run that already hold etcd data, names of members outside this run).

    Only hosts connected in this run are asked; a host outside ``--limit`` is unknown.
    """
    from pyinfra import state

    found, unknown = [], []
    for member in etcd_members():
        if member.name == host.name:
            continue
        if member not in state.activated_hosts:
            unknown.append(member.name)
        elif member.get_fact(EtcdMemberDataPresent, data_dir=data_dir):
            found.append(member)
    return found, unknown


# --- a member without data joining a running cluster (pure, unit-tested) ----------------


class JoinRefused(Exception):
    """No safe way to bring this blank member in; the message is "reason; fix: ..."."""


@dataclass(frozen=True)
class JoinPlan:
    """How a member without data joins the running cluster (ETCD_INITIAL_CLUSTER_STATE=existing)."""

    endpoints: list[str]
    """Client URLs of the healthy other members: etcdctl goes through them."""
    stale: list[dict[str, Any]]
    """Members to remove first: this host's old identity (its name or its peer URL)."""
    initial_cluster: str
    """ETCD_INITIAL_CLUSTER: the member list after the swap, this member included."""


def healthy_members(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Members of ``view`` (EtcdClusterHealth) whose client URL answered ``endpoint health``."""
    healthy = {e["endpoint"] for e in view["endpoints"] if e["healthy"]}
    return [m for m in view["members"] if healthy & set(m["client_urls"])]


def has_quorum(view: dict[str, Any]) -> bool:
    """A strict majority of the cluster's member list (unstarted members included) is healthy."""
    return len(healthy_members(view)) > len(view["members"]) // 2


def own_identities(members: list[dict[str, Any]], name: str, url: str) -> list[dict[str, Any]]:
    """Members that are this host: its name, or its peer URL (a member added but never started
    has no name)."""
    return [m for m in members if m["name"] == name or url in m["peer_urls"]]


def stale_members(members: list[dict[str, Any]], name: str, url: str) -> list[dict[str, Any]]:
    """This host's identities to remove before it joins: all of them except a member added
    with exactly this peer URL and never started (a previous run's ``member add``: reused)."""
    return [m for m in own_identities(members, name, url)
            if not (not m["name"] and m["peer_urls"] == [url])]


def join_plan(view: dict[str, Any] | None, name: str, url: str, names_by_url: dict[str, str]) -> JoinPlan:
    """The plan for blank member ``name`` (peer ``url``) from the cluster's ``view`` as a
    surviving member reports it; JoinRefused when there is no quorum to join or when this
    member answers in the cluster (its data dir would be the wrong one, not blank).

    ``names_by_url``: inventory names by peer URL, for members added but never started.
    """
    if view is None:
        raise JoinRefused("other members hold data but none answers (member list): no quorum to join; "
                          "fix: restore the etcd quorum first (start the other members), or rebuild the site")
    healthy = healthy_members(view)
    if not has_quorum(view):
        raise JoinRefused(f"no quorum to join: {len(healthy)} of {len(view['members'])} members healthy "
                          f"({', '.join(sorted(m['name'] or '(unstarted)' for m in healthy)) or 'none'}); "
                          "fix: restore the etcd quorum first (start the other members), or rebuild the site")
    answering = [m for m in own_identities(healthy, name, url)]
    if answering:
        raise JoinRefused(f"no member data in the data dir, but the cluster's member {answering[0]['name'] or url} "
                          f"answers at {', '.join(answering[0]['client_urls'])}: not a blank host; "
                          "fix: check etcd_data_dir and `systemctl status etcd` on this host")
    stale = stale_members(view["members"], name, url)
    stale_ids = {m["id"] for m in stale}
    pairs = []
    for member in view["members"]:
        if member["id"] in stale_ids:
            continue
        for peer in member["peer_urls"]:
            label = member["name"] or names_by_url.get(peer) or f"unstarted-{member['id']}"
            if peer != url:
                pairs.append(f"{label}={peer}")
    pairs.append(f"{name}={url}")
    endpoints = [u for m in healthy if m["id"] not in stale_ids for u in m["client_urls"]]
    return JoinPlan(endpoints=endpoints, stale=stale, initial_cluster=",".join(pairs))


def member_swap_script(endpoints: list[str], name: str, url: str, stale_ids: list[str]) -> str:
    """One shell command, safe to run again: remove each stale member still listed, then add
    this member unless a member with exactly this peer URL is listed (etcdctl's simple
    ``member list``: ``id, status, name, peer URLs, client URLs, learner``)."""
    ctl = etcdctl_urls(endpoints, "member")
    has_url = ("awk -F', ' -v u=" + shlex.quote(url) +
               " '{n=split($4,a,\",\"); for(i=1;i<=n;i++) if(a[i]==u) f=1} END {exit !f}'")
    # set -e: a member list that fails stops the script before any remove or add.
    steps = ["set -e"]
    for member_id in stale_ids:
        hex_id = format(int(member_id, 16), "x")
        steps += [f"listed=$({ctl} list)",
                  f"if printf '%s\\n' \"$listed\" | grep -q '^{hex_id}, '; then {ctl} remove {hex_id}; fi"]
    steps += [f"listed=$({ctl} list)",
              f"printf '%s\\n' \"$listed\" | {has_url} || {ctl} add {shlex.quote(name)} --peer-urls={shlex.quote(url)}"]
    return "; ".join(steps)


def member_started_script(address: str, port: int, name: str, seconds: int) -> str:
    """Wait until this member's endpoint is healthy and the member list shows it started."""
    health = etcdctl(address, port, "endpoint", "health")
    listed = (etcdctl(address, port, "member", "list") + " | awk -F', ' -v n=" + shlex.quote(name) +
              " '$2==\"started\" && $3==n {f=1} END {exit !f}'")
    return (f"end=$(($(date +%s)+{int(seconds)})); while [ $(date +%s) -lt $end ]; do "
            f"{health} >/dev/null 2>&1 && {listed} && exit 0; sleep 2; done; "
            f"echo 'etcd member {name} not healthy and started after {int(seconds)} s' >&2; exit 1")


def _cluster_view(via: list[Any]) -> dict[str, Any] | None:
    """The cluster as the first of ``via`` (members with data) that answers with a member list reports it."""
    for member in via:
        view = member.get_fact(EtcdClusterHealth, address=member.data.private_address,
                               port=int(_value(member, "etcd_client_port")))
        if view is not None and view["members"]:
            return view
    return None


def _bootstrap_values(data: Any, has_data: bool) -> tuple[str, str, JoinPlan | None]:
    """(initial cluster, initial cluster state, the plan to join a running cluster or None)."""
    everyone = ",".join(f"{m.name}={peer_url(m)}" for m in etcd_members())
    if has_data:
        # etcd ignores the initial-* values once it has data: keep the file as it is.
        current = host.get_fact(EtcdEnvironment)
        return (
            current.get("ETCD_INITIAL_CLUSTER", everyone),
            current.get("ETCD_INITIAL_CLUSTER_STATE", "new"),
            None,
        )
    running, unknown = _peers_with_data(data.etcd_data_dir)
    if not running:
        if unknown:
            raise DeployError(f"{host.name}: etcd: no member data here and etcd member(s) {', '.join(unknown)} are "
                              "not in this run, so whether a cluster exists is unknown (a blank member must "
                              "join it, never start a second one); fix: run without --limit, or include the "
                              "etcd group in it")
        return everyone, "new", None
    try:
        plan = join_plan(_cluster_view(running), host.name, peer_url(host),
                         {peer_url(m): m.name for m in etcd_members()})
    except JoinRefused as exc:
        raise DeployError(f"{host.name}: etcd: {exc}") from None
    return plan.initial_cluster, "existing", plan


@deploy("etcd", data_defaults=ETCD_DEFAULTS)
def etcd() -> None:
    """Converge this host's etcd member; data keys are documented in ETCD_DEFAULTS."""
    data = host.data
    apt.packages(name="Install etcd", packages=list(data.etcd_packages), no_recommends=True)
    certs = push_host_cert("etcd", ETCD_PKI, "etcd")

    has_data = host.get_fact(EtcdMemberDataPresent, data_dir=data.etcd_data_dir)
    initial_cluster, cluster_state, plan = _bootstrap_values(data, has_data)
    if plan:
        # Joining a running cluster without data (a new host, or a blank one the cluster still
        # lists): through the healthy members, its old identity out, this member in.
        stale = ", ".join(f"{m['name'] or '(unstarted)'} {m['id']}" for m in plan.stale)
        server.shell(
            name=f"Replace this etcd member in the running cluster (remove: {stale or 'none'}; add {host.name})",
            commands=[member_swap_script(plan.endpoints, host.name, peer_url(host), [m["id"] for m in plan.stale])],
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
    if plan:
        server.shell(name="etcd member healthy and listed as started",
                     commands=[member_started_script(data.private_address, int(data.etcd_client_port), host.name,
                                                     int(data.etcd_health_deadline))])


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
