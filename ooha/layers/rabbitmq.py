"""RabbitMQ layer: a three-node cluster (one node per AZ) with Document Server's vhost and user.

Debian's ``rabbitmq-server`` 3.10 under systemd.  Everything that decides a node's
identity is in place before the package first starts it: the Erlang cookie (mode 0400),
the node name ``rabbit@<inventory name>``, peers resolvable by name (``/etc/hosts`` and
an Erlang inetrc), ``cluster_partition_handling = pause_minority``.  The first host of
the ``rabbitmq`` group is the seed of a brand-new cluster; every other node joins once, by
an operation that reads the node's cluster status when it executes (``join_plan``: a node
already clustered is left alone, a node clustered elsewhere is refused, never reset).  A
node rebuilt blank (the surviving nodes still list ``rabbit@<host>``), the seed included,
joins a running survivor after that survivor forgot its old identity
(``rabbitmqctl -n <survivor> forget_cluster_node``, with the blank node's app stopped);
refused with host, reason and fix when no survivor runs or the standalone node holds vhosts.  The vhost ``onlyoffice`` and
one vhost per DS node (``onlyoffice_<node>``, ooha/contract.py), user ``onlyoffice``
(password from stdin, never on a command line) with permissions on those vhosts only, and
the removal of ``guest`` are cluster-wide and run on the seed.

A peer at a new address (a replacement host after the inventory is edited): ``/etc/hosts``
and the inetrc follow the inventory on every node, but the running nodes are NOT restarted
for it.  A restart then would take a survivor down while the cluster is one node short (the
blank node has not joined yet; with ``pause_minority`` the last running survivor would pause
too).  The running Erlang VM's own host table (loaded from the inetrc at boot) is updated
live instead (``inet_db:del_host``/``add_host`` through ``rabbitmqctl eval``, only when it
differs: ``resolver_changes``), before the blank node joins; a VM that starts later reads
the inetrc.  Planning without ``-y``: a blank node's join is decided when it executes
(``cluster_joined`` shows "decided at execute time" at plan time), from the cluster status
of that moment: the plan line is a placeholder, nothing is run from plan-time facts.

Document Server's queues when a node is lost: DS declares non-durable classic queues
(``ds.converttask``... and an exclusive queue per process bound to the ``ds.pubsub``
fanout).  Quorum queues must be durable, so they would need DS to change its
declarations.  A non-durable classic queue lives on one node: when that node is lost
the queue and its messages vanish, and DS only recovers once it reconnects and
redeclares.  We choose classic mirrored queues: the policy ``ha-onlyoffice`` on the
onlyoffice vhost (``ha-mode: all``, ``ha-sync-mode: automatic``, promote on shutdown
and on failure) keeps a mirror of every shared queue on each node, so when the node
holding a queue's leader is lost a mirror takes over with the queued conversion tasks
and publishers and consumers on the other nodes keep going.  Exclusive queues
(``ds.pubsub`` subscribers) are never mirrored: they belong to one connection and DS
redeclares them when it reconnects, through the endpoint HAProxy gives it on its own
host (ooha/layers/endpoints.py), to a running node.  Mirroring is deprecated upstream
(removed in RabbitMQ 4.0, where DS 9.0+ should move to quorum queues) but is the
supported way in 3.10 for queues declared non-durable.  ``rabbitmq_mirror_queues: False``
leaves queues node-local.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shlex
from io import StringIO
from typing import Any

from pyinfra import host, inventory, state
from pyinfra.api import FactBase, QuoteString, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.operations import apt, files, server, systemd

from ooha.contract import contract_defaults, docs_hosts, node_vhost, peer_address
from ooha.ops.hosts_file import hosts_entries
from ooha.ops.private_files import private_put
from ooha.report import CheckResult, poll
from ooha.settings import Settings
from ooha.settings import secret as _secret
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.rabbitmq import (
    COOKIE_FILE,
    CTL_TIMEOUT,
    RabbitmqClusterStatus,
    RabbitmqErlangCookieDigest,
    RabbitmqNodeInitialised,
    RabbitmqPasswordMatches,
    RabbitmqPeerClusterStatus,
    RabbitmqPermissions,
    RabbitmqPolicies,
    RabbitmqUsers,
    RabbitmqVhosts,
)

GROUP = "rabbitmq"
CONF_DIR = "/etc/rabbitmq"
CONF_FILE = f"{CONF_DIR}/rabbitmq.conf"
ENV_FILE = f"{CONF_DIR}/rabbitmq-env.conf"
PLUGINS_FILE = f"{CONF_DIR}/enabled_plugins"
INETRC_FILE = f"{CONF_DIR}/erl_inetrc"
SECRETS_DIR = f"{CONF_DIR}/onlyoffice-ha"
PASSWORD_FILE = f"{SECRETS_DIR}/amqp-password"
DROP_IN = "/etc/systemd/system/rabbitmq-server.service.d/10-onlyoffice-ha.conf"
DATA_DIR = "/var/lib/rabbitmq"
HOSTS_OWNER = "rabbitmq"  # its /etc/hosts lines end "# onlyoffice-ha rabbitmq" (ooha/ops/hosts_file.py)
SERVICE = "rabbitmq-server.service"
POLICY = "ha-onlyoffice"

RABBITMQ_DEFAULTS: dict[str, Any] = {
    # Debian packages of this layer (3.10 in bookworm: DS < 9.0 needs RabbitMQ < 4.1).
    "rabbitmq_packages": ["rabbitmq-server"],
    # Document Server's user (the user's password is secret rabbitmq_password) and its shared
    # vhost (operators, drills).  Each DS node gets its own vhost too, with the same user's
    # permissions and the mirror policy: ooha/contract.py node_vhost(<docs host>).  The user
    # and the AMQP port are read by other layers (documentserver, endpoints): their defaults
    # are in ooha/contract.py.
    "rabbitmq_vhost": "onlyoffice",
    **contract_defaults("rabbitmq_user", "rabbitmq_amqp_port"),
    # pause_minority: the side of a cut with fewer than half the nodes stops serving.
    "rabbitmq_partition_handling": "pause_minority",
    # Mirror DS's classic queues on every node (policy ha-onlyoffice); see the module note.
    "rabbitmq_mirror_queues": True,
    # Plugins to enable. None by default: the deploy's checks use rabbitmqctl only, and in
    # RabbitMQ 3.10 the management agent crashes when pause_minority restarts the rabbit app
    # after a cut heals (case_clause in rabbit_net:dist_info while two distribution
    # connections exist), leaving the node up with the app stopped: seen in the AZ-cut
    # drill. ["rabbitmq_management"] adds the UI/API, bound to 127.0.0.1 only.
    "rabbitmq_plugins": [],
    # Management plugin port (127.0.0.1 only) when it is in rabbitmq_plugins.
    "rabbitmq_management_port": 15672,
    "rabbitmq_nofile": 65536,
    # Seconds the report waits for every member to be running after a (re)start.
    "rabbitmq_settle_seconds": 90,
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_COOKIE = re.compile(r"^[A-Za-z0-9_\-.+/=]{20,255}$")


def node_name(name: str) -> str:
    """The Erlang node name of an inventory host: stable, independent of the OS hostname."""
    return f"rabbit@{name}"


def cluster_peers() -> dict[str, str]:
    """{inventory name: private address} of every rabbitmq host, --limit notwithstanding."""
    return {
        target.name: peer_address(target)
        for target in inventory.get_group(GROUP)
    }


def seed_host() -> str:
    """The host every other node joins: the first of the group, in inventory order."""
    return inventory.get_group(GROUP)[0].name


_layer_value = Settings(RABBITMQ_DEFAULTS)
"""A data key with this layer's default (the report and preflight run outside the deploy)."""


def input_problems(target: Any, peers: dict[str, str] | None = None) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix.

    Host data and the inventory only (``peers``: cluster_peers() unless given), never facts:
    it runs in the preflight too, where the deploy's data_defaults do not apply.
    """
    peers = cluster_peers() if peers is None else peers
    problems = []
    for name, address in peers.items():
        if not _NAME.match(name):
            problems.append(f"{name}: inventory name: not usable as a RabbitMQ node name; fix: use lower-case letters, digits and '-'")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"{name}: private_address: {address!r} is not an IP address; fix: set private_address to the host's peer address")
    if not _secret(target, "rabbitmq_password"):
        problems.append("all: secrets.rabbitmq_password: missing; fix: set it in the secrets file")
    if not _COOKIE.match(_secret(target, "rabbitmq_erlang_cookie")):
        problems.append("all: secrets.rabbitmq_erlang_cookie: must be 20-255 characters from [A-Za-z0-9_-.+/=]; fix: set it in the secrets file")
    for key in ("rabbitmq_vhost", "rabbitmq_user"):
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", str(_layer_value(target, key) or "")):
            problems.append(f"all: {key}: {_layer_value(target, key)!r} is not a plain name; fix: use letters, digits, '_', '.', '-'")
    if _layer_value(target, "rabbitmq_partition_handling") not in ("pause_minority", "autoheal", "ignore"):
        problems.append("all: rabbitmq_partition_handling: unknown mode; fix: pause_minority (or autoheal, ignore)")
    return problems


def _refuse_cookie_change(wanted_cookie: str) -> None:
    """Stop before touching a node whose cookie differs: a new cookie splits a running cluster."""
    current = host.get_fact(RabbitmqErlangCookieDigest)
    wanted = hashlib.sha256(wanted_cookie.encode()).hexdigest()
    if current and current != wanted and host.get_fact(RabbitmqNodeInitialised):
        raise DeployError(
            f"{host.name}: secrets.rabbitmq_erlang_cookie: differs from the cookie of the existing node "
            f"({COOKIE_FILE}); a node with a new cookie can no longer talk to its peers, so the deploy will "
            "not change it; fix: put the old cookie back in the secrets file, or change it on purpose: stop "
            "rabbitmq-server on every node, write the new cookie to every node's cookie file, start them all"
        )


# --- peers at new addresses: the running VM's host table, updated live ---------------------

RESOLVER_TABLE = '[inet:ntoa(IP) ++ " " ++ N || {host, IP, Ns} <- inet_db:get_rc(), N <- Ns].'
"""Erlang for ``rabbitmqctl eval``: the VM's host table (the inetrc's entries as loaded at boot,
plus any added live) as ``["address name", ...]``."""


def parse_resolver_table(lines: list[str]) -> dict[str, str] | None:
    """``{name: address}`` from RESOLVER_TABLE's printed list; None when the node did not answer."""
    text = "".join(lines).strip()
    if not text.startswith("["):
        return None
    return {name: address for address, name in re.findall(r'"([0-9A-Fa-f.:]+) ([^"\s]+)"', text)}


class RabbitmqResolverTable(FactBase):
    """The running node's Erlang host table ``{name: address}``; None when the VM does not answer
    (not installed, stopped: it reads the inetrc when it starts)."""

    def command(self) -> str:
        return f"timeout {CTL_TIMEOUT} rabbitmqctl eval {shlex.quote(RESOLVER_TABLE)} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str] | None:
        return parse_resolver_table(output)


def resolver_changes(table: dict[str, str] | None, peers: dict[str, str]) -> dict[str, str]:
    """``{name: address}`` of the peers the running VM resolves otherwise than the inventory (a
    peer moved to a new address, or missing from its table); empty when it agrees or does not run."""
    if table is None:
        return {}
    return {name: address for name, address in sorted(peers.items()) if table.get(name) != address}


def resolver_update_script(peers: dict[str, str]) -> str:
    """Erlang for ``rabbitmqctl eval``: drop every host-table entry naming a peer, then add each
    peer at its inventory address (what the inetrc gives a VM that starts now)."""
    wanted = ", ".join(
        "{{" + ",".join(str(int(part)) for part in address.split(".")) + "}, [\"" + name + "\"]}"
        for name, address in sorted(peers.items()))
    return (f"W = [{wanted}], Names = [N || {{_, Ns}} <- W, N <- Ns], "
            "[inet_db:del_host(IP) || {host, IP, Ns} <- inet_db:get_rc(), "
            "lists:any(fun(N) -> lists:member(N, Names) end, Ns)], "
            "[inet_db:add_host(IP, Ns) || {IP, Ns} <- W], ok.")


@operation()
def peers_resolved_live(peers: dict[str, str]):
    """The running node resolves every peer at its inventory address, without a restart.

    A restart for a changed inetrc would take this node down while a replaced peer has not
    joined yet; the VM's host table is updated in place instead (only what differs).
    """
    changes = resolver_changes(host.get_fact(RabbitmqResolverTable), peers)
    if not changes:
        host.noop("the running node resolves its peers at their inventory addresses (or it is not running)")
        return
    yield StringCommand("rabbitmqctl", "eval", QuoteString(resolver_update_script(peers)))


# --- operations that read the cluster when they execute ---------------------------------


def join_plan(me: str, seed: str, peers: list[str], local: dict[str, Any] | None, local_vhosts: list[str],
              peer_status: dict[str, dict[str, Any] | None] | None) -> dict[str, Any]:
    """What ``cluster_joined`` does on node ``me``: ``{"action": "noop"|"join"|"refuse", ...}``.

    ``peers``: the other rabbitmq nodes of the inventory; ``local``: this node's cluster
    status; ``peer_status``: each peer's own status (asked only when this node is
    standalone: None means "not asked yet").

    * clustered with an inventory peer: noop (a normal rerun asks nothing else);
    * clustered with other nodes only: refused (resetting it would throw away a live cluster);
    * standalone (a new node, or one rebuilt blank): it joins a RUNNING surviving node, the
      one that still lists it first (inventory order), else one in a cluster, else the seed
      (a brand-new cluster; the seed itself stays).  When a surviving node still lists this
      node (its old identity, rebuilt blank) it is forgotten first through that node
      (``forget``), which is safe only because this node is standalone, holds nothing and
      its app is stopped before.  Refused when this standalone node holds vhosts (data) or
      when no surviving node is running.
    """
    if local is None:
        return {"action": "refuse", "message": f"{me} does not answer rabbitmqctl; fix: see `journalctl -u {SERVICE}`"}
    members = list(local.get("members") or [])
    if len(members) > 1:
        if any(peer in members for peer in peers):
            return {"action": "noop", "message": f"{me} is clustered ({len(members)} members)"}
        return {"action": "refuse", "message": (
            f"{me} is clustered with {', '.join(members)}, none of them in the inventory; fix: join it by hand "
            f"(`rabbitmqctl stop_app; rabbitmqctl reset; rabbitmqctl join_cluster {seed}; rabbitmqctl start_app`) "
            "once you know its queues can go")}
    if not peers:
        return {"action": "noop", "message": f"{me} is the only node of the group"}
    if peer_status is None:
        return {"action": "ask"}
    running = [n for n in peers if (peer_status.get(n) or {}) and n in peer_status[n]["running_nodes"]]
    listing_me = [n for n in running if me in peer_status[n]["members"]]
    clustered = [n for n in running if len(peer_status[n]["members"]) > 1]
    if any(me in (peer_status[n]["running_nodes"] or []) for n in running):
        return {"action": "refuse", "message": (
            f"{me} is standalone here but {', '.join(n for n in running if me in peer_status[n]['running_nodes'])} "
            f"still sees it running in the cluster; fix: check for a second host named like this one")}
    if listing_me or clustered:
        extra = sorted(set(local_vhosts) - {"/"})
        if extra:
            return {"action": "refuse", "message": (
                f"{me} is standalone but holds vhosts {', '.join(extra)}; joining the cluster would reset it; "
                "fix: export what it holds, then `rabbitmqctl stop_app; rabbitmqctl reset` on it and rerun")}
        target = (listing_me or clustered)[0]
        return {"action": "join", "target": target, "forget": bool(listing_me),
                "message": f"join {target}" + (f" after it forgets the old {me}" if listing_me else "")}
    listed_down = [n for n in peers if n not in running and me in ((peer_status.get(n) or {}).get("members") or [])]
    if me == seed:
        if any(peer_status.get(n) for n in peers) and not listed_down:
            return {"action": "noop", "message": f"{me} is the seed of a new cluster"}
    elif seed in running:
        return {"action": "join", "target": seed, "forget": False, "message": f"join the seed {seed}"}
    asked = ", ".join(f"{n}: {'running' if n in running else 'no answer' if not peer_status.get(n) else 'app stopped'}"
                      for n in peers)
    return {"action": "refuse", "message": (
        f"{me} is standalone (blank) and no surviving node of the cluster is running ({asked}); "
        f"fix: start rabbitmq-server on a surviving node (`systemctl start {SERVICE}`) and rerun")}


@operation()
def cluster_joined(seed: str, peers: list[str]):
    """This node is a member of the cluster; a standalone node (new, or rebuilt blank) joins it.

    Reads the cluster status at execute time and decides with ``join_plan``: a clustered
    node is left alone (a normal rerun asks only its own status); a standalone node joins a
    running surviving node, after that node forgot this node's old identity when it still
    lists it; refused (host, reason, fix) otherwise.
    """
    me = node_name(host.name)
    local = host.get_fact(RabbitmqClusterStatus)
    if local is None and not state.is_executing:
        # Planning a host that has no RabbitMQ yet (installed by an earlier operation of this
        # run): what to do is decided when the operation executes.
        yield "rabbitmqctl cluster_status  # decided at execute time"
        return
    plan = join_plan(me, seed, peers, local, [], None)
    if plan["action"] == "ask":
        plan = join_plan(me, seed, peers, local, host.get_fact(RabbitmqVhosts),
                         host.get_fact(RabbitmqPeerClusterStatus, nodes=peers))
    if plan["action"] == "refuse":
        raise OperationError(f"{host.name}: rabbitmq: {plan['message']}")
    if plan["action"] == "noop":
        host.noop(plan["message"])
        return
    target = plan["target"]
    yield "rabbitmqctl stop_app"
    if plan["forget"]:
        # Through the surviving node: the old identity goes (queues mirrored there are promoted).
        yield StringCommand("rabbitmqctl", "-n", QuoteString(target), "forget_cluster_node", QuoteString(me))
    yield "rabbitmqctl reset"
    yield StringCommand("rabbitmqctl", "join_cluster", QuoteString(target))
    yield start_app_command()


START_APP_TIMEOUT = 180
"""Seconds a joining node's ``start_app`` may take before its VM is restarted instead."""


def start_app_command(timeout: int = START_APP_TIMEOUT) -> str:
    """``start_app`` after a join, bounded; on timeout the node's VM restarts and boots as the member
    it just became.

    Why: a blank node rebuilt under its old name connects to the survivors at boot (they still
    list it), and after forget/reset/join its ``start_app`` has hung in Erlang 25's ``global``
    ("Faking nodedown/nodeup", the lost-AZ drill: 20 min, the main job with it); a fresh VM
    has no such connection state.  Without the bound the deploy would wait for ever.
    """
    return (f"timeout {int(timeout)} rabbitmqctl start_app || "
            f"{{ echo 'start_app did not finish in {int(timeout)} s: restarting {SERVICE}' >&2; "
            f"systemctl restart {SERVICE} && rabbitmqctl await_startup --timeout 300; }}")


@operation()
def vhost(vhost_name: str):
    """The virtual host exists (cluster-wide)."""
    if vhost_name in host.get_fact(RabbitmqVhosts):
        host.noop(f"vhost {vhost_name} exists")
        return
    yield StringCommand("rabbitmqctl", "add_vhost", QuoteString(vhost_name))


@operation()
def user(user_name: str, password_file: str):
    """The user exists and authenticates with the password in ``password_file`` (read from stdin)."""
    if user_name not in host.get_fact(RabbitmqUsers):
        yield StringCommand("rabbitmqctl", "add_user", QuoteString(user_name), "<", QuoteString(password_file))
    elif not host.get_fact(RabbitmqPasswordMatches, user=user_name, password_file=password_file):
        yield StringCommand("rabbitmqctl", "change_password", QuoteString(user_name), "<", QuoteString(password_file))
    else:
        host.noop(f"user {user_name} exists with the wanted password")


@operation()
def user_absent(user_name: str):
    """The user does not exist (``guest``: a well-known password)."""
    if user_name not in host.get_fact(RabbitmqUsers):
        host.noop(f"user {user_name} absent")
        return
    yield StringCommand("rabbitmqctl", "delete_user", QuoteString(user_name))


@operation()
def permissions(vhost_name: str, user_name: str, configure: str = ".*", write: str = ".*", read: str = ".*"):
    """The user's configure/write/read permissions on the vhost."""
    wanted = {"configure": configure, "write": write, "read": read}
    if host.get_fact(RabbitmqPermissions, vhost=vhost_name).get(user_name) == wanted:
        host.noop(f"{user_name} has its permissions on {vhost_name}")
        return
    yield StringCommand(
        "rabbitmqctl", "set_permissions", "-p", QuoteString(vhost_name), QuoteString(user_name),
        QuoteString(configure), QuoteString(write), QuoteString(read),
    )


@operation()
def policy(vhost_name: str, policy_name: str, pattern: str, definition: dict[str, Any], apply_to: str = "queues",
           priority: int = 0, present: bool = True):
    """A policy on the vhost, as given (or absent)."""
    current = host.get_fact(RabbitmqPolicies, vhost=vhost_name).get(policy_name)
    if not present:
        if current is None:
            host.noop(f"policy {policy_name} absent")
            return
        yield StringCommand("rabbitmqctl", "clear_policy", "-p", QuoteString(vhost_name), QuoteString(policy_name))
        return
    wanted = {"pattern": pattern, "apply-to": apply_to, "definition": definition, "priority": priority}
    if current == wanted:
        host.noop(f"policy {policy_name} on {vhost_name} as wanted")
        return
    yield StringCommand(
        "rabbitmqctl", "set_policy", "-p", QuoteString(vhost_name), "--apply-to", QuoteString(apply_to),
        "--priority", str(int(priority)), QuoteString(policy_name), QuoteString(pattern),
        QuoteString(json.dumps(definition, sort_keys=True)),
    )


MIRROR_DEFINITION: dict[str, Any] = {
    "ha-mode": "all",
    "ha-sync-mode": "automatic",
    # Availability over the last unsynchronised message: DS's tasks are transient.
    "ha-promote-on-shutdown": "always",
    "ha-promote-on-failure": "always",
}


# --- the deploy ---------------------------------------------------------------------------


def _node_files(data: Any, peers: dict[str, str]) -> list[Any]:
    """Identity and configuration, written before the package first starts the node."""
    server.group(name="rabbitmq group", group="rabbitmq", system=True)
    server.user(
        name="rabbitmq system user", user="rabbitmq", group="rabbitmq", system=True,
        home=DATA_DIR, shell="/usr/sbin/nologin",
    )
    files.directory(name="RabbitMQ data directory", path=DATA_DIR, user="rabbitmq", group="rabbitmq", mode="755")
    cookie = private_put(
        name="Erlang cookie",
        src=StringIO(_secret(host, "rabbitmq_erlang_cookie")),
        dest=COOKIE_FILE, user="rabbitmq", group="rabbitmq", mode="400",
    )
    files.directory(name="RabbitMQ configuration directory", path=CONF_DIR, mode="755")
    hosts_entries(name="Peers in /etc/hosts", entries=peers, owner=HOSTS_OWNER)
    env = files.put(
        name="RabbitMQ node name",
        src=StringIO(f"# Managed by onlyoffice-ha (ooha/layers/rabbitmq.py)\nNODENAME={node_name(host.name)}\n"),
        dest=ENV_FILE, mode="644",
    )
    files.template(
        name="Peers for the Erlang resolver", src=str(TEMPLATES / "rabbitmq/rabbitmq-erl-inetrc.j2"),
        dest=INETRC_FILE, mode="644", peers=peers, jinja_env_kwargs=dict(JINJA),
    )
    conf = files.template(
        name="RabbitMQ configuration", src=str(TEMPLATES / "rabbitmq/rabbitmq.conf.j2"), dest=CONF_FILE, mode="644",
        amqp_port=int(data.rabbitmq_amqp_port), management_port=int(data.rabbitmq_management_port),
        partition_handling=data.rabbitmq_partition_handling, plugins=list(data.rabbitmq_plugins or []),
        jinja_env_kwargs=dict(JINJA),
    )
    plugins = files.template(
        name="RabbitMQ plugins", src=str(TEMPLATES / "rabbitmq/rabbitmq-enabled-plugins.j2"), dest=PLUGINS_FILE,
        mode="644", plugins=list(data.rabbitmq_plugins or []), jinja_env_kwargs=dict(JINJA),
    )
    drop_in = files.template(
        name="RabbitMQ unit drop-in", src=str(TEMPLATES / "rabbitmq/rabbitmq-systemd.conf.j2"), dest=DROP_IN,
        mode="644", create_remote_dir=True, inetrc=INETRC_FILE, nofile=int(data.rabbitmq_nofile),
        jinja_env_kwargs=dict(JINJA),
    )
    systemd.daemon_reload(name="Reload systemd units (RabbitMQ drop-in)", _if=drop_in.did_change)
    # Not the inetrc: a running VM gets a peer's new address live (peers_resolved_live), never
    # by a restart while a replaced peer is still out of the cluster.
    return [cookie, env, conf, plugins, drop_in]


def _service(data: Any, changed: list[Any]) -> None:
    """Install (first start uses the files above), restart one node at a time on changes
    (the inetrc is not one: see peers_resolved_live)."""
    install = apt.packages(name="Install RabbitMQ", packages=list(data.rabbitmq_packages), no_recommends=True)
    systemd.service(
        name="Restart RabbitMQ (configuration changed)", service=SERVICE, restarted=True, _serial=True,
        _if=lambda: any(op.did_change() for op in changed) and not install.did_change(),
    )
    systemd.service(name="RabbitMQ running and enabled", service=SERVICE, running=True, enabled=True)


def _cluster_objects(data: Any) -> None:
    """Cluster-wide objects, made once from the seed after the nodes joined."""
    vhost_name, user_name = str(data.rabbitmq_vhost), str(data.rabbitmq_user)
    files.directory(name="RabbitMQ secrets directory", path=SECRETS_DIR, mode="700")
    private_put(
        name="Document Server's AMQP password (read by rabbitmqctl from stdin)",
        src=StringIO(_secret(host, "rabbitmq_password")), dest=PASSWORD_FILE, mode="600",
    )
    if host.name != seed_host():
        return
    user(name=f"RabbitMQ user {user_name}", user_name=user_name, password_file=PASSWORD_FILE)
    user_absent(name="No RabbitMQ guest user", user_name="guest")
    for name in ds_vhosts(vhost_name):
        vhost(name=f"RabbitMQ vhost {name}", vhost_name=name)
        permissions(name=f"RabbitMQ permissions of {user_name} on {name}", vhost_name=name, user_name=user_name)
        policy(
            name=f"RabbitMQ policy {POLICY} on {name} (mirrored classic queues)", vhost_name=name, policy_name=POLICY,
            pattern="^(?!amq\\.).*", definition=MIRROR_DEFINITION, apply_to="queues",
            present=bool(data.rabbitmq_mirror_queues),
        )


def ds_vhosts(shared: str) -> list[str]:
    """The shared vhost, then one per DS node (ooha/contract.py), from the whole docs group.

    A node's own vhost is what confines its SIGTERM ``PUT /internal/cluster/inactive``
    broadcast (the ``ds.pubsub`` fanout lives in a vhost) to that node.
    """
    return list(dict.fromkeys([shared] + [node_vhost(name) for name in docs_hosts(inventory)]))


# --- validation -----------------------------------------------------------------------------


def check_cluster(target: Any) -> CheckResult:
    """Every rabbitmq host's node is a running member, no partition, no alarm (this node's view)."""
    status = target.get_fact(RabbitmqClusterStatus)
    if status is None:
        return CheckResult(
            False, f"{node_name(target.name)} does not answer rabbitmqctl (stopped, or paused as a minority)",
            f"see `journalctl -u {SERVICE}`; rerun the deploy",
        )
    wanted = [node_name(t.name) for t in inventory.get_group(GROUP)]
    problems = []
    missing = [n for n in wanted if n not in status["members"]]
    if missing:
        problems.append(f"not clustered: {', '.join(missing)}")
    down = [n for n in status["members"] if n not in status["running_nodes"]]
    if down:
        problems.append(f"not running: {', '.join(down)}")
    if status["partitions"]:
        parts = "; ".join(f"{n} cannot see {', '.join(p)}" for n, p in status["partitions"].items())
        problems.append(f"partitioned: {parts}")
    if status["alarms"]:
        problems.append(f"alarms: {', '.join(status['alarms'])}")
    running = len([n for n in wanted if n in status["running_nodes"]])
    if problems:
        return CheckResult(
            False, f"{running}/{len(wanted)} nodes running; " + "; ".join(problems),
            "start the stopped nodes / heal the network; a partition left after healing needs "
            "`rabbitmqctl stop_app && rabbitmqctl start_app` on the minority side; rerun the deploy",
        )
    return CheckResult(True, f"{running}/{len(wanted)} nodes running, no partitions, no alarms")


def check_rabbitmq(target: Any) -> CheckResult:
    """The layer's report line, waiting a bounded time for nodes that are still starting."""
    return poll(check_cluster, target, float(_layer_value(target, "rabbitmq_settle_seconds")), interval=2.0)


@deploy("RabbitMQ", data_defaults=RABBITMQ_DEFAULTS)
def rabbitmq() -> None:
    """Converge one rabbitmq host; data keys are documented in RABBITMQ_DEFAULTS."""
    data = host.data
    peers = cluster_peers()
    problems = input_problems(host, peers)
    if problems:
        raise DeployError("RabbitMQ layer inputs:\n" + "\n".join(problems))
    _refuse_cookie_change(_secret(host, "rabbitmq_erlang_cookie"))
    changed = _node_files(data, peers)
    _service(data, changed)
    peers_resolved_live(name="Running RabbitMQ resolves its peers at their inventory addresses (live, no restart)",
                        peers=peers)
    cluster_joined(name=f"RabbitMQ node joined the cluster of {node_name(seed_host())}",
                   seed=node_name(seed_host()), peers=[node_name(n) for n in peers if n != host.name], _serial=True)
    _cluster_objects(data)
