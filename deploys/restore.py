"""Rebuild the PostgreSQL cluster from the pgBackRest repository (S3).

    pyinfra -y inventories/lab.py deploys/restore.py                       # latest state
    pyinfra -y inventories/lab.py deploys/restore.py \\
        --data restore_target_time=2026-12-02T09:30:00Z                    # point in time
    ... --data restore_force=true     # overwrite a cluster that is still healthy
    ... --data restore_host=data2     # restore on this member first (it becomes leader)

Refuses, before touching any host, to overwrite a healthy cluster unless forced, and an
invalid target time.  Ends with one leader and streaming replicas, archiving to the
repository again.  The steps and why: ooha/pgrestore.py.
"""

import datetime as dt
import shlex

from pyinfra import host, inventory, state
from pyinfra.api import DeployError
from pyinfra.operations import files, server, systemd

from ooha.contract import postgres_bin_dir
from ooha.preflight import check_pyinfra_inventory
from ooha.layers.pgbackrest import converge_archiving, install_pgbackrest, setting
from ooha.pgrestore import (RESTORE_DEFAULTS, RESTORE_SCRIPT, healthy_cluster_refusal, input_problems,
                               leader_wait_command, parse_bool, parse_target_time, pg_time, postgres_members,
                               repository_can_restore,
                               restore_host_name, wait_cluster_healthy)
from ooha.report import report
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.patroni import PatroniCluster

check_pyinfra_inventory(inventory)

if "postgres" in host.groups:
    _now = dt.datetime.now(dt.timezone.utc)
    _members = postgres_members()
    _problems = input_problems(host, _now, _members)
    if _problems:
        raise DeployError("restore inputs are invalid, nothing was changed:\n" + "\n".join(_problems))
    _force = bool(parse_bool(host.data.get("restore_force")))
    _target, _ = parse_target_time(host.data.get("restore_target_time"), _now)
    _view = host.get_fact(PatroniCluster, address="127.0.0.1", port=int(setting(host, "patroni_rest_port")))
    _refusal = healthy_cluster_refusal(host, _view, _members)
    if _refusal and not _force:
        raise DeployError("restore refused, nothing was changed:\n" + _refusal)

    _is_r = host.name == restore_host_name(host, _members)
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
    _r_name = restore_host_name(host, _members)
    r_ok = (lambda name=_r_name: any(h.name == name for h in state.active_hosts))
    on_r = (lambda r=_is_r: r)
    on_others = (lambda r=_is_r: not r and r_ok())
    repository_can_restore(name="The repository can restore (checked before anything stops)",
                           stanza=_stanza, target_time=_target, _if=on_r)

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
    _mode = f"time {shlex.quote(pg_time(_target))}" if _target else "latest ''"
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

report(layers=["postgres", "backup"])
