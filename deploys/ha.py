"""The main job: `pyinfra INVENTORY deploys/ha.py`.

1. refuse an invalid inventory before any operation (ooha/preflight.py);
2. converge each layer on the hosts of its group, in the order of ooha/stack.py
   (``--data layers=redis,endpoints`` converges a subset; base always runs);
3. validate the converged layers from facts at execute time and print the report
   (ooha/report.py), exiting non-zero on any failure.
"""

from pyinfra import host, inventory

from ooha.preflight import check_pyinfra_inventory
from ooha.ops.barrier import layer_converged
from ooha.stack import selected_layers
from ooha.report import report

# pyinfra runs this file once per host; the inventory is the same each time.
check_pyinfra_inventory(inventory)

_layers = selected_layers(host.data.get("layers"))
# host.loop() adds the layer's position to each operation's identity. pyinfra identifies an
# operation by the call stack's line numbers only (not file names), so without it two layer
# modules with an operation on the same line become ONE operation across hosts (seen:
# loadbalancer.py:433 and rabbitmq.py:433, "Cannot have different values for `_serial`").
#
# layer_converged() runs on EVERY host after each layer: pyinfra orders operations by a graph
# of each host's own call order, so operations of layers on disjoint groups interleave (seen:
# the Document Server container was created, and waited for its database, before the postgres
# layer on the data hosts had made that database). One operation shared by all hosts after
# each layer makes every host finish layer N before any host starts layer N+1.
for _layer in host.loop(_layers):
    if _layer.applies(host):
        _layer.deploy()()
    layer_converged(name=f"Layer {_layer.name} converged on every host", layer=_layer.name)

report(layers=[layer.name for layer in _layers])
