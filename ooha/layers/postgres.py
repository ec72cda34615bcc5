"""PostgreSQL layer: PostgreSQL 15 managed by Patroni on the postgres hosts, one member per AZ.

Debian packages (``postgresql-15``, ``patroni``) under systemd; Debian's own cluster
(``postgresql@15-main``) is never created (``create_main_cluster = false``) or, if it
exists, disabled, so Patroni alone runs PostgreSQL.  Patroni keeps its leader key in
etcd, over TLS with this host's certificate from ooha/pki.py, through etcd's v2 API:
Debian 12's Patroni 3.0.2 etcd3 client renews the leader key with an unconditional put
when its cached view is stale (``Etcd3._update_leader``), and in the AZ-cut drill the
cut-off old leader took the key back from the new leader after heal, forking timeline N
on both sides.  Its v2 client renews with ``prevValue=<this member>`` (compare-and-swap),
so a stale member fails and demotes.  Move to etcd3 with a Patroni that compares there.

Failover timing (``patroni_dcs``): ttl 12 s, loop_wait 2 s, retry_timeout 5 s, within
Patroni's rule loop_wait + 2 * retry_timeout <= ttl.  A host that shuts down cleanly
releases the leader key and a replica takes over within a loop or two; a host that
vanishes (AZ cut, power loss) is replaced once its key expires: at most ttl + loop_wait
(about 14 s), against about 40 s with Patroni's defaults (30/10/10).  Patroni releases
after 3.0 refuse ttl < 20: there set ttl 20, loop_wait 2, retry_timeout 9.

Synchronous mode (default on): a commit is acknowledged only once a standby has it, and
Patroni promotes only that standby, so a leader loss loses no acknowledged row.

Reruns: the config file is rewritten only when something changed, and Patroni is then
*reloaded* (never restarted: a restart of the leader's Patroni would fail over).  A host
added to the postgres group starts Patroni with an empty data dir and joins as a replica
by base backup; the leader only gets a reload for the new pg_hba line.

A blank member (issue 10: the host came back without its data dir, same name, or with a new
address from the edited inventory) is the same case: Patroni finds the cluster in etcd and
re-clones itself from the leader with ``pg_basebackup`` (its default
``create_replica_methods``), and the run waits until it runs and streams (``member_running``,
bounded by ``patroni_clone_deadline``).  Chosen over pgBackRest's ``create_replica_methods``
(restore from S3, then WAL from the archive): that is faster only for large databases (parallel,
compressed, and it spares the leader's disk and network), while it adds a dependency on S3 and
a replay gap for a small one; the lab's database is a few MB, so basebackup.  Nothing else is
needed: the member slot of the same name on the leader is Patroni's (it keeps a slot per member
key and drops slots of members that left the DCS), the leader reloads pg_hba with the
inventory's address before the new member starts, Patroni re-picks a synchronous standby, and
the certificates and config are pushed because the files are absent.

The Document Server role and its databases (``onlyoffice`` and one per DS node,
ooha/contract.py) are made on the leader at execute time, from the
facts read then, by ``ds_database`` (the role's password is sent as a SCRAM verifier
computed here, never as text).  The rollout engine's database ``ooha_ops`` (lock, journals,
release ledger: ooha/facts/ooha_ops.py, templates/postgres/ooha_ops.sql) is made there too,
by ``ops_database``, owned by the superuser (only the driver's ``psql`` as postgres uses it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

from pyinfra import host, inventory, state
from pyinfra.api import HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.api.state import StateStage
from pyinfra.facts.files import Directory
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from ooha.contract import (CONTRACT_DEFAULTS, contract_defaults, debian_cluster_dir, docs_hosts, node_compat_database,
                           node_database,
                           postgres_bin_dir, postgres_packages)
from ooha.layers.etcd import client_endpoints
from ooha.pki import push_host_cert
from ooha.ops.private_files import private_template
from ooha.report import CheckResult, poll
from ooha.settings import Settings, secret
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.patroni import PatroniCluster, PatroniDynamicConfig, PostgresDsObjects
from ooha.facts.ooha_ops import OPS_DATABASE, OohaOpsSchema, schema_missing, schema_sql

PATRONI_CONFIG = "/etc/patroni/config.yml"
PATRONI_PKI = "/etc/patroni/pki"
CREATECLUSTER_CONF = "/etc/postgresql-common/createcluster.conf"

POSTGRES_DEFAULTS: dict[str, Any] = {
    # Version, ports, data dir and DS role: this layer owns them, other layers read them; the
    # defaults are in ooha/contract.py.  patroni_rest_port: Patroni's REST API (health checks
    # by HAProxy on the DS hosts, /cluster for facts).  NB: the packages and data dir are
    # derived from the DEFAULT version; an inventory that sets postgres_version sets them too.
    **contract_defaults("postgres_version", "postgres_port", "patroni_rest_port", "postgres_data_dir",
                        "postgres_ds_role"),
    "postgres_packages": postgres_packages(CONTRACT_DEFAULTS["postgres_version"]),
    # Patroni's cluster name (the etcd key prefix /service/<scope>).
    "patroni_scope": "onlyoffice",
    # Wait for Patroni to elect a leader after a (re)start before making role/database.
    "patroni_leader_deadline": 180,
    # Seconds a member without data (a new or rebuilt host) may take to clone itself from the
    # leader (pg_basebackup) and stream: the run waits for it (size it to the database).
    "patroni_clone_deadline": 3600,
    # Document Server's role (password: secret postgres_ds_password) and its own database
    # (for operators, drills and benchmarks).  Each DS node gets another database, owned by
    # the same role: ooha/contract.py node_database(<docs host>), e.g. onlyoffice_ds1.
    # The role's name, postgres_ds_role, is a contract key (above).
    "postgres_ds_database": "onlyoffice",
    # Commits wait for a standby; Patroni promotes only that standby (no lost commits).
    "synchronous_mode": True,
    # The report fails a replica further behind than this many bytes of WAL.
    "postgres_max_lag_bytes": 16 * 1024 * 1024,
    # Patroni's dynamic configuration, kept in etcd (see the module docstring).
    "patroni_dcs": {
        "ttl": 12,
        "loop_wait": 2,
        "retry_timeout": 5,
        # A replica further behind than this is never promoted.
        "maximum_lag_on_failover": 1048576,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": {
                "wal_level": "replica",
                "hot_standby": "on",
                "wal_log_hints": "on",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "wal_keep_size": "256MB",
                "password_encryption": "scram-sha-256",
                # A shutting-down primary waits for its walsenders to hand the last WAL to
                # connected standbys; a standby behind an AZ cut never answers, so with the
                # default 60 s a demotion outlasted the cut and the old leader re-took the
                # lock after heal.  5 s keeps the demotion well inside ttl.
                "wal_sender_timeout": "5s",
                "wal_receiver_timeout": "5s",
            },
        },
    },
}


_value = Settings(POSTGRES_DEFAULTS)
"""A data key with this layer's default (the report runs outside the postgres deploy)."""

SECRETS = ("patroni_rest_password", "postgres_superuser_password", "postgres_replication_password", "postgres_ds_password")
"""Secrets this layer needs."""


def wanted_dcs(target: Any) -> dict[str, Any]:
    """The dynamic configuration this deploy wants in the DCS (``patroni_dcs`` + sync mode)."""
    dcs = dict(_value(target, "patroni_dcs"))
    dcs["synchronous_mode"] = bool(_value(target, "synchronous_mode"))
    return dcs


def validate_timing(dcs: dict[str, Any]) -> str | None:
    """Patroni's rule loop_wait + 2 * retry_timeout <= ttl, or the problem as text."""
    ttl, loop, retry = int(dcs["ttl"]), int(dcs["loop_wait"]), int(dcs["retry_timeout"])
    if loop + 2 * retry > ttl:
        return f"loop_wait {loop} + 2 * retry_timeout {retry} > ttl {ttl}"
    return None


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix (host data only, no facts)."""
    problems = []
    try:
        problem = validate_timing(wanted_dcs(target))
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"ttl, loop_wait and retry_timeout must be integers ({exc!r})"
    if problem:
        problems.append(f"{target.name}: patroni_dcs: {problem}; fix: lower loop_wait/retry_timeout or raise ttl")
    for key in SECRETS:
        if not secret(target, key):
            problems.append(f"all: secrets.{key}: missing; fix: set it in the secrets file")
    return problems


def dcs_differences(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The part of ``wanted`` that ``current`` (GET /config) lacks, as a PATCH body."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, dict):
            sub = dcs_differences(have if isinstance(have, dict) else {}, value)
            if sub:
                patch[key] = sub
        elif str(have).lower() != str(value).lower():
            patch[key] = value
    return patch


# --- SCRAM verifiers: the DS password never leaves the controller as text -------------


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier for ``password`` (as in pg_authid.rolpassword)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def verifier_matches(verifier: str | None, password: str) -> bool:
    """True if the stored ``verifier`` was made from ``password``."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        head, keys = verifier[len("SCRAM-SHA-256$"):].split("$", 1)
        iterations, salt = head.split(":", 1)
        return hmac.compare_digest(scram_verifier(password, base64.b64decode(salt), int(iterations)), verifier)
    except (ValueError, TypeError):
        return False


# --- execute-time operations ------------------------------------------------------------


def _executing() -> bool:
    return state.current_stage == StateStage.Execute


def _wait_for_cluster(deadline_seconds: float) -> dict[str, Any] | None:
    """The Patroni cluster once it has a leader that is running, or the last view at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        view = host.get_fact(PatroniCluster, address="127.0.0.1", port=int(_value(host, "patroni_rest_port")))
        leader = next((m for m in (view or {}).get("members", []) if m["name"] == (view or {}).get("leader")), None)
        if leader and leader["state"] == "running" and leader["self_role"] in ("master", "primary"):
            return view
        if time.monotonic() >= deadline:
            return view
        time.sleep(1)


LOCAL_PSQL = ["runuser", "-u", "postgres", "--", "psql", "-h", "/var/run/postgresql", "-XAtq", "-v", "ON_ERROR_STOP=1"]
"""psql as the superuser over the local socket (the leader-only operations below)."""


def _this_host_leads(deadline: float) -> bool:
    """Wait for the cluster to have a leader (else fail); True when it is this host, else a
    no-op saying who leads: database objects are made on the leader only, at execute time."""
    view = _wait_for_cluster(deadline)
    if not view or not view.get("leader"):
        raise_no_leader(deadline)
    if view["leader"] != host.name:
        host.noop(f"not the leader ({view['leader']} is)")
        return False
    return True


@operation(is_idempotent=True)
def dynamic_config(wanted: dict[str, Any], rest_password: str, deadline: float = 180):
    """PATCH Patroni's dynamic configuration where it differs from ``wanted`` (execute time)."""
    if not _executing():
        return
    view = _wait_for_cluster(deadline)
    if not view or not view.get("leader"):
        raise_no_leader(deadline)
    port = int(_value(host, "patroni_rest_port"))
    current = host.get_fact(PatroniDynamicConfig, address="127.0.0.1", port=port) or {}
    patch = dcs_differences(current, wanted)
    if not patch:
        host.noop("Patroni dynamic configuration is as wanted")
        return
    yield StringCommand(
        "curl", "-K", "-", "-sSf", "--max-time", "10", "-X", "PATCH",
        "-H", "'Content-Type: application/json'",
        "--data", QuoteString(json.dumps(patch, sort_keys=True)),
        f"http://127.0.0.1:{port}/config", ">/dev/null",
        _stdin=curl_user_config("patroni", rest_password),
    )


def member_ready(view: dict[str, Any] | None, name: str) -> tuple[bool, str]:
    """(ready, what is seen) for member ``name``: it is the running leader, or a running replica
    that the leader lists as streaming (pure, unit-tested)."""
    if not view:
        return False, "Patroni REST API not answering"
    member = next((m for m in view["members"] if m["name"] == name), None)
    if member is None:
        return False, f"{name} not in the cluster yet (leader {view.get('leader') or 'none'})"
    if member["state"] != "running":
        return False, f"{name} is {member['state'] or 'unknown'}"
    if view.get("leader") == name or member["streaming"]:
        return True, f"{name} running ({'leader' if view.get('leader') == name else 'streaming'})"
    return False, f"{name} running but not streaming from {view.get('leader') or 'no leader'}"


@operation(is_idempotent=True)
def member_running(deadline: float = 3600):
    """Wait (execute time, no command) until this member runs: the leader, or a replica
    streaming from it.  Instant on a converged member; on a new or blank one it covers the
    clone from the leader, so later layers (the backup layer's archive_mode check) and the
    report see a running PostgreSQL."""
    if not _executing():
        return
    port = int(_value(host, "patroni_rest_port"))
    end = time.monotonic() + deadline
    while True:
        ready, seen = member_ready(host.get_fact(PatroniCluster, address="127.0.0.1", port=port), host.name)
        if ready:
            host.noop(seen)
            return
        if time.monotonic() >= end:
            from pyinfra.api.exceptions import OperationError

            raise OperationError(f"{host.name}: Patroni member not running after {deadline:.0f} s ({seen}); "
                                 "see `journalctl -u patroni` and `patronictl -c /etc/patroni/config.yml list`")
        time.sleep(2)
    yield  # a generator: pyinfra's operations are


def curl_user_config(user: str, password: str) -> str:
    """The credentials as a curl config line, for ``curl -K -`` on stdin: never in argv,
    where ``ps`` shows them to every local user while curl waits."""
    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"')

    return f'user = "{quoted(user)}:{quoted(password)}"\n'


def raise_no_leader(deadline: float) -> None:
    from pyinfra.api.exceptions import OperationError

    raise OperationError(
        f"{host.name}: Patroni has no running leader after {deadline:.0f} s; "
        "see `journalctl -u patroni` and `patronictl -c /etc/patroni/config.yml list`"
    )


@operation(is_idempotent=True)
def ds_database(role: str, database: str, password: str, deadline: float = 180):
    """The Document Server role (login, password) and database (owned by it), on the leader only.

    Runs at execute time: waits for a leader, then acts only if this host is it, reading
    the role and database from PostgreSQL then.  The password goes as a SCRAM verifier.
    """
    if not _executing() or not _this_host_leads(deadline):
        return
    objects = host.get_fact(PostgresDsObjects, role=role, database=database)
    if objects is None or objects["in_recovery"]:
        raise_no_leader(deadline)
    ident = '"' + role.replace('"', '""') + '"'
    db_ident = '"' + database.replace('"', '""') + '"'
    if not objects["role_exists"]:
        sql = f"CREATE ROLE {ident} LOGIN PASSWORD '{scram_verifier(password)}'"
        yield StringCommand(*LOCAL_PSQL, "-c", QuoteString(HiddenValue(sql)))
    elif not objects["can_login"] or not verifier_matches(objects["verifier"], password):
        sql = f"ALTER ROLE {ident} LOGIN PASSWORD '{scram_verifier(password)}'"
        yield StringCommand(*LOCAL_PSQL, "-c", QuoteString(HiddenValue(sql)))
    if not objects["db_exists"]:
        yield StringCommand(*LOCAL_PSQL, "-c", QuoteString(f"CREATE DATABASE {db_ident} OWNER {ident} ENCODING 'UTF8'"))
    elif objects["db_owner"] != role:
        yield StringCommand(*LOCAL_PSQL, "-c", QuoteString(f"ALTER DATABASE {db_ident} OWNER TO {ident}"))
    if objects["role_exists"] and objects["db_exists"] and objects["db_owner"] == role and objects["can_login"] \
            and verifier_matches(objects["verifier"], password):
        host.noop(f"role {role} and database {database} are as wanted")


@operation(is_idempotent=True)
def ops_database(deadline: float = 180):
    """Database ``ooha_ops`` and its schema (the rollout lock, journals, release ledger), on the
    leader only, at execute time like ``ds_database``.

    Created by and owned by the postgres superuser; the schema file runs in one transaction
    (``psql -1``, on stdin) only when the database, a table or the schema version is missing,
    so a rerun changes nothing.  Why here: the ledger lives in the cluster and its backups,
    and the driver must find it ready before it takes the lock (Store.ready).
    """
    if not _executing() or not _this_host_leads(deadline):
        return
    objects = host.get_fact(OohaOpsSchema, database=OPS_DATABASE)
    if objects is None or objects["in_recovery"]:
        raise_no_leader(deadline)
    missing = schema_missing(objects)
    if not missing:
        host.noop(f"database {OPS_DATABASE} and its tables are as wanted")
        return
    if not objects["db_exists"]:
        yield StringCommand(*LOCAL_PSQL, "-c", QuoteString(f'CREATE DATABASE "{OPS_DATABASE}" ENCODING \'UTF8\''))
    yield StringCommand(*LOCAL_PSQL, "-1", "-d", OPS_DATABASE, "-f", "-", _stdin=schema_sql())


# --- the layer --------------------------------------------------------------------------


def _members() -> list[dict[str, str]]:
    return [{"name": m.name, "address": m.data.private_address} for m in inventory.get_group("postgres")]


def _clients(shared: str) -> list[dict[str, Any]]:
    """DS hosts and the databases each may reach: the shared one, ITS OWN node database only, and
    its compat gate's scratch database (ooha/rollout/live/compat.py; absent between rollouts)."""
    return [{"name": m.name, "address": m.data.private_address,
             "databases": [shared, node_database(m.name), node_compat_database(m.name)]}
            for m in inventory.get_group("docs")]


def ds_databases(shared: str) -> list[str]:
    """Every database the DS role owns: ``shared`` then one per DS node (per-node shards).

    Each node's own database is what confines a version change's removetbl.sql to that
    node; the list comes from the whole docs group (--limit notwithstanding).
    """
    names = [shared] + [node_database(name) for name in docs_hosts(inventory)]
    return list(dict.fromkeys(names))


def _no_debian_cluster(data: Any) -> None:
    """Debian's postgresql-common makes and starts 15/main on install: not here."""
    files.put(
        name="No Debian default PostgreSQL cluster",
        src=_text("# Managed by onlyoffice-ha (ooha/layers/postgres.py): Patroni alone runs PostgreSQL.\n"
                  "create_main_cluster = false\n"),
        dest=CREATECLUSTER_CONF,
        mode="644",
        create_remote_dir=True,
    )
    apt.packages(name="Install PostgreSQL and Patroni", packages=list(data.postgres_packages), no_recommends=True)
    version = int(data.postgres_version)
    main = debian_cluster_dir(version)
    if host.get_fact(Directory, path=main):
        # Made before this layer ran: keep its files, but never start it again.
        files.put(name="Disable Debian's default cluster", src=_text("disabled\n"), dest=f"{main}/start.conf", mode="644")
        systemd.service(name="Stop Debian's default cluster", service=f"postgresql@{version}-main.service",
                        running=False, enabled=False)


def _text(content: str):
    from io import StringIO

    return StringIO(content)


@deploy("postgres", data_defaults=POSTGRES_DEFAULTS)
def postgres() -> None:
    """Converge this host's Patroni member; data keys are documented in POSTGRES_DEFAULTS."""
    data = host.data
    secrets = data.secrets
    problems = input_problems(host)
    if problems:
        from pyinfra.api.exceptions import DeployError

        raise DeployError("postgres layer inputs:\n" + "\n".join(problems))
    dcs = wanted_dcs(host)

    _no_debian_cluster(data)

    pki_dir, *certs = push_host_cert("Patroni", PATRONI_PKI, "postgres")
    config = private_template(
        name="Configure Patroni",
        src=str(TEMPLATES / "postgres/patroni.yml.j2"),
        dest=PATRONI_CONFIG,
        user="postgres",
        group="postgres",
        mode="600",
        scope=data.patroni_scope,
        member_name=host.name,
        address=data.private_address,
        rest_port=int(data.patroni_rest_port),
        rest_password=secrets["patroni_rest_password"],
        etcd_hosts=client_endpoints(),
        pki=PATRONI_PKI,
        dcs=dcs,
        pg_port=int(data.postgres_port),
        data_dir=data.postgres_data_dir,
        bin_dir=postgres_bin_dir(int(data.postgres_version)),
        superuser_password=secrets["postgres_superuser_password"],
        replication_password=secrets["postgres_replication_password"],
        members=_members(),
        clients=_clients(data.postgres_ds_database),
        ds_role=data.postgres_ds_role,
        jinja_env_kwargs=dict(JINJA),
    )
    was_running = bool(host.get_fact(SystemdStatus).get("patroni.service"))
    # Reload, never restart: stopping the leader's Patroni stops PostgreSQL (a failover).
    systemd.service(name="Reload Patroni (configuration changed)", service="patroni.service", reloaded=True,
                    _if=lambda: was_running and any_changed(config, pki_dir, *certs)())
    systemd.service(name="Patroni running and enabled", service="patroni.service", running=True, enabled=True)
    deadline = float(data.patroni_leader_deadline)
    dynamic_config(name="Patroni dynamic configuration (ttl, sync mode...)", wanted=dcs,
                   rest_password=secrets["patroni_rest_password"], deadline=deadline, _serial=True)
    for database in ds_databases(data.postgres_ds_database):
        ds_database(name=f"Document Server role and database {database}", role=data.postgres_ds_role,
                    database=database, password=secrets["postgres_ds_password"], deadline=deadline)
    ops_database(name=f"Rollout database {OPS_DATABASE} (lock, journals, release ledger)", deadline=deadline)
    member_running(name="This member running (leader, or replica streaming: a blank member's clone)",
                   deadline=float(data.patroni_clone_deadline))


# --- validation -----------------------------------------------------------------------


def _bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return f"{value}"


def judge_cluster(view: dict[str, Any] | None, expected: list[str], max_lag: int, synchronous: bool) -> CheckResult:
    """The postgres check's verdict on one PatroniCluster view (pure, unit-tested)."""
    if view is None:
        return CheckResult(False, "Patroni REST API not answering", "see `systemctl status patroni`; rerun the deploy", final=True)
    members = {m["name"]: m for m in view["members"]}
    problems = []
    leader = view.get("leader")
    if not leader:
        problems.append("no leader")
    if len(view["primaries"]) > 1:
        problems.append(f"more than one leader: {', '.join(view['primaries'])}")
    missing = [name for name in expected if name not in members]
    if missing:
        problems.append(f"member(s) missing: {', '.join(missing)}")
    replicas = [m for m in view["members"] if m["name"] != leader]
    not_streaming = [m["name"] for m in replicas if not m["streaming"]]
    if leader and not_streaming:
        problems.append(f"not streaming: {', '.join(not_streaming)}")
    lagging = [f"{m['name']} ({_bytes(m['lag'])})" for m in replicas if m["lag"] is None or m["lag"] > max_lag]
    if lagging:
        problems.append(f"lag above {_bytes(max_lag)}: {', '.join(lagging)}")
    if synchronous and leader and not view["sync_standbys"]:
        problems.append("synchronous mode on but no sync standby")
    if problems:
        return CheckResult(False, "; ".join(problems), "see `patronictl -c /etc/patroni/config.yml list` on a postgres host")
    timelines = sorted({m["timeline"] for m in view["members"] if m["timeline"] is not None})
    max_seen = max((m["lag"] or 0 for m in replicas), default=0)
    sync = f", sync {', '.join(view['sync_standbys'])}" if synchronous else ", async"
    return CheckResult(
        True,
        f"leader {leader}, {len(replicas)} replicas streaming, lag {_bytes(max_seen)}, "
        f"timeline {'/'.join(str(t) for t in timelines)}{sync}",
    )


def check_postgres_once(target: Any) -> CheckResult:
    view = target.get_fact(PatroniCluster, address="127.0.0.1", port=int(_value(target, "patroni_rest_port")))
    expected = [m.name for m in inventory.get_group("postgres")]
    return judge_cluster(view, expected, int(_value(target, "postgres_max_lag_bytes")),
                         bool(_value(target, "synchronous_mode")))


def check_postgres(target: Any) -> CheckResult:
    """check_postgres_once, waiting for replicas that are still catching up after a start."""
    return poll(check_postgres_once, target, float(_value(target, "patroni_leader_deadline")), interval=2.0)
