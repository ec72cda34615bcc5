"""pyinfra configuration, loaded by the pyinfra CLI from the current directory.

pyinfra 3.10 runs this file with ``exec`` and throws its namespace away, so a bare
``SUDO = True`` here would be silently ignored: settings must be assigned on the
imported ``config`` object.  Run pyinfra from the repository root (the Makefile
and the README do) so that this file is found.
"""

from pyinfra import config

# The lab and production both log in as an unprivileged sudo user (root login over
# SSH is refused), and every layer manages system files and services.
config.SUDO = True

# One failed host stops the whole run: a half-applied HA change (one replica
# reconfigured, the others not) is worse than no change at all.
config.FAIL_PERCENT = 0

# Fail fast on a dead host instead of hanging a rolling change.
config.CONNECT_TIMEOUT = 15

# The pyinfra version these deploys were written and tested against.
config.REQUIRE_PYINFRA_VERSION = ">=3.10,<3.11"

# Preflight (ooha/preflight.py): once pyinfra has loaded the inventory with --data and
# group_data, and before it connects to anything, refuse every bad input at once, one
# line per problem naming host, field and fix.  OOHA_PREFLIGHT_ONLY=1 stops after it.
from ooha.preflight import install_cli_hook  # noqa: E402

install_cli_hook()
