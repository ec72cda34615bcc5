"""Roll every Document Server node to a new release: one node at a time, drained, gated, undone on failure.

    pyinfra -y inventories/lab.py deploys/patch.py --data ds_version=9.3.1.2
    ... --data ds_image_digest=sha256:<64 hex>     # pin the exact image
    ... --data rollout_soak_seconds=120             # longer canary soak (keys: ooha/rollout/options.py)
    ... --data rollout_break_lock=<rollout id>      # break a STALE lock the refusal named

Without --data ds_version the inventory's ds_version is the target (edit it, then run this).
What it does (docs/architecture.md "Day-2 jobs: the rollout engine"): a preflight of the whole
cluster and the rollout lock; the compatibility gate (the new image as a throwaway container on
scratch database, vhost and Redis prefix); then the canary (the node with the fewest editing
sessions), the rest of its AZ, then the other AZs, one wave at a time: drain through the load
balancers, replace with the main job, health, back into the table, soak under real traffic.
Any failed gate puts the wave back on its previous image and stops (exit 1). Interrupted
(Ctrl-C, a lost controller): the same command resumes from the journal kept in the cluster.
Everything is recorded in the release ledger (database ooha_ops); a second run changes nothing.
"""

from ooha.rollout.live.driver import run_from_deploy

run_from_deploy("patch")
