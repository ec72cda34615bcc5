"""Validation only: `pyinfra INVENTORY deploys/validate.py` changes nothing on the hosts.

Runs the inventory check and the report of every layer the main job deploys, to see
whether the hosts still match what ha.py converged (e.g. after an incident).
"""

from pyinfra import inventory

import deploys.base  # noqa: F401  (registers the base layer's check)
from deploys.inventory_check import check_pyinfra_inventory
from deploys.report import report

check_pyinfra_inventory(inventory)

report()
