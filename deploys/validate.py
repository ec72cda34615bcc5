"""Validation only: `pyinfra INVENTORY deploys/validate.py` changes nothing on the hosts.

Runs the inventory check and the report of every layer the main job deploys (or of
``--data layers=...``), to see whether the hosts still match what ha.py converged
(e.g. after an incident).
"""

from pyinfra import host, inventory

from ooha.preflight import check_pyinfra_inventory
from ooha.stack import selected_layers
from ooha.report import report

check_pyinfra_inventory(inventory)

# The report's registry comes from the layer table (ooha/stack.py); the front-door line is
# printed only when the load balancer layer is among the selected ones.
report(layers=[layer.name for layer in selected_layers(host.data.get("layers"))])
