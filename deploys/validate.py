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

_layers = selected_layers(host.data.get("layers"))
for _layer in _layers:
    _layer.deploy()  # importing a layer registers its check

report(layers=[layer.name for layer in _layers])
