"""Return the Document Server fleet to its previous release, through the same gates as a patch.

    pyinfra -y inventories/lab.py deploys/rollback.py                        # the ledger's previous release
    pyinfra -y inventories/lab.py deploys/rollback.py --data ds_version=9.3.0.1

The previous release is read from the release ledger in the cluster (database ooha_ops): the
release the nodes on the newest one ran before it. The compatibility gate is skipped only for an
image the ledger records as having run healthy here. An unfinished patch is superseded (recorded)
and the rollback plans from what every node runs now. Same waves, drain, health, soak and
automatic revert as deploys/patch.py; exit 0 when the fleet is on that release.
"""

from ooha.rollout.live.driver import run_from_deploy

run_from_deploy("rollback")
