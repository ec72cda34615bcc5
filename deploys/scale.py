"""Scale the Document Server tier in or out, one node, through the rollout engine.

    pyinfra -y inventories/lab.py deploys/scale.py --data ds_retire=ds3   # scale in (ds3 still in the inventory)
    # then remove ds3 from the inventory and run the main job: deploys/ha.py
    pyinfra -y inventories/lab.py deploys/scale.py --data ds_join=ds4     # scale out (ds4 added to the inventory)

Scale in: preflight (cluster healthy; the other nodes can carry its sessions), drain through the
load balancers (new documents elsewhere, open ones stay until their sessions end, bounded by
ds_drain_seconds), out of both LBs, THEN its container stops; recorded in the ledger.
Scale out: the node is announced out in the LBs' node states, the main job converges the whole
cluster (its database, vhost, container and both LBs' tables), its health gate (the inventory's
release, /healthcheck true, version), then it becomes active.  The main job alone refuses a DS
host added to or removed from the inventory that this command did not prepare.
Same lock, journal and ledger as deploys/patch.py (docs/architecture.md "Day-2 jobs").
"""

from ooha.rollout.live.scale import run_scale_from_deploy

run_scale_from_deploy()
