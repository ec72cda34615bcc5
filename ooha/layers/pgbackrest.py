"""Backup layer: pgBackRest backups of the Patroni cluster into an S3 repository.

Every PostgreSQL member gets the same pgBackRest configuration (S3 endpoint, bucket,
region, keys, CA file, path- or host-style addressing, AES-256 repository encryption
with the secret ``pgbackrest_cipher_pass``), so whichever member leads can archive WAL
and take backups, also after a failover, with nothing to move.

WAL archiving is set in Patroni's *dynamic* configuration (kept in etcd, applied by every
member): ``archive_mode=on``, ``archive_command=pgbackrest ... archive-push %p``,
``archive_timeout`` (bounds the RPO of a total loss: a WAL segment with committed rows
is switched and archived at the latest after this many seconds), and
``recovery_conf.restore_command`` (a replica that fell behind ``wal_keep_size`` fetches
WAL from the repository).  Only a primary archives, so after a failover the new leader
archives from where the old one stopped.  ``archive_mode`` needs a PostgreSQL restart:
the first run (and the first run after a restore) restarts each member through its
Patroni REST API (``POST /restart``; the leader stays leader, writes pause for a few
seconds); later runs change nothing.

Backups: ``pgbackrest-backup@full`` / ``@diff`` services with timers on every member; the
service's script asks the local Patroni ``GET /primary`` and exits 0 doing nothing on a
replica, so exactly one member (the leader) backs up whatever the failovers did.  The
first run creates the stanza and takes a first full backup when the repository has
none, so the report is meaningful at once.  ``deploys/backup.py`` runs the same script on
demand; ``deploys/restore.py`` rebuilds the cluster from the repository.

The repository is a backup format of pgBackRest's own (never hand-rolled): its
retention (``repo1-retention-full``/``-diff``) expires old backups and their WAL.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host, state
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy, operation
from pyinfra.api.state import StateStage
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from ooha.layers.postgres import POSTGRES_DEFAULTS, curl_user_config, dynamic_config
from ooha.ops.hosts_file import entry_line, hosts_entries
from ooha.ops.private_files import private_template
from ooha.report import CheckResult, poll
from ooha.settings import Settings
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.patroni import PatroniCluster
from ooha.facts.pgbackrest import STATUS_MISSING_STANZA, STATUS_NO_BACKUP, STATUS_OK, PgArchiver, PgBackRestInfo

PGBACKREST_CONF = "/etc/pgbackrest/pgbackrest.conf"
CA_FILE = "/etc/pgbackrest/s3-ca.crt"
BACKUP_SCRIPT = "/usr/local/sbin/ooha-pgbackrest-backup"
UNIT_DIR = "/etc/systemd/system"
HOSTS_OWNER = "pgbackrest"  # its /etc/hosts line ends "# onlyoffice-ha pgbackrest" (ooha/ops/hosts_file.py)
SECRETS = ("s3_access_key", "s3_secret_key", "pgbackrest_cipher_pass")
"""Secrets this layer needs (checked only when the layer runs)."""

BACKUP_DEFAULTS: dict[str, Any] = {
    "pgbackrest_packages": ["pgbackrest"],
    # pgBackRest's name for this cluster in the repository.
    "pgbackrest_stanza": "onlyoffice",
    # The S3 repository: endpoint URL (https://host[:port]), bucket, region, addressing
    # ("path" for S3-compatible stores such as MinIO/moto, "host" for AWS), key prefix.
    "pgbackrest_s3_endpoint": None,
    "pgbackrest_s3_bucket": None,
    "pgbackrest_s3_region": None,
    "pgbackrest_s3_uri_style": "path",
    # Connect to this address instead of the endpoint's host name (which still goes in
    # the Host header and is what the TLS certificate must name): for hosts that cannot
    # resolve the name.  pgBackRest 2.45 checks only DNS names of a certificate, not IP
    # addresses, so an endpoint given as an IP address fails TLS verification.
    "pgbackrest_s3_connect_address": None,
    "pgbackrest_repo_path": "/onlyoffice-ha",
    # CA bundle (a path on the machine running pyinfra) that signed the S3 endpoint's
    # certificate; pushed to the hosts.  None: the hosts' system CAs.
    "pgbackrest_s3_ca_cert": None,
    # Retention: keep this many full backups, and differentials for this many fulls
    # (pgBackRest expires older backups and the WAL only they need).
    "pgbackrest_retention_full": 2,
    "pgbackrest_retention_diff": 6,
    # systemd OnCalendar= schedules (run on every member; only the leader backs up).
    "pgbackrest_full_calendar": "Sun *-*-* 01:00:00",
    "pgbackrest_diff_calendar": "Mon..Sat *-*-* 01:00:00",
    "pgbackrest_process_max": 2,
    # lz4: cheap on CPU both ways, so restores are bounded by the network, not the cores.
    "pgbackrest_compress_type": "lz4",
    "pgbackrest_io_timeout": 30,
    # Seconds after which PostgreSQL switches a WAL segment that holds changes, so it is
    # archived: the bound on what a total loss can lose (RPO).
    "pgbackrest_archive_timeout": 30,
    # Take a full backup at deploy time when the repository has none.
    "pgbackrest_initial_backup": True,
    # The report fails when the newest backup is older than this (seconds; daily
    # differentials + slack), or a WAL file has waited for archiving longer than this.
    "pgbackrest_max_backup_age": 26 * 3600,
    "pgbackrest_max_archive_lag": 120,
    # How long a member may take to come back after the archive_mode restart.
    "pgbackrest_restart_deadline": 120,
}


setting = Settings(BACKUP_DEFAULTS, POSTGRES_DEFAULTS)
"""A data key with this layer's default, else the postgres layer's (which takes the contract's
ports and data dir): the report and restore.py run outside this layer's deploy."""


def endpoint_parts(url: str) -> tuple[str, int]:
    """(host, port) of an https S3 endpoint URL; ValueError when it is not one."""
    parts = urlsplit(str(url))
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{url!r} is not an https://host[:port] URL")
    return parts.hostname, parts.port or 443


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each naming host, field and fix."""
    problems = []
    name = target.name
    endpoint = setting(target, "pgbackrest_s3_endpoint")
    if not endpoint:
        problems.append(f"{name}: pgbackrest_s3_endpoint: missing; fix: set it to the S3 URL, e.g. https://s3.eu-west-1.amazonaws.com")
    else:
        try:
            endpoint_parts(endpoint)
        except ValueError as exc:
            problems.append(f"{name}: pgbackrest_s3_endpoint: {exc}; fix: use https://host[:port] (no path)")
    for key, example in (("pgbackrest_s3_bucket", "my-backups"), ("pgbackrest_s3_region", "us-east-1")):
        value = setting(target, key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name}: {key}: missing; fix: set it, e.g. {key}='{example}'")
    if setting(target, "pgbackrest_s3_uri_style") not in ("path", "host"):
        problems.append(f"{name}: pgbackrest_s3_uri_style: must be 'path' or 'host'; fix: 'path' for S3-compatible stores")
    if not str(setting(target, "pgbackrest_repo_path")).startswith("/"):
        problems.append(f"{name}: pgbackrest_repo_path: must start with '/'; fix: e.g. '/onlyoffice-ha'")
    connect = setting(target, "pgbackrest_s3_connect_address")
    if connect is not None and (not isinstance(connect, str) or not re.fullmatch(r"[A-Za-z0-9.:-]+", connect)):
        problems.append(f"{name}: pgbackrest_s3_connect_address: {connect!r} is not an address; fix: an IP address or host name, or None")
    ca = setting(target, "pgbackrest_s3_ca_cert")
    if ca is not None:
        if not os.path.isfile(str(ca)):
            problems.append(f"{name}: pgbackrest_s3_ca_cert: {ca} is not a file on this machine; fix: point it at the CA bundle (PEM)")
    for key in ("pgbackrest_retention_full", "pgbackrest_retention_diff", "pgbackrest_process_max",
                "pgbackrest_archive_timeout", "pgbackrest_max_backup_age", "pgbackrest_max_archive_lag",
                "pgbackrest_io_timeout"):
        value = setting(target, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name}: {key}: must be a positive integer, got {value!r}; fix: e.g. {BACKUP_DEFAULTS[key]}")
    for key in ("pgbackrest_full_calendar", "pgbackrest_diff_calendar"):
        value = setting(target, key)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            problems.append(f"{name}: {key}: must be a systemd OnCalendar= expression; fix: e.g. 'Sun *-*-* 01:00:00'")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", str(setting(target, "pgbackrest_stanza"))):
        problems.append(f"{name}: pgbackrest_stanza: letters, digits, '_' and '-' only; fix: e.g. 'onlyoffice'")
    secrets = target.data.get("secrets") or {}
    for key in SECRETS:
        value = secrets.get(key) if hasattr(secrets, "get") else None
        if not isinstance(value, str) or not value.strip():
            problems.append(f"all: secrets.{key}: missing or empty (the backup layer needs it); fix: add {key}: <value> to the secrets file")
    return problems


def archive_settings(target: Any) -> dict[str, Any]:
    """The Patroni dynamic configuration that turns WAL archiving to this repository on."""
    stanza = str(setting(target, "pgbackrest_stanza"))
    return {
        "postgresql": {
            "parameters": {
                "archive_mode": "on",
                "archive_command": f"pgbackrest --stanza={stanza} archive-push %p",
                "archive_timeout": f"{int(setting(target, 'pgbackrest_archive_timeout'))}s",
            },
            # A member that joins before this layer has installed pgBackRest on it (a new data
            # host: the postgres layer runs first) must stream from the leader, not abort:
            # PostgreSQL ends recovery on a restore_command exit of 126/127 (command not found),
            # while exit 1 means "not in the archive" and it falls back to streaming.
            "recovery_conf": {"restore_command": f'[ -x /usr/bin/pgbackrest ] && pgbackrest --stanza={stanza} archive-get %f "%p"'},
        },
    }


def config_vars(target: Any) -> dict[str, Any]:
    """Everything templates/pgbackrest/pgbackrest.conf.j2 needs (kept apart so a unit test renders it)."""
    s3_host, s3_port = endpoint_parts(setting(target, "pgbackrest_s3_endpoint"))
    secrets = target.data.get("secrets") or {}
    return {
        "stanza": setting(target, "pgbackrest_stanza"),
        "repo_path": setting(target, "pgbackrest_repo_path"),
        "s3_host": s3_host,
        "s3_port": s3_port,
        "s3_bucket": setting(target, "pgbackrest_s3_bucket"),
        "s3_region": setting(target, "pgbackrest_s3_region"),
        "s3_uri_style": setting(target, "pgbackrest_s3_uri_style"),
        "s3_key": secrets["s3_access_key"],
        "s3_key_secret": secrets["s3_secret_key"],
        "ca_file": CA_FILE if setting(target, "pgbackrest_s3_ca_cert") else None,
        "verify_tls": True,
        "cipher_pass": secrets["pgbackrest_cipher_pass"],
        "retention_full": int(setting(target, "pgbackrest_retention_full")),
        "retention_diff": int(setting(target, "pgbackrest_retention_diff")),
        "process_max": int(setting(target, "pgbackrest_process_max")),
        "compress_type": setting(target, "pgbackrest_compress_type"),
        "io_timeout": int(setting(target, "pgbackrest_io_timeout")),
        "data_dir": setting(target, "postgres_data_dir"),
        "pg_port": int(setting(target, "postgres_port")),
    }


# --- execute-time operations ------------------------------------------------------------


def _executing() -> bool:
    return state.current_stage == StateStage.Execute


def _as_postgres(*args: Any) -> StringCommand:
    return StringCommand("runuser", "-u", "postgres", "--", *args)


def _local_archive_mode() -> str | None:
    archiver = host.get_fact(PgArchiver, data_dir=str(setting(host, "postgres_data_dir")))
    return archiver["archive_mode"] if archiver else None


@operation(is_idempotent=True)
def archive_mode_active(rest_password: str, deadline: float = 120):
    """Restart this member's PostgreSQL through Patroni if archive_mode is not on yet.

    Runs at execute time after the dynamic configuration was patched: waits for the
    local Patroni to see the change (``pending_restart``), then ``POST /restart``, which
    keeps a leader the leader.  Nothing when archive_mode is already on.
    """
    if not _executing():
        return
    if _local_archive_mode() == "on":
        host.noop("archive_mode is on")
        return
    port = int(setting(host, "patroni_rest_port"))
    # Patroni applies the new dynamic configuration within a loop or two; POST /restart
    # then restarts with it.  Then wait for PostgreSQL to run again with archive_mode on.
    script = (
        f"for i in $(seq 60); do curl -sf --max-time 3 http://127.0.0.1:{port}/patroni | grep -q '\"pending_restart\": *true' && break; sleep 1; done; "
    )
    yield StringCommand("sh", "-c", QuoteString(script))
    # POST /restart answers once PostgreSQL is up again; a slow start is judged by the wait below.
    # The credentials go on stdin (``-K -``), not in argv where ``ps`` would show them.
    yield StringCommand("curl", "-K", "-", "-sS", "--max-time", str(int(deadline)), "-X", "POST",
                        "-H", "'Content-Type: application/json'", "--data", "'{}'",
                        f"http://127.0.0.1:{port}/restart", "||", "true",
                        _stdin=curl_user_config("patroni", rest_password))
    wait = (
        f"end=$(($(date +%s)+{int(deadline)})); while [ $(date +%s) -lt $end ]; do "
        "m=$(runuser -u postgres -- psql -h /var/run/postgresql -XAtqc 'show archive_mode' 2>/dev/null || true); "
        "[ \"$m\" = on ] && exit 0; sleep 1; done; echo 'archive_mode is still not on' >&2; exit 1"
    )
    yield StringCommand("sh", "-c", QuoteString(wait))


def _is_leader(deadline: float = 60) -> bool:
    """True if the local Patroni reports this member as the running leader (waits for a leader)."""
    end = time.monotonic() + deadline
    port = int(setting(host, "patroni_rest_port"))
    while True:
        view = host.get_fact(PatroniCluster, address="127.0.0.1", port=port)
        if view and view.get("leader"):
            return view["leader"] == host.name
        if time.monotonic() >= end:
            return False
        time.sleep(1)


def repository_problem(info: dict[str, Any] | None) -> str | None:
    """Why the repository cannot be used (None when it can): for stanza_ready's error."""
    if info is None:
        return "pgbackrest info printed nothing (is pgBackRest installed?)"
    if info["repo_errors"]:
        return "; ".join(info["repo_errors"])
    if info["status_code"] not in (STATUS_OK, STATUS_NO_BACKUP, STATUS_MISSING_STANZA):
        return str(info["status_message"])
    return None


@operation(is_idempotent=True)
def stanza_ready(stanza: str, initial_backup: bool):
    """On the leader: create the stanza if the repository has none; check that WAL
    reaches it (``pgbackrest check`` switches a segment and waits for it); take a first
    full backup when the repository holds no backup.  Execute time only."""
    if not _executing():
        return
    if not _is_leader():
        host.noop("not the Patroni leader: the leader creates the stanza")
        return
    info = host.get_fact(PgBackRestInfo, stanza=stanza)
    problem = repository_problem(info)
    if problem:
        from pyinfra.api.exceptions import OperationError

        raise OperationError(f"{host.name}: pgBackRest repository: {problem}; fix: check the S3 endpoint, "
                             f"keys and CA (`sudo -u postgres pgbackrest --stanza={stanza} info`)")
    assert info is not None
    acted = False
    if info["status_code"] == STATUS_MISSING_STANZA:
        yield _as_postgres("pgbackrest", f"--stanza={stanza}", "stanza-create")
        yield _as_postgres("pgbackrest", f"--stanza={stanza}", "check")
        acted = True
    if initial_backup and not any(not b["error"] for b in info["backups"]):
        yield _as_postgres("pgbackrest", f"--stanza={stanza}", "--type=full", "backup")
        acted = True
    if not acted:
        host.noop(f"stanza {stanza} exists with {len(info['backups'])} backup(s)")


# --- the layer --------------------------------------------------------------------------


def converge_archiving(rest_password: str) -> None:
    """Archive settings in Patroni's dynamic configuration, active on every member.

    Also called by deploys/restore.py after a restore (a restored cluster starts from
    the postgres layer's bootstrap configuration, without them).
    """
    dynamic_config(name="WAL archiving in Patroni's dynamic configuration", wanted=archive_settings(host),
                   rest_password=rest_password, deadline=float(setting(host, "patroni_leader_deadline")), _serial=True)
    archive_mode_active(name="archive_mode active (PostgreSQL restarted once through Patroni)",
                        rest_password=rest_password, deadline=float(setting(host, "pgbackrest_restart_deadline")),
                        _serial=True)


def _endpoint_name_resolves() -> None:
    """With pgbackrest_s3_connect_address: "<address> <endpoint name>" in /etc/hosts, now and
    at every boot.  pgBackRest verifies the certificate against the host it connects to
    (DNS names only), so it must connect to the name; repo-storage-host would replace it."""
    address = setting(host, "pgbackrest_s3_connect_address")
    if not address:
        return
    name, _ = endpoint_parts(setting(host, "pgbackrest_s3_endpoint"))
    # One owner per /etc/hosts line (RabbitMQ's peers are there too): ooha/ops/hosts_file.py.
    # adopt: the untagged line earlier versions wrote (files.line and the boot unit).
    hosts_entries(name=f"{name} resolves to {address} (/etc/hosts)", entries=[(address, name)], owner=HOSTS_OWNER,
                  adopt=[f"{address} {name}"])
    # The boot unit writes the very line the operation writes, so a deploy after a restart finds it right.
    unit = files.template(name="Boot unit keeping that /etc/hosts entry", src=str(TEMPLATES / "pgbackrest/pgbackrest-s3-hosts.service.j2"),
                          dest=f"{UNIT_DIR}/ooha-pgbackrest-s3-hosts.service", mode="644",
                          jinja_env_kwargs=dict(JINJA), endpoint_name=name, address=address,
                          line=entry_line(address, name, HOSTS_OWNER))
    systemd.daemon_reload(name="Reload systemd (boot unit changed)", _if=unit.did_change)
    systemd.service(name="Boot unit for the S3 endpoint's name enabled", service="ooha-pgbackrest-s3-hosts.service",
                    running=True, enabled=True)


@deploy("backup", data_defaults=BACKUP_DEFAULTS)
def pgbackrest() -> None:
    """Converge pgBackRest on this PostgreSQL member; data keys in BACKUP_DEFAULTS."""
    install_pgbackrest()
    converge_archiving(host.data.secrets["patroni_rest_password"])
    stanza_ready(name="pgBackRest stanza and first full backup (leader)", stanza=str(setting(host, "pgbackrest_stanza")),
                 initial_backup=bool(setting(host, "pgbackrest_initial_backup")))


def install_pgbackrest() -> None:
    """pgBackRest's package, configuration, CA, backup script and timers (also used by restore.py)."""
    problems = input_problems(host)
    if problems:
        raise DeployError("Backup layer inputs:\n" + "\n".join(problems))
    stanza = str(setting(host, "pgbackrest_stanza"))
    apt.packages(name="Install pgBackRest", packages=list(setting(host, "pgbackrest_packages")), no_recommends=True)
    files.directory(name="pgBackRest configuration directory", path="/etc/pgbackrest", user="root",
                    group="postgres", mode="750")
    for path in ("/var/log/pgbackrest", "/var/spool/pgbackrest"):
        files.directory(name=f"pgBackRest directory {path}", path=path, user="postgres", group="postgres", mode="750")
    ca = setting(host, "pgbackrest_s3_ca_cert")
    if ca:
        files.put(name="S3 endpoint's CA for pgBackRest", src=str(ca), dest=CA_FILE, user="root", group="postgres",
                  mode="644")
    _endpoint_name_resolves()
    private_template(name="Configure pgBackRest (S3 keys, cipher key)", src=str(TEMPLATES / "pgbackrest/pgbackrest.conf.j2"),
                     dest=PGBACKREST_CONF, user="root", group="postgres", mode="640",
                     jinja_env_kwargs=dict(JINJA), **config_vars(host))
    files.template(name="Backup script (leader only)", src=str(TEMPLATES / "pgbackrest/pgbackrest-backup.sh.j2"),
                   dest=BACKUP_SCRIPT, mode="755", jinja_env_kwargs=dict(JINJA), stanza=stanza,
                   rest_port=int(setting(host, "patroni_rest_port")))
    units = [files.template(name="Backup service unit", src=str(TEMPLATES / "pgbackrest/pgbackrest-backup@.service.j2"),
                            dest=f"{UNIT_DIR}/pgbackrest-backup@.service", mode="644",
                            jinja_env_kwargs=dict(JINJA), stanza=stanza)]
    for kind in ("full", "diff"):
        units.append(files.template(name=f"Backup timer ({kind})", src=str(TEMPLATES / "pgbackrest/pgbackrest-backup.timer.j2"),
                                    dest=f"{UNIT_DIR}/pgbackrest-{kind}.timer", mode="644",
                                    jinja_env_kwargs=dict(JINJA), kind=kind,
                                    calendar=setting(host, f"pgbackrest_{kind}_calendar")))
    systemd.daemon_reload(name="Reload systemd (backup units changed)", _if=any_changed(*units))
    for kind in ("full", "diff"):
        systemd.service(name=f"Backup timer ({kind}) enabled", service=f"pgbackrest-{kind}.timer",
                        running=True, enabled=True)


# --- validation -----------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds / 3600:.1f}h"


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def newest(info: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The newest good backup of ``kind`` (full/diff/incr) in the repository."""
    good = [b for b in info["backups"] if b["type"] == kind and not b["error"] and b["stop"]]
    return max(good, key=lambda b: b["stop"], default=None)


def judge_backup(info: dict[str, Any] | None, archiver: dict[str, Any] | None, now: float,
                 max_age: int, max_lag: int) -> CheckResult:
    """The backup check's verdict from the two facts (pure, unit-tested).

    Fails when the repository is unreachable or unusable, there is no backup, the
    newest backup is older than ``max_age``, or (on the primary) archiving is off, failing,
    or a WAL file has waited longer than ``max_lag``.
    """
    fix_repo = "check S3 reachability, keys and CA from this host (`sudo -u postgres pgbackrest info`)"
    if info is None:
        return CheckResult(False, "pgbackrest info printed nothing", "rerun the deploy with the backup layer", final=True)
    parts: list[str] = []
    problems: list[str] = []
    if info["repo_errors"]:
        problems.append(f"repository unreachable: {'; '.join(info['repo_errors'])[:200]}")
    elif info["status_code"] not in (STATUS_OK, STATUS_NO_BACKUP):
        problems.append(f"stanza {info['name']}: {info['status_message']}")
    else:
        full, diff = newest(info, "full"), newest(info, "diff")
        latest = max((b for b in info["backups"] if not b["error"] and b["stop"]), key=lambda b: b["stop"], default=None)
        for kind, backup in (("full", full), ("diff", diff)):
            if backup:
                parts.append(f"last {kind} {_age(now - backup['stop'])} ago ({_size(backup['size'])}, "
                             f"repo {_size(backup['repo_delta'])})")
        if latest is None:
            problems.append("no backup in the repository")
        elif now - latest["stop"] > max_age:
            problems.append(f"newest backup {latest['label']} is {_age(now - latest['stop'])} old (limit {_age(max_age)})")
    if archiver is not None and not archiver["in_recovery"]:
        if archiver["archive_mode"] != "on":
            problems.append(f"archive_mode is {archiver['archive_mode']}")
        lag = archiver["oldest_ready_age"] or 0
        failing = (archiver["last_failed_time"] or 0) > (archiver["last_archived_time"] or 0)
        last_age = None if archiver["last_archived_time"] is None or archiver["now"] is None \
            else archiver["now"] - archiver["last_archived_time"]
        parts.append(f"last archived WAL {archiver['last_archived_wal'] or 'none'} {_age(last_age)} ago, "
                     f"{archiver['ready']} waiting (archive lag {_age(lag)})")
        if lag > max_lag:
            problems.append(f"archiving stuck: {archiver['ready']} WAL file(s) waiting, oldest {_age(lag)} (limit {_age(max_lag)})")
        elif failing and archiver["ready"]:
            problems.append(f"archiving failing since {archiver['last_failed_wal']} ({archiver['failed_count']} failures)")
    if problems:
        fix = fix_repo if info["repo_errors"] else \
            "see /var/log/pgbackrest and `journalctl -u patroni`; run deploys/backup.py for a fresh backup"
        return CheckResult(False, "; ".join(problems + parts), fix)
    role = "leader" if archiver is not None and not archiver["in_recovery"] else "replica"
    return CheckResult(True, f"{role}: repository reachable ({len(info['backups'])} backups, WAL to "
                             f"{info['archive_max'] or '?'}); " + ", ".join(parts))


def check_backup_once(target: Any) -> CheckResult:
    stanza = str(setting(target, "pgbackrest_stanza"))
    info = target.get_fact(PgBackRestInfo, stanza=stanza)
    archiver = target.get_fact(PgArchiver, data_dir=str(setting(target, "postgres_data_dir")))
    return judge_backup(info, archiver, time.time(), int(setting(target, "pgbackrest_max_backup_age")),
                        int(setting(target, "pgbackrest_max_archive_lag")))


def check_backup(target: Any) -> CheckResult:
    """check_backup_once, allowing a few seconds for archiving to settle after a restart."""
    return poll(check_backup_once, target, 20.0, interval=5.0)
