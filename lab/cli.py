"""`python -m lab ...`: the lab's command line. Every error is one line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import os
import sys

from lab import aptrepo, core, engine, faults, lifecycle, reboot, topology
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
    r = sub.add_parser("reboot", help="`systemctl reboot` inside a host (it comes back like a VM)")
    r.add_argument("host")
    r.add_argument("--wait", action="store_true", help="return once it booted again and sshd answers (prints the time)")
    sub.add_parser("apt-repo", help="build and serve the lab apt repository on svc1 (what `up` does for it)")
    c = sub.add_parser("canary", help=f"add the lab apt source to hosts and install {aptrepo.PACKAGE} (or remove both)")
    c.add_argument("hosts", nargs="+", metavar="HOST")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--version", help=f"install this version ({', '.join(v.version for v in aptrepo.VERSIONS)})")
    how.add_argument("--remove", action="store_true", help="purge the package, remove the source and its key")
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
        elif args.command == "reboot":
            topo.host(args.host)  # an unknown host is refused before the engine is asked
            took = reboot.reboot(engine.client(), topo, args.host, wait=args.wait)
            _say(f"{args.host} rebooted; sshd answers with its recorded host key ({took:.1f}s)" if took is not None
                 else f"{args.host} is rebooting (`systemctl reboot` inside)")
        elif args.command == "apt-repo":
            svc = aptrepo.services_host(topo)
            changed = aptrepo.publish(engine.client().containers.get(svc.container), _say)
            _say(f"lab apt repository {'updated' if changed else 'already served'} on {svc.name}: "
                 f"{aptrepo.source_line(svc.address)}")
        elif args.command == "canary":
            aptrepo.check_version(args.version)
            for name in args.hosts:
                topo.host(name)  # unknown hosts are refused before the engine is asked
            for line in aptrepo.canary(engine.client(), topo, args.hosts, args.version, args.remove):
                _say(line)
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
