# onlyoffice-ha: two entry points for a fresh Debian 12 machine (as root).
#   make lab    virtualenv + lab (Docker engine, images, hosts) + the main job on it
#   make test   virtualenv + the fast gate (unit + preflight CLI tests, no lab), then the
#               lab + the stand-in and integration tests; stops at the gate on a failure
# Helpers: make gate | deploy | validate | unit | bench | status | down

SHELL   := /bin/bash
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYINFRA := $(VENV)/bin/pyinfra
PYTEST  := $(VENV)/bin/pytest
STAMP   := $(VENV)/.installed-onlyoffice-ha

.PHONY: lab test gate deploy validate unit bench status down venv lab-up tools

lab: lab-up deploy

# make runs the gate first and stops there if it fails: no lab is built for a red gate.
test: gate lab-up
	$(PYTEST) --durations=30 tests/standin tests/integration

# The fast gate: no lab, no Docker; under two minutes on 2 cores.
gate: venv tools
	$(PYTEST) tests/unit tests/cli

venv: $(STAMP)

# Debian's python3 has no ensurepip without python3-venv; install it when missing.
$(STAMP): pyproject.toml
	@if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
		echo "--> installing python3-venv"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "onlyoffice-ha-checkout.pth").write_text("$(CURDIR)\n")'
	@touch $@

# The monitoring layer's tools (Debian 12): promtool (prometheus 2.42), amtool
# (prometheus-alertmanager 0.25), mtail 3.0 and the blackbox exporter 0.23 check its configs, alert
# rules, log program and probe modules in the gate (tests/unit/test_monitoring.py fails without
# them).  Only the tools are wanted here: the daemons the packages start are stopped.
# The firewall layer's checker, nft (nftables 1.0.6): tests/unit/test_firewall.py checks every rendered
# ruleset with `nft -c` in a throwaway network namespace and fails without it (Debian leaves the
# nftables service disabled: installing it changes no rule on this machine).
MONITORING_TOOLS := promtool amtool mtail prometheus-blackbox-exporter
tools:
	@missing=; for t in $(MONITORING_TOOLS); do command -v $$t >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "--> installing the monitoring tools (prometheus, prometheus-alertmanager, mtail, prometheus-blackbox-exporter)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager mtail prometheus-blackbox-exporter; \
		if [ -d /run/systemd/system ]; then \
			systemctl disable --now prometheus.service prometheus-alertmanager.service mtail.service \
				prometheus-blackbox-exporter.service; \
		fi; \
	fi
	@command -v nft >/dev/null 2>&1 || test -x /usr/sbin/nft || { echo "--> installing nftables (nft)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables; }

# Installs and starts the Docker engine if needed, builds the images, starts the lab
# (reuses a running one).
lab-up: venv
	$(PY) -m lab up

# The main job against the lab; ends with the validation report and the front door.
deploy: venv
	$(PYINFRA) -y inventories/lab.py deploys/ha.py

validate: venv
	$(PYINFRA) -y inventories/lab.py deploys/validate.py

unit: venv tools
	$(PYTEST) tests/unit

bench: venv
	$(PY) benchmarks/deploy_times.py
	$(PY) benchmarks/postgres_failover.py --runs 3
	$(PY) benchmarks/redis_failover.py --runs 3
	$(PY) benchmarks/frontdoor_failover.py --runs 3
	$(PY) benchmarks/ds_version_change.py --runs 3
	$(PY) benchmarks/rollout.py
	$(PY) benchmarks/filebackup_times.py --runs 3
	$(PY) benchmarks/pgbackrest_restore.py --scale 68
	$(PY) benchmarks/pgbackrest_rpo.py --runs 2
	$(PY) benchmarks/dr_rto.py
	$(PY) benchmarks/scale_out.py

status: venv
	$(PY) -m lab status

down: venv
	$(PY) -m lab down
