"""pyinfra inventory for the lab: `pyinfra inventories/lab.py deploys/ha.py`.

Reads the lab's state (``$OOHA_LAB_DIR`` or ``<repo>/.lab``, written by
``python -m lab up``) and its secrets file.  Host names are the lab's logical names
(lb1, ds1, data1...); ``ssh_hostname`` carries the address.  Host keys are checked
against the known_hosts file the lab wrote (never trust-on-first-use).
"""

from ooha.preflight import check_inventory_groups
from inventories.labstate import load_lab_groups

_groups = load_lab_groups()

# Every module-level list or (list, data) tuple is a pyinfra group.
all = _groups["all"]  # noqa: A001  (pyinfra's name for the group of every host)
lb = _groups["lb"]
docs = _groups["docs"]
postgres = _groups["postgres"]
etcd = _groups["etcd"]
redis = _groups["redis"]
rabbitmq = _groups["rabbitmq"]

# Stop here, before pyinfra connects to anything, if the lab's inventory is invalid.
check_inventory_groups(globals(), source="inventories/lab.py")
