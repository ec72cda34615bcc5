"""The rollout engine's I/O layer: everything that touches hosts, the cluster or the clock.

The pure core (``ooha/rollout/*.py``) decides; these modules observe and act:
``remote`` (run a command on a connected host), ``store`` (lock, journal and ledger in the
``ooha_ops`` database), ``nodestate`` (the load balancers' node table in Redis), ``observe``
(NodeView/ClusterView/soak samples from the live cluster), ``compat`` (the throwaway-container
compatibility gate) and ``driver`` (the phases, one pyinfra wave per unit).
"""
