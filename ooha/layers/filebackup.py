"""File backup layer: what cannot be regenerated, backed up with restic to S3 (groups docs, lb).

PostgreSQL has pgBackRest (ooha/layers/pgbackrest.py); everything else that a rebuilt host
could not get back from the deploy goes here:

* Document Server hosts: the ``onlyoffice-data`` Docker volume (``/var/www/onlyoffice/Data``:
  license, keys, ``.private/ds_release_date``) and ``/etc/onlyoffice-ha`` (rendered configs);
* load balancers: ``/etc/nginx``, ``/etc/keepalived``, ``/etc/onlyoffice-ha``.

Why restic: an established engine with S3 support, client-side encryption (AES-256, key
``restic_password``), deduplication, snapshots and retention (``forget --prune``); never a
hand-rolled archive format.  Debian's ``restic`` (0.14) package.  Each host has its own
repository, ``<filebackup_repository_prefix>/<host name>``, so hosts never contend for a
repository lock and a host's restore can only ever see its own files.

On each host: ``/usr/local/sbin/ooha-filebackup`` (backup | restore | status | init |
restic ...), ``ooha-filebackup.service`` (oneshot: back up, then apply the retention) and
``ooha-filebackup.timer`` (systemd, ``filebackup_on_calendar``, ``Persistent=true`` so a
host that was off catches up).  Keys and password are root-only files under
``/etc/ooha-filebackup/``; the S3 CA is passed with ``--cacert``.  The first deploy takes
a first snapshot so the report is meaningful at once.

A blank Document Server host (rebuilt: no ``onlyoffice-documentserver`` container and an
absent or empty Data volume) gets its files back AUTOMATICALLY from its newest snapshot that
holds the Data volume, before the container is created: the documentserver layer calls
``restore_if_blank()`` first (restic, keys and script installed by ``install()``, the same
steps as this layer's).  Explicit and safe (``blank_decision``): a host whose volume holds
any file, or whose container exists, is never restored over; a blank host whose repository
cannot be read is refused ("host: field: reason; fix"), never started empty; no snapshot
(a new node) starts fresh, and this layer, which runs after documentserver, takes the first
snapshot once the container made its Data.  ``filebackup_restore_blank: false`` turns it off.

On demand: ``systemctl start ooha-filebackup.service`` on the host (waits until done,
non-zero on failure), or ``run_backup_now()`` from a deploy.  Restore:
``pyinfra -y INVENTORY deploys/restore_files.py --data restore_host=ds1`` (see there).
The Data volume is read while Document Server runs: its files (license, keys) change only
when an operator changes them, so a live copy is consistent.
"""

from __future__ import annotations

import re
import shlex
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.api.state import StateStage
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from ooha.ops.private_files import private_put
from ooha.report import CheckResult
from ooha.settings import Settings
from ooha.settings import secret as _secret
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.filebackup import SCRIPT, BlankProbe, FileBackupStatus

CONF_DIR = "/etc/ooha-filebackup"
CACHE_DIR = "/var/cache/ooha-filebackup"
CA_FILE = f"{CONF_DIR}/s3-ca.crt"
SERVICE = "ooha-filebackup.service"
"""Start this unit to back up now (oneshot: ``systemctl start`` returns when the backup is done)."""
TIMER = "ooha-filebackup.timer"
UNIT_DIR = "/etc/systemd/system"
GROUPS = ("docs", "lb")
SECRETS = ("s3_access_key", "s3_secret_key", "restic_password")
"""Secrets this layer needs (checked only when the layer runs)."""

_VOLUME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]*$")

FILEBACKUP_DEFAULTS: dict[str, Any] = {
    "filebackup_packages": ["restic"],
    # restic repository URL prefix; each host's repository is "<prefix>/<host name>",
    # e.g. "s3:https://s3.eu-west-1.amazonaws.com/my-backups/onlyoffice-ha/files".
    # Keys: secrets s3_access_key / s3_secret_key; encryption: secrets restic_password.
    "filebackup_repository_prefix": None,
    "filebackup_s3_region": None,
    # "path" for S3-compatible stores (MinIO, moto), "dns" or "auto" for AWS.
    "filebackup_s3_bucket_lookup": "path",
    # CA certificate of the S3 endpoint, a path on the machine running pyinfra; None: system CAs.
    "filebackup_s3_ca_cert": None,
    # What each group backs up: Docker volumes (by name) and paths.
    "filebackup_volumes": {"docs": ["onlyoffice-data"]},
    "filebackup_paths": {
        "docs": ["/etc/onlyoffice-ha"],
        "lb": ["/etc/nginx", "/etc/keepalived", "/etc/onlyoffice-ha"],
    },
    # systemd OnCalendar= schedule, and a random delay so hosts do not all start at once.
    "filebackup_on_calendar": "*-*-* 02:30:00",
    "filebackup_randomized_delay": "30min",
    # Retention after each backup (restic forget --prune): daily and weekly snapshots kept.
    "filebackup_keep_daily": 7,
    "filebackup_keep_weekly": 4,
    # Take a first snapshot at deploy time when the repository has none.
    "filebackup_initial_backup": True,
    # The report fails when the newest snapshot is older than this (seconds).
    "filebackup_max_age": 26 * 3600,
    # A blank Document Server host (no container, Data volume absent or empty) gets its newest
    # snapshot restored before its container is created (restore_if_blank, run by the
    # documentserver layer).  false: a blank host starts with an empty Data volume.
    "filebackup_restore_blank": True,
}


setting = Settings(FILEBACKUP_DEFAULTS)
"""A data key with this layer's default (the report and restore run outside the deploy)."""


def repository(target: Any) -> str:
    """This host's restic repository URL."""
    return f"{str(setting(target, 'filebackup_repository_prefix')).rstrip('/')}/{target.name}"


def backup_set(target: Any) -> tuple[list[str], list[str]]:
    """(volumes, paths) this host backs up: the union over its groups, in a stable order."""
    volumes: list[str] = []
    paths: list[str] = []
    for group in GROUPS:
        if group not in target.groups:
            continue
        for volume in (setting(target, "filebackup_volumes") or {}).get(group, []):
            if volume not in volumes:
                volumes.append(str(volume))
        for path in (setting(target, "filebackup_paths") or {}).get(group, []):
            if path not in paths:
                paths.append(str(path))
    return volumes, paths


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each naming host, field and fix."""
    name = target.name
    problems = []
    prefix = target.data.get("filebackup_repository_prefix")
    if not prefix:
        problems.append(f"{name}: filebackup_repository_prefix: missing; fix: set it, e.g. \"s3:https://s3.example.net/my-backups/files\"")
    elif not re.match(r"^s3:https?://[^/\s]+/[^/\s]+(/[^\s]*)?$", str(prefix)):
        problems.append(f"{name}: filebackup_repository_prefix: {prefix!r} is not s3:https://host[:port]/bucket[/path]; fix: e.g. \"s3:https://s3.example.net/my-backups/files\"")
    for key in SECRETS:
        if not _secret(target, key).strip():
            problems.append(f"all: secrets.{key}: missing or empty (required by the filebackup layer); fix: add {key}: <value> to the secrets file")
    if setting(target, "filebackup_s3_bucket_lookup") not in ("path", "dns", "auto"):
        problems.append(f"{name}: filebackup_s3_bucket_lookup: must be path, dns or auto; fix: \"path\" for S3-compatible stores")
    region = target.data.get("filebackup_s3_region")
    if region is not None and not re.match(r"^[a-z0-9-]+$", str(region)):
        problems.append(f"{name}: filebackup_s3_region: {region!r} is not a region name; fix: e.g. \"us-east-1\"")
    ca = target.data.get("filebackup_s3_ca_cert")
    if ca:
        path = Path(str(ca)).expanduser()
        try:
            if "BEGIN CERTIFICATE" not in path.read_text(encoding="utf-8", errors="replace"):
                problems.append(f"{name}: filebackup_s3_ca_cert: {path} holds no PEM certificate; fix: point it at the S3 endpoint's CA (PEM)")
        except OSError as exc:
            problems.append(f"{name}: filebackup_s3_ca_cert: cannot read {path} on this machine ({exc.strerror}); fix: give the CA file's path on the machine running pyinfra")
    for key, minimum in (("filebackup_keep_daily", 1), ("filebackup_keep_weekly", 0), ("filebackup_max_age", 60)):
        value = setting(target, key)
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < minimum:
            problems.append(f"{name}: {key}: {value!r} must be an integer >= {minimum}; fix: e.g. {FILEBACKUP_DEFAULTS[key]}")
    for key in ("filebackup_on_calendar", "filebackup_randomized_delay"):
        value = setting(target, key)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            problems.append(f"{name}: {key}: must be a one-line systemd time specification; fix: e.g. {FILEBACKUP_DEFAULTS[key]!r}")
    if not isinstance(setting(target, "filebackup_restore_blank"), bool):
        problems.append(f"{name}: filebackup_restore_blank: must be true or false; fix: --data filebackup_restore_blank=true|false")
    for key in ("filebackup_volumes", "filebackup_paths"):
        if not isinstance(setting(target, key), dict):
            problems.append(f"{name}: {key}: must map group names to lists; fix: e.g. {FILEBACKUP_DEFAULTS[key]!r}")
    if not problems:
        volumes, paths = backup_set(target)
        for volume in volumes:
            if not _VOLUME.match(volume):
                problems.append(f"{name}: filebackup_volumes: {volume!r} is not a Docker volume name; fix: letters, digits, _ . -")
        for path in paths:
            if not _PATH.match(path) or "/../" in f"{path}/" or path == "/":
                problems.append(f"{name}: filebackup_paths: {path!r} is not an absolute path without spaces; fix: e.g. \"/etc/nginx\"")
        if not volumes and not paths:
            problems.append(f"{name}: filebackup_paths: nothing to back up for groups {', '.join(sorted(target.groups))}; fix: list paths for one of {', '.join(GROUPS)}")
    return problems


def env_file(target: Any) -> str:
    """The root-only environment file the script sources (repository, keys, password file)."""
    values = {
        "RESTIC_REPOSITORY": repository(target),
        "RESTIC_PASSWORD_FILE": f"{CONF_DIR}/password",
        "RESTIC_CACHE_DIR": CACHE_DIR,
        "AWS_ACCESS_KEY_ID": _secret(target, "s3_access_key"),
        "AWS_SECRET_ACCESS_KEY": _secret(target, "s3_secret_key"),
    }
    return "# Managed by onlyoffice-ha (ooha/layers/filebackup.py); root only.\n" + "".join(
        f"{key}={shlex.quote(value)}\n" for key, value in values.items()
    )


def script_vars(target: Any) -> dict[str, Any]:
    """Everything templates/filebackup/ooha-filebackup.sh.j2 needs (no secrets: those are in the env file)."""
    volumes, paths = backup_set(target)
    region = target.data.get("filebackup_s3_region")
    return {
        "conf_dir": CONF_DIR,
        "host_tag": target.name,
        "volumes": volumes,
        "paths": paths,
        "ca_file": CA_FILE if target.data.get("filebackup_s3_ca_cert") else None,
        "bucket_lookup": setting(target, "filebackup_s3_bucket_lookup"),
        "region": str(region) if region else None,
        "keep_daily": int(setting(target, "filebackup_keep_daily")),
        "keep_weekly": int(setting(target, "filebackup_keep_weekly")),
        "timer": TIMER,
    }


# --- blank host: restore before the container starts ---------------------------------------


def volume_path_suffix(volume: str) -> str:
    """How a Docker volume's mountpoint ends in a snapshot's paths (``.../volumes/<name>/_data``)."""
    return f"/volumes/{volume}/_data"


def choose_snapshot(snapshots: list[dict[str, Any]], volumes: list[str]) -> dict[str, Any] | None:
    """The newest snapshot that holds every volume of ``volumes`` (None: no such snapshot).

    A snapshot taken while a volume was missing (the script skips it) must never be the one
    a rebuilt host gets: it would come back without its license and keys.
    """
    for snapshot in sorted(snapshots, key=lambda s: s["time"], reverse=True):
        paths = snapshot.get("paths") or []
        if all(any(p.rstrip("/").endswith(volume_path_suffix(v)) for p in paths) for v in volumes):
            return snapshot
    return None


def volume_has_files(probe: dict[str, Any], volumes: list[str]) -> bool:
    """True when any volume of the backup set exists and holds at least one entry."""
    return any((probe.get("volumes") or {}).get(v) for v in volumes)


def blank_decision(name: str, probe: dict[str, Any], status: dict[str, Any] | None, volumes: list[str],
                   container: str) -> tuple[str, str | None, str]:
    """``(action, snapshot id, message)``: ``restore``, ``none`` or ``refuse`` (message = "host: field: reason; fix: ...").

    Blank = the Docker engine answers, the container does not exist AND every volume of the
    backup set is absent or empty.  Only a blank host is ever restored; a host with files is
    left alone whatever the repository holds; a host whose state cannot be told is refused.
    """
    if not volumes:
        return "none", None, "no Docker volume in this host's backup set: nothing to restore"
    if not probe.get("docker"):
        return ("refuse", None, f"{name}: docker: the Docker engine does not answer, so whether this host is blank "
                "cannot be told; fix: start docker (rerun with --data layers=docker) and rerun the main job")
    listed = ", ".join(volumes)
    if volume_has_files(probe, volumes):
        return "none", None, f"not blank: volume {listed} holds files; nothing restored"
    present = probe.get("container")
    if status is None:
        return ("refuse", None, f"{name}: filebackup: {SCRIPT} is missing, so the repository cannot be read; "
                "fix: rerun the main job (it installs it before the container)")
    usable = choose_snapshot(status.get("snapshot_list") or [], volumes) if status.get("repository") == "ok" else None
    if present is not None:
        if usable is not None:
            return ("refuse", None, f"{name}: onlyoffice-data: container {container} exists ({present}) but volume {listed} is "
                    f"empty while snapshot {usable['short_id']} holds it (ambiguous: a failed rebuild?); fix: investigate, then "
                    f"either `docker rm -f {container}` on {name} and rerun the main job (restores {usable['short_id']}), or "
                    f"restore by hand: deploys/restore_files.py --data restore_host={name}")
        return "none", None, f"container {container} exists ({present}): not blank; nothing restored"
    if status.get("repository") == "error":
        return ("refuse", None, f"{name}: filebackup: host is blank (no container, volume {listed} empty or absent) but its "
                f"repository cannot be read ({status.get('error') or 'error'}); fix: make S3 reachable and rerun the main job, "
                "or set filebackup_restore_blank=false to start it WITHOUT its files (license, keys)")
    if usable is None:
        count = status.get("snapshots") or 0
        detail = "no snapshot" if not count else f"{count} snapshot(s), none holding volume {listed}"
        return "none", None, f"blank, {detail}: a new node, nothing to restore"
    return ("restore", usable["id"], f"blank (no container, volume {listed} empty or absent): restoring snapshot "
            f"{usable['short_id']}")


@operation()
def restore_blank(container: str, volumes: list[str]):
    """Restore this host's newest usable snapshot when, and only when, the host is blank (execute time).

    Facts are read at execute time only: at plan time restic may not be installed yet on a
    rebuilt host.  A refusal raises OperationError (the run stops, FAIL_PERCENT = 0).
    """
    if state.current_stage != StateStage.Execute:
        return
    probe = host.get_fact(BlankProbe, container=container, volumes=tuple(volumes))
    status = None if volume_has_files(probe, volumes) or not probe.get("docker") else host.get_fact(FileBackupStatus)
    action, snapshot, message = blank_decision(host.name, probe, status, volumes, container)
    if action == "refuse":
        from pyinfra.api.exceptions import OperationError

        raise OperationError(message)
    if action == "none":
        host.noop(message)
        return
    logger.info(f"{host.print_prefix}{message}")
    check = " && ".join(
        f"mp=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {shlex.quote(v)}) && "
        f"[ -n \"$(find \"$mp\" -mindepth 1 | head -n 1)\" ]" for v in volumes)
    yield StringCommand(SCRIPT, "restore", QuoteString(str(snapshot)), ">&2")
    yield StringCommand("sh", "-c", QuoteString(f"{check} || {{ echo 'restore left volume {' '.join(volumes)} empty' >&2; exit 1; }}"))


def install() -> None:
    """restic, its repository keys and the script: shared by restore_if_blank and the layer."""
    apt.packages(name="Install restic", packages=list(host.data.filebackup_packages), no_recommends=True)
    files.directory(name="File backup configuration directory", path=CONF_DIR, user="root", group="root", mode="700")
    files.directory(name="restic cache directory", path=CACHE_DIR, user="root", group="root", mode="700")
    private_put(name="File backup repository and keys (root only)", src=StringIO(env_file(host)),
                dest=f"{CONF_DIR}/env", user="root", group="root", mode="600")
    private_put(name="restic repository password (root only)", src=StringIO(_secret(host, "restic_password")),
                dest=f"{CONF_DIR}/password", user="root", group="root", mode="600")
    if host.data.get("filebackup_s3_ca_cert"):
        files.put(name="S3 endpoint CA", src=str(Path(str(host.data.filebackup_s3_ca_cert)).expanduser()),
                  dest=CA_FILE, user="root", group="root", mode="644")
    files.template(name="File backup script", src=str(TEMPLATES / "filebackup/ooha-filebackup.sh.j2"), dest=SCRIPT,
                   user="root", group="root", mode="755", jinja_env_kwargs=dict(JINJA), **script_vars(host))


@deploy("Restore a blank host's files", data_defaults=FILEBACKUP_DEFAULTS)
def restore_if_blank(container: str) -> None:
    """Before a Document Server container is created: restore the host's files if it is blank.

    Called by the documentserver layer first thing (so ``--data layers=documentserver`` on a
    rebuilt host restores too).  Installs restic and the script (this layer's own steps, noops
    when present), then ``restore_blank`` decides at execute time (``blank_decision``).
    """
    if not host.data.get("filebackup_restore_blank"):
        return
    problems = input_problems(host)
    if problems:
        raise DeployError("File backup layer inputs (needed to restore a blank host; "
                          "filebackup_restore_blank=false turns that off):\n" + "\n".join(problems))
    volumes, _ = backup_set(host)
    if not volumes:
        return
    install()
    restore_blank(name="Restore the Data volume from the file backup if this host is blank", container=container,
                  volumes=volumes)


# --- operations -----------------------------------------------------------------------------


def _start_service() -> str:
    """Start the oneshot backup; on failure show its journal (restic prints no secret)."""
    return f"systemctl start {SERVICE} || {{ journalctl -u {SERVICE} -n 30 --no-pager -o cat >&2; exit 1; }}"


@operation()
def first_snapshot():
    """Run the backup once when this host's repository holds no snapshot yet (and there is something to save)."""
    status = host.get_fact(FileBackupStatus)
    if status is not None and status["snapshots"] > 0:
        host.noop(f"{status['snapshots']} snapshot(s) in the repository")
        return
    if status is not None and status["present"] == 0 and status["repository"] != "error":
        host.noop("nothing to back up yet")
        return
    yield _start_service()


def run_backup_now() -> None:
    """Back up now on the current host (for deploys/backup.py): starts ooha-filebackup.service."""
    server.shell(name="File backup now (restic)", commands=[_start_service()])


# --- validation (report) --------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def check_filebackup(target: Any) -> CheckResult:
    """Newest snapshot younger than filebackup_max_age, timer enabled and active."""
    status = target.get_fact(FileBackupStatus)
    fix = "rerun the deploy with --data layers=filebackup"
    if status is None:
        return CheckResult(False, "ooha-filebackup not installed", fix)
    problems = []
    if not (status["timer_enabled"] and status["timer_active"]):
        problems.append(f"{TIMER} not enabled and active")
    if status["repository"] == "error":
        return CheckResult(False, f"repository unreadable: {status['error']}", f"check S3 reachability and keys: `sudo {SCRIPT} restic snapshots`")
    if status["repository"] == "missing" or not status["snapshots"]:
        if status["present"] == 0:
            detail = "nothing to back up yet"
            return CheckResult(not problems, "; ".join([detail, *problems]), fix)
        problems.append("no snapshot yet")
    elif status["age_seconds"] is not None and status["age_seconds"] > int(setting(target, "filebackup_max_age")):
        problems.append(f"newest snapshot is {_age(status['age_seconds'])} old")
    if problems:
        return CheckResult(False, "; ".join(problems), f"see `journalctl -u {SERVICE}`; {fix}")
    return CheckResult(True, f"last snapshot {_age(status['age_seconds'] or 0)} ago ({status['snapshots']} kept, "
                             f"{len(status['latest_paths'])} paths), timer on, {repository(target)}")


# --- the deploy -----------------------------------------------------------------------------


@deploy("File backup", data_defaults=FILEBACKUP_DEFAULTS)
def filebackup() -> None:
    """Converge restic file backups on one DS or LB host; data keys in FILEBACKUP_DEFAULTS."""
    problems = input_problems(host)
    if problems:
        raise DeployError("File backup layer inputs:\n" + "\n".join(problems))
    install()
    volumes, paths = backup_set(host)
    units = [
        files.template(name="File backup service unit", src=str(TEMPLATES / "filebackup/ooha-filebackup.service.j2"),
                       dest=f"{UNIT_DIR}/{SERVICE}", mode="644", jinja_env_kwargs=dict(JINJA),
                       script=SCRIPT, what=" ".join([*(f"volume:{v}" for v in volumes), *paths])),
        files.template(name="File backup timer unit", src=str(TEMPLATES / "filebackup/ooha-filebackup.timer.j2"),
                       dest=f"{UNIT_DIR}/{TIMER}", mode="644", jinja_env_kwargs=dict(JINJA),
                       on_calendar=host.data.filebackup_on_calendar, randomized_delay=host.data.filebackup_randomized_delay),
    ]
    systemd.daemon_reload(name="Reload systemd (file backup units changed)", _if=any_changed(*units))
    systemd.service(name="File backup timer enabled", service=TIMER, running=True, enabled=True)
    if host.data.filebackup_initial_backup:
        first_snapshot(name="First file backup (repository has no snapshot)")
