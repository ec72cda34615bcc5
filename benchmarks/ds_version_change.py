"""One Document Server node changed to another version and back, measured from outside.

Each run: `pyinfra --limit ds1 --data ds_version=<other>` (the documentserver layer only), then
the same back to the inventory's version.  While each deploy runs, this machine probes
GET /healthcheck on every DS node every 0.2 s.  Prints per change the deploy's wall time, the
changed node's window without a `true` health answer, and the failed probes on the OTHER nodes
(the per-node design says: 0), then the medians.  Needs a converged lab; takes the lab's
exclusive lock:

    .venv/bin/python benchmarks/ds_version_change.py [--runs 3] [--node ds1] [--to 9.3.1.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import requests

from lab.client import lab_lock, lab_state, run_pyinfra

DOCS = ("ds1", "ds2", "ds3")


class Prober(threading.Thread):
    """Probes /healthcheck of each node until stopped; records (time, node, ok)."""

    def __init__(self, addresses: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        self.samples: list[tuple[float, str, bool]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            for node, address in self.addresses.items():
                try:
                    ok = session.get(f"http://{address}/healthcheck", timeout=1).text.strip() == "true"
                except requests.RequestException:
                    ok = False
                self.samples.append((time.monotonic(), node, ok))
            time.sleep(0.2)

    def window(self, node: str) -> float:
        """Longest stretch of failed probes of ``node`` (first failure to next success)."""
        longest, start = 0.0, None
        for at, name, ok in self.samples:
            if name != node:
                continue
            if not ok and start is None:
                start = at
            elif ok and start is not None:
                longest, start = max(longest, at - start), None
        if start is not None:
            longest = max(longest, self.samples[-1][0] - start)
        return longest

    def failures(self, node: str) -> int:
        return sum(1 for _, name, ok in self.samples if name == node and not ok)


def change(node: str, extra: list[str], addresses: dict[str, str]) -> tuple[float, float, int]:
    """One deploy of ``node``; (deploy seconds, node window seconds, failed probes on the others)."""
    prober = Prober(addresses)
    prober.start()
    started = time.monotonic()
    result = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", "--limit", node,
                         "--data", "layers=documentserver", "--data", "ds_release_change=benchmark", *extra, timeout=900)
    took = time.monotonic() - started
    prober.stop_event.set()
    prober.join()
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{(result.stdout + result.stderr)[-3000:]}")
    others = sum(prober.failures(n) for n in addresses if n != node)
    return took, prober.window(node), others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--node", default="ds1")
    parser.add_argument("--to", default="9.3.1.2")
    args = parser.parse_args()
    state = lab_state()
    addresses = {h["name"]: h["address"] for h in state["hosts"] if h["name"] in DOCS}
    rows: dict[str, list[tuple[float, float, int]]] = {"upgrade": [], "rollback": []}
    with lab_lock(exclusive=True):
        for number in range(1, args.runs + 1):
            for label, extra in (("upgrade", ["--data", f"ds_version={args.to}"]), ("rollback", [])):
                took, window, others = change(args.node, extra, addresses)
                rows[label].append((took, window, others))
                print(f"run {number} {label:<8} {args.node}: deploy {took:.1f} s, {args.node} without healthy answer "
                      f"{window:.1f} s, failed probes on the other nodes {others}", flush=True)
    for label, values in rows.items():
        print(f"median {label:<8}: deploy {statistics.median(v[0] for v in values):.1f} s, node window "
              f"{statistics.median(v[1] for v in values):.1f} s, other nodes' failed probes {sum(v[2] for v in values)} "
              f"(over {len(values)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
