"""Rebuild the PostgreSQL cluster from the pgBackRest repository (used by deploys/restore.py).

The sequence, on the postgres hosts (R = the restore member, ``restore_host``, default the
first postgres host of the inventory):

1. before anything runs: inputs valid (``restore_target_time`` an ISO 8601 time with a
   zone, not in the future; ``restore_force`` a bool), and the cluster is NOT healthy
   (one running leader, replicas streaming) unless ``restore_force=true``;
2. pgBackRest installed and configured (the backup layer's files) and, on R, the
   repository reachable with a backup that ended before the target time;
3. Patroni stopped and runtime-masked on every member (it stops PostgreSQL), the
   cluster's keys removed from etcd (``patronictl remove``);
4. on R: ``pgbackrest restore --delta`` (``--type=time --target=... --target-action=promote``
   for a point in time, else to the end of the archived WAL), PostgreSQL started alone
   (socket only: no client can write before the target) until it is promoted, the recovery
   settings reset, then stopped cleanly;
5. Patroni started on R: with a non-empty data directory and no cluster in etcd it
   initialises the cluster from this data and takes the leader key (Patroni's own path
   for an existing data directory); its dynamic configuration, archive settings included,
   comes back from the restored ``patroni.dynamic.json``;
6. only now (R leads; the others' Patroni stayed masked) the other members' data
   directories are emptied, so a failed restore or recovery on R leaves their copies
   untouched; Patroni started on them: they clone from the new leader (basebackup) and
   stream.  The others act only while R is active in the run (every R step succeeded);
   if R fails, they stay stopped and masked with their data for the operator to retry;
7. the backup layer's archive settings converged (no-op when restored), and
   ``pgbackrest check`` on R proves the new timeline's WAL reaches the repository.
"""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Any

from pyinfra import host, inventory, state
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.api.state import StateStage
from pyinfra.operations import files, server, systemd

from ooha.contract import postgres_bin_dir
from ooha.templating import JINJA, TEMPLATES

from ooha.layers.postgres import judge_cluster
from ooha.layers.pgbackrest import converge_archiving, install_pgbackrest, repository_problem, setting
from ooha.facts.patroni import PatroniCluster
from ooha.facts.pgbackrest import PgBackRestInfo

RESTORE_SCRIPT = "/usr/local/sbin/ooha-pgbackrest-restore"
RESTORE_DEFAULTS: dict[str, Any] = {
    # ISO 8601 with a zone ("2026-12-02T09:30:00Z", "2026-12-02 10:30:00+01:00"), or None: latest.
    "restore_target_time": None,
    # Overwrite a healthy cluster (a restore replaces ALL of its data).
    "restore_force": False,
    # The member restored first and made leader (None: the first postgres host).
    "restore_host": None,
    # Seconds for WAL replay on R, and for the replicas to clone and stream.
    "restore_deadline": 1800,
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_bool(value: Any) -> bool | None:
    """A --data boolean (True/False or their usual spellings), None when it is neither."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def parse_target_time(value: Any, now: dt.datetime) -> tuple[dt.datetime | None, str | None]:
    """(the target as an aware UTC datetime, None) or (None, the problem).  None/"" is latest."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, dt.datetime):
        when = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            return None, f"{value!r} is not an ISO 8601 time"
    if when.tzinfo is None:
        return None, f"{value!r} has no time zone"
    when = when.astimezone(dt.timezone.utc)
    if when > now:
        return None, f"{value!r} is in the future (now {now:%Y-%m-%d %H:%M:%S}Z)"
    return when, None


def pg_time(when: dt.datetime) -> str:
    """A UTC time as PostgreSQL's recovery_target_time takes it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def restore_host_name(target: Any, members: list[str]) -> str:
    """The member restored first: ``restore_host`` or the first postgres host."""
    return str(target.data.get("restore_host") or members[0])


def postgres_members() -> list[str]:
    """Names of the inventory's postgres hosts (--limit ignored), in inventory order."""
    return [m.name for m in inventory.get_group("postgres")]


def input_problems(target: Any, now: dt.datetime, members: list[str]) -> list[str]:
    """restore.py's inputs, one line per problem naming host, field and fix."""
    problems = []
    _, problem = parse_target_time(target.data.get("restore_target_time"), now)
    if problem:
        problems.append(f"{target.name}: restore_target_time: {problem}; fix: e.g. --data "
                        "restore_target_time=2026-12-02T09:30:00Z (UTC, or give an offset), or leave it out for latest")
    if parse_bool(target.data.get("restore_force")) is None:
        problems.append(f"{target.name}: restore_force: {target.data.get('restore_force')!r} is not a boolean; "
                        "fix: --data restore_force=true")
    chosen = target.data.get("restore_host")
    if chosen and chosen not in members:
        problems.append(f"{target.name}: restore_host: {chosen!r} is not a postgres host; fix: one of {', '.join(members)}")
    deadline = target.data.get("restore_deadline", RESTORE_DEFAULTS["restore_deadline"])
    if isinstance(deadline, bool) or not str(deadline).isdigit() or int(deadline) < 1:
        problems.append(f"{target.name}: restore_deadline: {deadline!r} is not a positive number of seconds; fix: e.g. 1800")
    return problems


def healthy_cluster_refusal(target: Any, view: dict[str, Any] | None, members: list[str]) -> str | None:
    """The refusal message when ``view`` shows a healthy cluster (None when it does not)."""
    verdict = judge_cluster(view, members, int(setting(target, "postgres_max_lag_bytes")),
                            bool(setting(target, "synchronous_mode")))
    if not verdict.ok:
        return None
    return (f"{target.name}: restore_force: the PostgreSQL cluster is healthy ({verdict.detail}); a restore "
            "replaces all of its data with the backup's; fix: if that is what you want, pass --data restore_force=true")


def backup_problem(info: dict[str, Any] | None, target_time: dt.datetime | None) -> str | None:
    """Why the repository cannot restore to ``target_time`` (None when it can)."""
    problem = repository_problem(info)
    if problem:
        return f"repository: {problem}"
    assert info is not None
    good = [b for b in info["backups"] if not b["error"] and b["stop"]]
    if not good:
        return "the repository holds no backup"
    if target_time is not None:
        first = min(b["stop"] for b in good)
        if target_time.timestamp() < first:
            oldest = dt.datetime.fromtimestamp(first, dt.timezone.utc)
            return (f"restore_target_time {target_time:%Y-%m-%d %H:%M:%S}Z is before the end of the oldest "
                    f"backup ({oldest:%Y-%m-%d %H:%M:%S}Z)")
    return None


def _executing() -> bool:
    return state.current_stage == StateStage.Execute


@operation(is_idempotent=False)
def repository_can_restore(stanza: str, target_time: dt.datetime | None):
    """Fail the run (before anything is stopped) unless the repository can restore."""
    if not _executing():
        return
    from pyinfra.api.exceptions import OperationError

    problem = backup_problem(host.get_fact(PgBackRestInfo, stanza=stanza), target_time)
    if problem:
        raise OperationError(f"{host.name}: {problem}; nothing was stopped; fix: check "
                             f"`sudo -u postgres pgbackrest --stanza={stanza} info` and the target time")
    host.noop("the repository has a backup to restore from")
    yield from ()


@operation(is_idempotent=False)
def wait_cluster_healthy(deadline: float):
    """Wait (execute time) until the cluster has one running leader and every member streams."""
    if not _executing():
        return
    import time

    from pyinfra.api.exceptions import OperationError

    port = int(setting(host, "patroni_rest_port"))
    expected = postgres_members()
    end = time.monotonic() + deadline
    while True:
        view = host.get_fact(PatroniCluster, address="127.0.0.1", port=port)
        verdict = judge_cluster(view, expected, int(setting(host, "postgres_max_lag_bytes")),
                                bool(setting(host, "synchronous_mode")))
        if verdict.ok:
            host.noop(f"cluster healthy: {verdict.detail}")
            break
        if time.monotonic() >= end:
            raise OperationError(f"{host.name}: the restored cluster is not healthy after {deadline:.0f} s: "
                                 f"{verdict.text()}")
        time.sleep(3)
    yield from ()


def leader_wait_command(port: int, deadline: int) -> StringCommand:
    """A shell loop that waits until the local Patroni answers GET /primary with 200."""
    loop = (f"end=$(($(date +%s)+{int(deadline)})); while [ $(date +%s) -lt $end ]; do "
            f"[ \"$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 http://127.0.0.1:{int(port)}/primary)\" = 200 ] "
            "&& exit 0; sleep 2; done; echo 'Patroni did not become the leader' >&2; exit 1")
    return StringCommand("sh", "-c", shlex.quote(loop))


@deploy("Restore the PostgreSQL cluster")
def restore_cluster(target_time: dt.datetime | None, members: list[str]) -> None:
    """The restore sequence on this postgres host (see the module docstring, steps 2-7).

    Used by deploys/restore.py (after its refusals) and deploys/rebuild_site.py (a whole
    site rebuilt blank: the fresh cluster the postgres layer just made is replaced by the
    backup's).  Every host gets every operation, in this order; ``_if`` picks who acts.
    """
    _is_r = host.name == restore_host_name(host, members)
    _stanza = str(setting(host, "pgbackrest_stanza"))
    _scope = str(setting(host, "patroni_scope"))
    _data_dir = str(setting(host, "postgres_data_dir"))
    _deadline = int(host.data.get("restore_deadline") or RESTORE_DEFAULTS["restore_deadline"])
    _rest_port = int(setting(host, "patroni_rest_port"))
    _patronictl = "patronictl -c /etc/patroni/config.yml"

    install_pgbackrest()
    files.template(name="Restore script", src=str(TEMPLATES / "pgbackrest/pgbackrest-restore.sh.j2"), dest=RESTORE_SCRIPT,
                   mode="755", jinja_env_kwargs=dict(JINJA), data_dir=_data_dir, stanza=_stanza,
                   bin_dir=postgres_bin_dir(int(setting(host, "postgres_version"))), pg_port=int(setting(host, "postgres_port")))
    # Every host gets every operation, in this order; ``_if`` picks who acts.  (Operations
    # added for some hosts only are ordered per host, not by line: the others' Patroni
    # would start before the restored member leads.)
    # The others act only while R is still active (it never failed, so every R step before
    # succeeded): with pyinfra's default fail_percent they would otherwise go on after R
    # failed: stop a cluster R cannot restore, or empty the only copies of the data.
    _r_name = restore_host_name(host, members)
    r_ok = (lambda name=_r_name: any(h.name == name for h in state.active_hosts))
    on_r = (lambda r=_is_r: r)
    on_others = (lambda r=_is_r: not r and r_ok())
    repository_can_restore(name="The repository can restore (checked before anything stops)",
                           stanza=_stanza, target_time=target_time, _if=on_r)

    # --- from here on the cluster is down ---------------------------------------------
    systemd.service(name="Stop Patroni (and PostgreSQL) on every member", service="patroni.service", running=False,
                    _if=r_ok)
    # Until this member's turn, nothing may start Patroni (a deploy run, an operator): with
    # the cluster gone from etcd it would take the leader key with its old data (or initdb
    # a new cluster on an emptied data directory).
    server.shell(name="Hold Patroni down during the restore (runtime mask)",
                 commands=["systemctl mask --runtime patroni.service"], _if=r_ok)
    # No member renews the leader key now; once it is gone, remove the cluster's keys
    # (initialize, config, history) so that Patroni adopts the restored data directory.
    _remove = (
        f"for i in $(seq 30); do {_patronictl} list -f json 2>/dev/null | grep -q '\"Leader\"' || break; sleep 1; done; "
        f"printf '%s\\nYes I am aware\\n' {shlex.quote(_scope)} | {_patronictl} remove {shlex.quote(_scope)} >/dev/null"
    )
    server.shell(name="Remove the cluster from etcd (patronictl remove)", commands=[f"sh -c {shlex.quote(_remove)}"],
                 _if=on_r)
    _mode = f"time {shlex.quote(pg_time(target_time))}" if target_time else "latest ''"
    server.shell(name="Restore this member from the repository and recover it alone until promoted",
                 commands=[f"{RESTORE_SCRIPT} {_mode} {_deadline}"], _if=on_r)
    server.shell(name="Release Patroni on the restored member", commands=["systemctl unmask --runtime patroni.service"],
                 _if=on_r)
    systemd.service(name="Start Patroni on the restored member", service="patroni.service", running=True, _if=on_r)
    server.shell(name="Wait for the restored member to lead", commands=[leader_wait_command(_rest_port, 300)], _if=on_r)
    # Only now, with the restored member leading (the others' Patroni masked all along), are
    # the old copies expendable: if the restore or recovery fails, they are still there.
    server.shell(name="Empty the other members' data directories (they clone from the new leader)",
                 commands=[f"if [ -d {shlex.quote(_data_dir)} ]; then find {shlex.quote(_data_dir)} -mindepth 1 -delete; fi"],
                 _if=on_others)
    server.shell(name="Release Patroni on the other members", commands=["systemctl unmask --runtime patroni.service"],
                 _if=on_others)
    systemd.service(name="Start Patroni on the other members", service="patroni.service", running=True, _if=on_others)
    wait_cluster_healthy(name="Wait for one leader and streaming replicas", deadline=float(_deadline), _if=on_r)
    converge_archiving(host.data.secrets["patroni_rest_password"])
    server.shell(name="WAL of the new timeline reaches the repository (pgbackrest check)",
                 commands=[f"runuser -u postgres -- pgbackrest --stanza={shlex.quote(_stanza)} check"], _if=on_r)

