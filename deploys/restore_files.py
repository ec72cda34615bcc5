"""Restore one host's files from its restic repository (ooha/layers/filebackup.py) into place.

    pyinfra -y inventories/lab.py deploys/restore_files.py --data restore_host=ds1
    ... --data restore_snapshot=1a2b3c4d               a snapshot ID (default: latest)
    ... --data restore_paths=/etc/onlyoffice-ha        only these absolute paths (comma-separated)

What it restores is that host's backup set (a DS host: the ``onlyoffice-data`` volume, which
is created first if missing, and /etc/onlyoffice-ha; a load balancer: /etc/nginx,
/etc/keepalived, /etc/onlyoffice-ha), to the same absolute paths: files in the snapshot are
written over the current ones; files created since are left alone.  Snapshots are listed
with ``sudo ooha-filebackup restic snapshots`` on the host.

A rebuilt (blank) Document Server host needs none of this: the main job restores its newest
snapshot before the container starts (ooha/layers/filebackup.py ``restore_if_blank``).
This command is for restoring into a host that has files (an older snapshot, one path).
On a running DS host, restart its container after restoring license or keys
(Document Server reads them at start).  Restore before the timer's next run
(``filebackup_on_calendar``) or give ``restore_snapshot``: a backup of the empty rebuilt
host would otherwise become "latest".
"""

from pyinfra import host, inventory
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server

from ooha.layers.filebackup import GROUPS, SCRIPT
from ooha.preflight import check_pyinfra_inventory, check_restore_files_job, hosts_from_pyinfra
from ooha.facts.filebackup import FileBackupStatus

check_pyinfra_inventory(inventory)

_target = str(host.data.get("restore_host") or "")
_snapshot = str(host.data.get("restore_snapshot") or "latest")
_paths = [p.strip() for p in str(host.data.get("restore_paths") or "").split(",") if p.strip()]

# The same rules ran in the preflight (config.py) before pyinfra connected; again here for
# runs without config.py.
_problems = check_restore_files_job(hosts_from_pyinfra(inventory), GROUPS)
if _problems:
    raise DeployError("restore_files inputs:\n" + "\n".join(p.line() for p in _problems))

if host.name == _target:
    if host.get_fact(FileBackupStatus) is None:
        raise DeployError(f"{host.name}: filebackup: {SCRIPT} is not installed; "
                          "fix: run the main job with --data layers=filebackup first")
    server.shell(
        name=f"Restore {host.name}'s files ({_snapshot}) into place",
        commands=[StringCommand(SCRIPT, "restore", QuoteString(_snapshot), *(QuoteString(p) for p in _paths))],
    )
