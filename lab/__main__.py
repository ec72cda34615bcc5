"""Entry point: python -m lab up|down|status|build|stop|start|reboot|destroy|recreate|cut|heal."""
import sys

from lab.cli import run

sys.exit(run(sys.argv[1:]))
