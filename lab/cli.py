"""`python -m lab ...`: the lab's command line. Every error is one line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import os
import sys

from lab import core, engine, faults, lifecycle, topology
from lab.errors import LabError


def _say(message: str) -> None:
    print(message, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description="The multi-AZ lab of systemd+sshd hosts.")
    p.add_argument("--topology", default=os.environ.get("OOHA_LAB_TOPOLOGY", str(topology.DEFAULT_TOPOLOGY)),
                   help="topology file (default lab/topology.yml)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build images if needed, create/start hosts and services (reuses a running lab)")
    d = sub.add_parser("down", help="remove the lab's containers, networks, volumes and iptables rules")
    d.add_argument("--purge", action="store_true", help="also delete the state directory (.lab/)")
    s = sub.add_parser("status", help="show hosts and services")
    s.add_argument("--json", action="store_true", help="print the contract's JSON (also in .lab/state.json)")
    sub.add_parser("build", help="build the lab images only")
    for name, text in (("stop", "stop a host (systemd shuts down)"), ("start", "start a host and wait for sshd")):
        sub.add_parser(name, help=text).add_argument("host")
    for name, text in (("destroy", "remove hosts like lost VMs: container, /var/lib/docker volume, known_hosts line"),
                       ("recreate", "replace hosts by blank ones (same name and addresses, new host keys)")):
        lose = sub.add_parser(name, help=text)
        lose.add_argument("hosts", nargs="*", metavar="HOST", help="lab hosts (not the services host)")
        lose.add_argument("--az", help="every host of this AZ instead of named hosts")
        if name == "recreate":
            lose.add_argument("--address", help="the one named host comes back at this address of its AZ (a "
                                                "replacement at a new address); its topology address puts it back")
    sub.add_parser("cut", help="cut an AZ off from every other lab address").add_argument("az")
    sub.add_parser("heal", help="remove the cut of an AZ (all AZs if none given)").add_argument("az", nargs="?")
    return p


def run(argv: list[str]) -> int:
    """Dispatch a command; LabError/TopologyError become one line on stderr and exit 1."""
    args = _parser().parse_args(argv)
    try:
        # The topology file with the address moves `recreate --address` recorded: the lab as it is.
        topo = lifecycle.lab_topology(args.topology)
        if args.command == "up":
            core.up(topo, _say)
        elif args.command == "down":
            core.down(_say, purge=args.purge)
        elif args.command == "build":
            core.build(_say)
        elif args.command == "status":
            result = core.status(topo)
            print(json.dumps(result, indent=2) if args.json
                  else core.status_table(result, faults.cut_azs()) + lifecycle.moves_note())
        elif args.command == "stop":
            cli = engine.client()
            _say(f"stopped {args.host}" if faults.stop(cli, topo, args.host) else f"{args.host} was already stopped")
        elif args.command == "start":
            cli = engine.client()
            _say(f"started {args.host}; sshd answers" if faults.start(cli, topo, args.host)
                 else f"{args.host} was already running; sshd answers")
        elif args.command == "destroy":
            lifecycle.destroy(topo, args.hosts, args.az, _say)
        elif args.command == "recreate":
            lifecycle.recreate(topo, args.hosts, args.az, _say, address=args.address)
        elif args.command == "cut":
            _say(f"cut {args.az} off from the other AZs" if faults.cut(topo, args.az) else f"{args.az} was already cut (rules renewed)")
        elif args.command == "heal":
            healed = faults.heal(topo, args.az)
            _say(f"healed {', '.join(healed)}" if healed else "nothing was cut")
    except (LabError, topology.TopologyError) as exc:
        print(f"lab {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lab {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
