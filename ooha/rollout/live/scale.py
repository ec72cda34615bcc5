"""Scale the Document Server tier in or out through the rollout engine (deploys/scale.py).

Design: ooha/rollout/scale.py (the pure part) and docs/architecture.md "Day-2 jobs: the rollout
engine".  A ``ScaleDriver`` is the rollout ``Driver`` (lock, journal, ledger, node states, drain,
health gate, progress lines, Ctrl-C handling) with its own short phase list:

- scale-in:  preflight -> drain -> stop   (then: remove the host from the inventory, main job)
- scale-out: preflight -> join -> health -> return

Every phase is idempotent from its start, so an interrupted or failed scale is finished by
running the same command again (the open journal is superseded by the new run, recorded).
"""

from __future__ import annotations

import getpass
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ooha.rollout import gates, ledger, scale
from ooha.rollout.journal import Event, Phase, Status, new_journal
from ooha.rollout.live import remote
from ooha.rollout.live.driver import Context, Driver, Fleet, Stop, run_interruptibly
from ooha.rollout.options import RolloutOptions
from ooha.rollout.progress import elapsed_text
from ooha.rollout.release import ImageRef

PHASES = {
    "scale-in": (Phase.PREFLIGHT, Phase.DRAIN, Phase.STOP),
    "scale-out": (Phase.PREFLIGHT, Phase.JOIN, Phase.HEALTH, Phase.RETURN),
}

DROPPED = ("ds_retire", "ds_join")


def join_command(argv: list[str]) -> list[str]:
    """The main job's command line (whole inventory) from the operator's scale command line:
    deploys/scale.py -> deploys/ha.py, the scale and rollout keys dropped, ``-y`` added."""
    out: list[str] = [sys.executable, "-m", "pyinfra"]
    skip_next = False
    for i, arg in enumerate(argv):
        if i == 0:
            continue
        if skip_next:
            skip_next = False
            continue
        item = argv[i + 1] if arg == "--data" and i + 1 < len(argv) else arg[len("--data="):] if arg.startswith("--data=") else None
        if item is not None:
            key = item.split("=", 1)[0]
            if key in DROPPED or key.startswith("rollout_"):
                skip_next = arg == "--data"
                continue
        if arg.endswith("/scale.py") or arg == "scale.py":
            arg = str(Path(arg).with_name("ha.py"))
        out.append(arg)
    if "-y" not in out and "--yes" not in out:
        out.insert(3, "-y")
    return out


class ScaleDriver(Driver):
    """One scale-in or scale-out of one node, from preflight to its end."""

    def __init__(self, fleet: Fleet, ctx: Context, node: str) -> None:
        super().__init__(fleet, ctx)
        self.node = node

    # --- observations -----------------------------------------------------------------------

    def live_tables(self) -> dict[str, list[str] | None]:
        """LB -> the nodes of its deployed ooha_shard.lua (None: none deployed or unreadable)."""
        from ooha.layers.loadbalancer import CONF_DIR, LUA_MODULE

        tables = {}
        for lb in self.fleet.lbs:
            result = remote.run(lb, f"cat {remote.quote(f'{CONF_DIR}/{LUA_MODULE}')}")
            tables[lb.name] = scale.lua_nodes(result.stdout.splitlines()) if result.ok else None
        return tables

    def container_running(self) -> bool | None:
        from ooha.facts.documentserver import CONTAINER

        result = remote.run(self.fleet.doc(self.node), f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null || echo absent")
        return None if not result.ok else result.stdout.strip() == "true"

    def image(self) -> ImageRef:
        """The release the inventory names (what a joining node must run)."""
        data = self.fleet.doc(self.node).data
        return ImageRef(str(data.get("ds_image")), str(data.get("ds_version")), data.get("ds_image_digest") or None)

    def mark_lbs(self, change: str) -> None:
        """Write ``node -> change`` into every LB's scale marker file (read-modify-write)."""
        assert self.journal is not None
        path = remote.quote(scale.MARKER_FILE)
        for lb in self.fleet.lbs:
            current = remote.run(lb, f"cat {path} 2>/dev/null || true")
            text = scale.with_marker(scale.parse_markers(current.stdout if current.ok else ""), self.node, change,
                                     self.journal.rollout_id)
            result = remote.run(lb, f"install -d -m 755 $(dirname {path}) && cat > {path}.new && chmod 600 {path}.new && "
                                    f"mv {path}.new {path}", stdin=text)
            if not result.ok:
                raise Stop(f"{lb.name}: cannot write the scale marker {scale.MARKER_FILE}: {result.why()}")

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        problem = self.store.ready()
        if problem:
            self.say(f"refused: {problem}")
            return 1
        kind = self.ctx.kind
        previous_journal = self.store.open_journal()
        # A rerun of the same scale finishes it; ds_join of the node an unfinished scale-in was
        # retiring is that scale-in's undo (a scale-in started on the wrong node at 3 a.m.).
        same_node = previous_journal is not None and previous_journal.waves == [[self.node]]
        undoes = same_node and previous_journal.kind == "scale-in" and kind == "scale-out"
        if previous_journal is not None and not ((same_node and previous_journal.kind == kind) or undoes):
            self.say(f"refused: rollout {previous_journal.rollout_id} ({previous_journal.kind}) is unfinished at "
                     f"{','.join(previous_journal.current_nodes()) or 'cluster'} {previous_journal.phase.value}; "
                     "fix: rerun its own command to finish it first")
            return 1
        done = self.already_done()
        if done:
            self.say(f"nothing to do: {done}")
            return 0
        running = next((n.running for n in self.nodes() if n.name == self.node), None) if kind == "scale-in" else None
        target = running or self.image()
        journal = new_journal(self.new_id(), kind, target, [[self.node]], {self.node: target}, False,
                              f"{getpass.getuser()}@{socket.gethostname()}", time.time())
        self.say(f"{kind} of {self.node}: {' -> '.join(p.value for p in PHASES[kind])}")
        if not self.acquire(journal):
            return 1
        if previous_journal is not None:  # an interrupted or failed run of this same scale: start over
            previous_journal.status = Status.SUPERSEDED
            previous_journal.reason = (previous_journal.reason + "; " if previous_journal.reason else "") + \
                f"rerun as {journal.rollout_id}"
            self.store.save(previous_journal, self.token, time.time())
            self.save()
        return self.steps()

    def already_done(self) -> str | None:
        """Why there is nothing to do, or None (a second run of a finished scale changes nothing)."""
        states = self.states()
        tables = self.live_tables()
        if self.ctx.kind == "scale-in":
            if states.get(self.node) == "out" and self.container_running() is False:
                marked = all(scale.parse_markers(remote.run(lb, f"cat {remote.quote(scale.MARKER_FILE)} 2>/dev/null || true").stdout)
                             .get(self.node, {}).get("change") == scale.RETIRED for lb in self.fleet.lbs)
                if marked:
                    return (f"{self.node} is retired (out of the load balancers, container stopped); remove it from the "
                            "inventory, then run the main job")
            return None
        from ooha.rollout.live import observe

        running, health, version = observe.node_health(self.fleet.doc(self.node))
        ok = gates.health_gate(self.node, running, health, version, self.image()).ok
        if ok and states.get(self.node, "active") == "active" and all(t is not None and self.node in t for t in tables.values()):
            return f"{self.node} is in every load balancer's table, active and healthy on {self.image().version}"
        return None

    def steps(self) -> int:
        journal = self.journal
        assert journal is not None
        phases: dict[Phase, Callable[[], tuple[bool, str]]] = {
            Phase.PREFLIGHT: self.phase_scale_preflight, Phase.DRAIN: self.phase_drain, Phase.STOP: self.phase_stop,
            Phase.JOIN: self.phase_join, Phase.HEALTH: self.phase_health, Phase.RETURN: self.phase_join_return,
        }
        self.start_heartbeat()
        try:
            for phase in PHASES[journal.kind]:
                if self.ctx.interrupts:
                    return self.interrupted()
                journal.phase, journal.wave = phase, (-1 if phase is Phase.PREFLIGHT else 0)
                journal.phase_started = time.time()
                self.say("start")
                self.save()
                ok, detail = phases[phase]()
                if self.ctx.interrupts and not ok:
                    return self.interrupted()
                self.say(("OK " if ok else "FAILED: ") + detail)
                journal.events.append(Event(phase, journal.wave, journal.current_nodes(), journal.phase_started,
                                            time.time(), ok, detail))
                if not ok:
                    journal.reason = f"{phase.value} failed on {self.node}: {detail}"
                    journal.status = Status.REFUSED if phase is Phase.PREFLIGHT else Status.ABORTED
                    self.undo(phase)
                    self.save()
                    return self.finish()
            journal.phase, journal.status = Phase.END, Status.DONE
            self.save()
            return self.finish()
        except Exception as error:  # Stop, StoreError, LockLost, anything unexpected: leave it rerunnable
            self.say(f"stopped: {type(error).__name__}: {error}; rerun the same command to finish it")
            self.leave_resumable()
            return 1
        finally:
            self.stop_heartbeat()

    def undo(self, failed: Phase) -> None:
        """After a failed phase: a retiring node whose drain failed goes back to active; a node
        that failed to stop or to join stays out (never served) and the command says so."""
        if failed is Phase.DRAIN:
            problem = self.set_states([self.node], "active", only_from="draining")
            self.say(f"{self.node} back to active" if not problem else f"{self.node}: {problem}")
        elif failed in (Phase.STOP, Phase.JOIN, Phase.HEALTH, Phase.RETURN):
            state = self.states().get(self.node, "active")
            self.say(f"{self.node} stays {state} in the load balancers' node states; fix the cause, then rerun the same command")

    def finish(self) -> int:
        journal = self.journal
        assert journal is not None
        self.store.release(self.token)
        times = ", ".join(f"{e.phase.value} {e.ended - e.started:.0f}s" for e in journal.events)
        self.ctx.out(f"{journal.kind} {journal.rollout_id} of {self.node} {journal.status.value} in "
                     f"{elapsed_text(time.time() - self.ctx.started)}" + (f": {journal.reason}" if journal.reason else ""))
        self.ctx.out(f"phase times: {times}")
        cut = journal.flags.get("sessions_cut", {})
        if journal.kind == "scale-in":
            self.ctx.out(f"sessions ended by the drain bound: {sum(c for c in cut.values() if c > 0)}"
                         + ("; unknown" if any(c < 0 for c in cut.values()) else ""))
            if journal.status is Status.DONE:
                self.ctx.out(f"next: remove {self.node} from the inventory, then run the main job (deploys/ha.py)")
        return 0 if journal.status is Status.DONE else 1

    # --- phases -----------------------------------------------------------------------------

    def phase_scale_preflight(self) -> tuple[bool, str]:
        """The rollout preflight: the cluster healthy, and for scale-in the remaining nodes able to
        carry the retiring node's sessions (its capacity gate with the node as the wave)."""
        from ooha.rollout.live import observe

        excused = frozenset({self.node})
        if self.ctx.kind == "scale-in":
            nodes, waves = self.nodes(), [[self.node]]
        else:  # the joining node may have no Docker yet: observe the others only
            states = self.states()
            azs = self.fleet.azs()
            nodes = [observe.node_view(h, azs[h.name], states.get(h.name, "active")) for h in self.fleet.docs if h.name != self.node]
            waves = []
        cluster = observe.cluster_view(self.fleet.inventory)
        results = gates.preflight(nodes, cluster, waves, self.ctx.options.limits(), time.time(), excused)
        for result in results:
            for line in result.lines():
                self.ctx.out(f"    {line}")
        problems = gates.problems_of(results)
        return (not problems, "; ".join(problems) if problems else f"{len(results)} gates OK")

    def phase_stop(self) -> tuple[bool, str]:
        """Out of both LBs (the node-state hash), THEN the container stops (its restart policy
        ``unless-stopped`` keeps a stopped container stopped across reboots; the self-healing
        timer never starts a stopped one); markers on the node and the LBs; the ledger row dropped."""
        from ooha.facts.documentserver import CONTAINER
        from ooha.layers.documentserver import DS_DEFAULTS

        assert self.journal is not None
        failed = self.set_states([self.node], "out")
        if failed:
            return False, failed
        doc = self.fleet.doc(self.node)
        grace = int(doc.data.get("ds_stop_grace_seconds") or DS_DEFAULTS["ds_stop_grace_seconds"])
        c = remote.quote(CONTAINER)
        marker = remote.quote(scale.NODE_MARKER_FILE)
        text = f'{{"rollout_id": "{self.journal.rollout_id}"}}\n'
        result = remote.run(doc, f"if docker inspect {c} >/dev/null 2>&1; then docker stop -t {grace} {c} >/dev/null; fi && "
                                 f"install -d -m 700 $(dirname {marker}) && "
                                 f"cat > {marker}", stdin=text, timeout=grace + 120)
        if not result.ok:
            return False, f"{self.node}: cannot stop the container: {result.why()}"
        self.mark_lbs(scale.RETIRED)
        self.store.drop_releases([self.node], self.token)
        return True, f"out of the load balancers, container {CONTAINER} stopped, ledger row dropped"

    def phase_join(self) -> tuple[bool, str]:
        """Announce a node no LB routes to ``out``; clear a retirement and a release left by an
        earlier life (the node takes the inventory's release); mark every LB joining; then the
        main job on the whole inventory.

        A node an LB already routes to keeps its state: ``active``/``draining`` means editors may
        be on it, and taking it out here would cut them without a drain (an interrupted scale-in
        being undone, or a join of a serving node: the main job and the health gate still run).
        """
        from ooha.layers.documentserver import RELEASE_FILE
        from ooha.rollout.live import nodestate

        tables = self.live_tables()
        routed = [lb for lb, t in tables.items() if t is not None and self.node in t]
        if routed:
            self.say(f"{self.node} is already in the table of {', '.join(routed)} "
                     f"({self.states().get(self.node, 'active')}): its state is kept")
        else:
            self.on_redis(lambda host: nodestate.announce_out(host, self.state_key, self.node))
            time.sleep(self.cache_ms * 2 / 1000)  # the LBs' node-state cache (no LB routes to it yet)
        result = remote.run(self.fleet.doc(self.node),
                            f"rm -f {remote.quote(scale.NODE_MARKER_FILE)} {remote.quote(RELEASE_FILE)}")
        if not result.ok:
            return False, f"{self.node}: cannot clear its retirement marker and old release: {result.why()}"
        self.mark_lbs(scale.JOINING)
        return self.run_main_job(join_command(self.ctx.argv), [self.node], self.image().version)

    def phase_join_return(self) -> tuple[bool, str]:
        from ooha.rollout.live import observe

        assert self.journal is not None
        failed = self.set_states([self.node], "active")
        if failed:
            return False, failed
        running, _, _ = observe.node_health(self.fleet.doc(self.node))
        current = {r.node: r for r in self.store.releases()}
        if running is not None:
            self.store.put_releases([ledger.node_changed(current.get(self.node), self.node, running, time.time(),
                                                         self.journal.rollout_id, True)], self.token)
        return True, "active in the load balancers' table"


def run_scale(inventory: Any, kind: str, node: str, options: RolloutOptions, argv: list[str] | None = None,
              out: Callable[[str], None] | None = None) -> int:
    """Run one scale-in/out to its end; the command's exit status (0 done or nothing to do)."""
    ctx = Context(kind, None, options, list(argv if argv is not None else sys.argv),
                  out or (lambda line: print(line, flush=True)))
    driver = ScaleDriver(Fleet.of(inventory), ctx, node)
    return run_interruptibly(driver, ctx)


def run_scale_from_deploy() -> None:
    """Body of deploys/scale.py: validate the request, run it once per CLI run, exit with its status."""
    from pyinfra import host, inventory, state

    from ooha.rollout.options import option_problems, rollout_options

    if getattr(state, "_ooha_rollout_status", None) is not None:
        return
    state._ooha_rollout_status = "running"
    argv = list(sys.argv)
    docs = [h.name for h in inventory.get_group("docs")] if "docs" in inventory.groups else []
    problems = [a.split("=", 1)[0] + ": a scale changes one named node through its own phases (no dry run, no limit); "
                "fix: run it without it" for a in argv if a.split("=", 1)[0] in ("--dry", "--limit", "--exclude")]
    problems += scale.scale_problems(host.data, docs) + option_problems(host.data)
    if problems:
        print("refused (nothing was changed):\n" + "\n".join(f"  {p}" for p in problems), flush=True)
        sys.exit(1)
    kind, node = scale.scale_request(host.data)
    status = run_scale(inventory, kind, node, rollout_options(host.data), argv)
    state._ooha_rollout_status = status
    if status != 0:
        sys.exit(status)
