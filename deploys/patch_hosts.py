"""Patch the OS packages of every host, one host at a time, in the order each tier needs, and reboot when needed.

    pyinfra -y inventories/lab.py deploys/patch_hosts.py                               # every pending update
    ... --data patch_packages=openssl,libssl3          # only these packages (names or globs, comma-separated)
    ... --data patch_reboot=auto|always|never          # auto (default): when /run/reboot-required or needrestart says so
    ... --data rollout_break_lock=<run id>             # break a STALE lock the refusal named

What it does (docs/architecture.md "Day-2 jobs: host patching"): observes every host (apt-get update,
pending updates after the patch_packages filter, whether a reboot is needed, the roles it holds),
plans the order (the LB not holding the floating address, the DS hosts drained like the DS rollout,
the data hosts replicas first and the Patroni leader last, the VIP holder last), and refuses with
one line per problem before any change: the DS rollout's cluster gates (Patroni, etcd, Sentinel,
RabbitMQ, backup age, DS nodes) plus enough disk, apt sources reachable (the apt proxy when set)
and no host needing manual attention.  Then, under the rollout lock and with the journal in the
cluster, each host in turn: its roles moved away on purpose (Patroni switchover to the sync standby,
Sentinel failover, queues synchronised, the VIP handed over, the DS node drained), the upgrade,
the reboot, and every role checked back before the next host.  A failed step stops the run there
(the host's temporary moves undone where safe, exit 1, nothing else touched); the same command
resumes it from the journal, as after a Ctrl-C.  Each host gets /var/lib/onlyoffice-ha/patch-last.json
(the validation report's "last patch run").  A second run plans nothing and changes nothing.
"""

from ooha.rollout.live.hostdriver import run_patch_hosts_from_deploy

run_patch_hosts_from_deploy()
