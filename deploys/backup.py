"""On-demand backup of the PostgreSQL cluster into the pgBackRest repository.

    pyinfra -y inventories/lab.py deploys/backup.py                        # full backup
    pyinfra -y inventories/lab.py deploys/backup.py --data backup_type=diff

Runs the backup layer's script on every PostgreSQL member; only the Patroni leader backs
up (the same script the timers run), then prints the backup report (age and size of the
last full and differential backup, archiving).  Needs the backup layer deployed.
"""

from pyinfra import host, inventory
from pyinfra.api import DeployError
from pyinfra.operations import server

from ooha.preflight import BACKUP_TYPES, check_pyinfra_inventory
from ooha.layers.pgbackrest import BACKUP_SCRIPT
from ooha.report import report

check_pyinfra_inventory(inventory)

_kind = str(host.data.get("backup_type") or "full")
if _kind not in BACKUP_TYPES:
    raise DeployError(f"{host.name}: backup_type: {_kind!r} is not one of {', '.join(BACKUP_TYPES)}; "
                      "fix: --data backup_type=full (or diff, incr)")

if "postgres" in host.groups:
    server.shell(name=f"pgBackRest {_kind} backup (on the Patroni leader; replicas do nothing)",
                 commands=[f"{BACKUP_SCRIPT} {_kind}"])

report(layers=["backup"])
