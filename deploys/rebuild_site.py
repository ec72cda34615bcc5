"""Rebuild the whole site from the inventory and S3: every host blank, the backups intact.

    pyinfra -y inventories/lab.py deploys/rebuild_site.py                  # latest state
    ... --data restore_target_time=2026-12-02T09:30:00Z                    # point in time
    ... --data restore_force=true     # rebuild although some hosts still hold data

The main job's layers in their order, with one difference: right after the data tier
(etcd, PostgreSQL, Redis, RabbitMQ) and before anything that uses it, the PostgreSQL
cluster the postgres layer has just bootstrapped empty is replaced by the backup's
(ooha/pgrestore.py ``restore_cluster``: restore on one member, the others clone from it).
Then the endpoints, the Document Server nodes (their per-node databases come back with
the restore; their files from the file backup when a snapshot exists), the load balancers
and the floating address, and the backup layer, which finds the stanza and goes on
archiving. Archiving: same repository, same stanza. The restored cluster keeps the backed-up
system identifier and is promoted onto a new timeline; WAL file names carry the timeline,
PostgreSQL picks a timeline higher than any history file in the archive, and pgBackRest
refuses to overwrite a WAL file with different contents: the history the restore came from
is never overwritten, and older points in time stay restorable from the same repository.

Refuses, after connecting and before any change, a site that is not blank (a host holding
etcd, PostgreSQL, RabbitMQ, Redis or Document Server data), unless --data
restore_force=true: a single lost host or AZ is rebuilt by the main job instead.
"""

import datetime as _dt

from pyinfra import host, inventory, state
from pyinfra.api import DeployError

from ooha.facts.base import DataPresent
from ooha.ops.barrier import layer_converged
from ooha.pgrestore import input_problems, parse_bool, parse_target_time, postgres_members, restore_cluster
from ooha.preflight import check_pyinfra_inventory
from ooha.report import report
from ooha.contract import CONTRACT_DEFAULTS
from ooha.layers.etcd import ETCD_DEFAULTS
from ooha.settings import setting
from ooha.stack import selected_layers

check_pyinfra_inventory(inventory)

SITE_DATA_PATHS: dict[str, tuple[str, ...]] = {
    # group: paths that hold the service's data on its hosts
    "etcd": ("{etcd_data_dir}/member",),
    "postgres": ("{postgres_data_dir}/PG_VERSION",),
    "rabbitmq": ("/var/lib/rabbitmq/mnesia",),
    "redis": ("/var/lib/redis/onlyoffice-ha.bootstrapped",),
    "docs": ("/var/lib/docker/volumes/onlyoffice-data/_data",),
}


def _paths(target) -> list[str]:
    """The data paths that must be absent on a blank ``target``."""
    values = {"etcd_data_dir": setting(target, "etcd_data_dir", ETCD_DEFAULTS),
              "postgres_data_dir": setting(target, "postgres_data_dir", CONTRACT_DEFAULTS)}
    return [path.format(**values) for group, paths in SITE_DATA_PATHS.items() if group in target.groups
            for path in paths]


def site_data() -> dict[str, list[str]]:
    """{host: paths holding data} for every connected host, read once per run (prepare time)."""
    cached = getattr(state, "_ooha_site_data", None)
    if cached is None:
        cached = {}
        for target in inventory:
            paths = _paths(target)
            if target in state.activated_hosts and paths:
                found = target.get_fact(DataPresent, paths=paths)
                if found:
                    cached[target.name] = found
        state._ooha_site_data = cached
    return cached


_now = _dt.datetime.now(_dt.timezone.utc)
_members = postgres_members()
if "postgres" in host.groups:
    _problems = input_problems(host, _now, _members)
    if _problems:
        raise DeployError("rebuild_site inputs are invalid, nothing was changed:\n" + "\n".join(_problems))
_target, _ = parse_target_time(host.data.get("restore_target_time"), _now)
_holding = site_data()
if _holding and not parse_bool(host.data.get("restore_force")):
    raise DeployError(
        "rebuild_site refused, nothing was changed: the site is not blank:\n"
        + "\n".join(f"{name}: site: holds data ({', '.join(paths)}); fix: rebuild single hosts or an AZ with "
                    "deploys/ha.py; pass --data restore_force=true only to replace the whole site with the backups"
                    for name, paths in sorted(_holding.items())))

_layers = selected_layers(None)
for _layer in host.loop(_layers):
    if _layer.name == "endpoints":
        # The data tier is up: replace the empty PostgreSQL cluster with the backup's
        # before anything (endpoints, Document Server) uses it.
        if "postgres" in host.groups:
            restore_cluster(target_time=_target, members=_members)
        layer_converged(name="PostgreSQL restored from the repository on every host", layer="restore")
    if _layer.applies(host):
        _layer.deploy()()
    layer_converged(name=f"Layer {_layer.name} converged on every host", layer=_layer.name)

report(layers=[layer.name for layer in _layers])
