"""The main job: `pyinfra INVENTORY deploys/ha.py`.

1. refuse an invalid inventory before any operation (deploys/inventory_check.py);
2. converge each layer (for now: the base layer on every host);
3. validate every layer from facts at execute time and print the report
   (deploys/report.py), exiting non-zero on any failure.

Later issues add layers between 2 and 3; each registers its check with the report.
"""

from pyinfra import inventory

from deploys.base import base
from deploys.inventory_check import check_pyinfra_inventory
from deploys.report import report

# pyinfra runs this file once per host; the inventory is the same each time.
check_pyinfra_inventory(inventory)

base()

report()
