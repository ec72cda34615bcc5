"""Rebuild the PostgreSQL cluster from the pgBackRest repository (S3).

    pyinfra -y inventories/lab.py deploys/restore.py                       # latest state
    pyinfra -y inventories/lab.py deploys/restore.py \\
        --data restore_target_time=2026-12-02T09:30:00Z                    # point in time
    ... --data restore_force=true     # overwrite a cluster that is still healthy
    ... --data restore_host=data2     # restore on this member first (it becomes leader)

Refuses, before touching any host, to overwrite a healthy cluster unless forced, and an
invalid target time.  Ends with one leader and streaming replicas, archiving to the
repository again.  The steps and why: ooha/pgrestore.py (``restore_cluster``, also used
by deploys/rebuild_site.py).
"""

import datetime as dt

from pyinfra import host, inventory
from pyinfra.api import DeployError

from ooha.facts.patroni import PatroniCluster
from ooha.layers.pgbackrest import setting
from ooha.pgrestore import (healthy_cluster_refusal, input_problems, parse_bool, parse_target_time,
                            postgres_members, restore_cluster)
from ooha.preflight import check_pyinfra_inventory
from ooha.report import report

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
    restore_cluster(target_time=_target, members=_members)

report(layers=["postgres", "backup"])
