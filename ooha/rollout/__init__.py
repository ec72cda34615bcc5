"""The rollout engine's pure core (issue 11): every rolling day-2 job decides here.

Why a pure core: a rollout's decisions (which node first, may we go on, what to undo, may this
controller take the lock) must be right at 3 a.m. and on a resumed run, so they are functions
over plain data, unit-tested without a lab.  The I/O layer (``ooha/rollout/driver.py``, not yet
written) gathers observations with pyinfra facts, runs one pyinfra wave per unit, writes the
journal, ledger and lock to the cluster, and calls these functions between waves.  Nothing in
this package connects, reads a file or looks at the clock: ``now`` is always an argument.

Modules: ``release`` (image references), ``plan`` (wave order), ``journal`` (phase state machine,
resumable JSON), ``gates`` (preflight, capacity, compat, health, soak verdicts), ``ledger``
(release ledger records), ``lock`` (cluster lock records and staleness), ``drain`` (the load
balancers' node states and the routing rule the Lua must mirror), ``progress`` (terminal lines).
Design: docs/architecture.md, "Day-2 jobs: the rollout engine".
"""
