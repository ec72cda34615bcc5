"""The rollout driver: runs a Document Server patch or rollback, one wave at a time, with gates.

Design: docs/architecture.md "Day-2 jobs: the rollout engine".  In short: the operator command
(deploys/patch.py, deploys/rollback.py) calls :func:`run_rollout` once, inside the pyinfra CLI
with every inventory host connected.  The driver observes the cluster (``observe``), takes the
lock and writes the journal and the release ledger in the cluster (``store``), drains through
the load balancers' node table (``nodestate``), runs the compatibility gate (``compat``) and
replaces each wave with the main job itself (``pyinfra ... deploys/ha.py --limit <node>
--data layers=documentserver``, a subprocess: the same code path as a converge, and a failure
boundary that is an exit code).  Every decision is the pure core's (``ooha/rollout/*.py``).

Ctrl-C / SIGTERM: the running phase finishes (a wave's subprocess runs in its own session, so
the terminal's Ctrl-C does not reach it; a second Ctrl-C kills it), the journal is marked
interrupted, the lock released; the same command resumes from the journal.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets as _secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ooha.rollout import gates, ledger, lock as lk
from ooha.rollout.drain import settle_seconds
from ooha.rollout.live import remote
from ooha.rollout.live.store import Store, StoreError
from ooha.rollout.journal import Journal, Phase, Status, decide_start, interrupt, new_journal, record, resume
from ooha.rollout.ledger import NodeRelease
from ooha.rollout.options import RolloutOptions
from ooha.rollout.plan import NodeView, plan_rollout
from ooha.rollout.progress import elapsed_text, progress_line
from ooha.rollout.release import ImageRef

RECORD_DIR = Path(".ooha/rollouts")
"""Controller copy of every journal (the cluster's copy is the one that counts)."""

WAVE_TIMEOUT_S = 1800
"""A replace wave that runs longer is killed and counts as failed."""

PROGRESS_EVERY_S = 10.0


class Stop(Exception):
    """The rollout cannot go on (lock lost, store unreachable): journal left open for a resume."""


@dataclass
class Fleet:
    """The inventory's hosts by role (connected pyinfra Hosts) and what the driver needs of them."""

    inventory: Any
    docs: list[Any]
    lbs: list[Any]
    postgres: list[Any]
    redis: list[Any]
    rabbitmq: list[Any]

    @classmethod
    def of(cls, inventory: Any) -> "Fleet":
        def group(name: str) -> list[Any]:
            return list(inventory.get_group(name)) if name in inventory.groups else []
        return cls(inventory, group("docs"), group("lb"), group("postgres"), group("redis"), group("rabbitmq"))

    def doc(self, name: str) -> Any:
        return next(h for h in self.docs if h.name == name)

    def azs(self) -> dict[str, str]:
        return {h.name: str(h.data.get("az") or "?") for h in self.docs}

    def data(self) -> Any:
        return self.docs[0].data


@dataclass
class Context:
    """One invocation: what was asked, with which options, printing where."""

    kind: str  # "patch" | "rollback"
    wanted: ImageRef | None  # None: rollback to the ledger's previous release
    options: RolloutOptions
    argv: list[str]
    out: Callable[[str], None] = print
    started: float = field(default_factory=time.time)
    interrupts: int = 0
    child: subprocess.Popen | None = None


class Driver:
    """One rollout from preflight to its end (or to an interruption)."""

    JOB = "rollout"
    """What the interruption message tells the operator to resume (subclasses name their job)."""

    def __init__(self, fleet: Fleet, ctx: Context) -> None:
        self.fleet = fleet
        self.ctx = ctx
        self.store = Store(fleet.postgres)
        data = fleet.data()
        from ooha.layers.loadbalancer import node_state_settings

        # the LBs' own settings (their group's data is what the Lua was rendered from)
        self.state_key, self.cache_ms = node_state_settings(fleet.lbs[0] if fleet.lbs else fleet.docs[0])
        self.drain_seconds = int(data.get("ds_drain_seconds") if data.get("ds_drain_seconds") is not None else 60)
        self.token = _secrets.token_hex(16)
        self.journal: Journal | None = None
        self.last_beat = 0.0
        self.lost: lk.LockLost | None = None
        self.heartbeat: Any = None

    # --- output -----------------------------------------------------------------------------

    def say(self, detail: str = "") -> None:
        if self.journal is None:
            self.ctx.out(f"[{elapsed_text(time.time() - self.ctx.started):>7}] {detail}")
        else:
            self.ctx.out(progress_line(self.journal, self.ctx.started, time.time(), self.fleet.azs(), detail))

    # --- observations -----------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        from ooha.rollout.live import nodestate

        return self.on_redis(lambda host: nodestate.read_states(host, self.state_key))

    def nodes(self) -> list[NodeView]:
        from ooha.rollout.live import observe

        states = self.states()
        azs = self.fleet.azs()
        return [observe.node_view(h, azs[h.name], states.get(h.name, "active")) for h in self.fleet.docs]

    def set_state(self, node: str, wanted: str) -> None:
        """Move ``node`` to ``wanted`` through allowed transitions, then let every LB worker see it."""
        from ooha.rollout.live import nodestate

        try:
            changed = nodestate.move_state(self.fleet.redis, self.state_key, node, wanted)
        except nodestate.NodeStateError as error:
            raise Stop(str(error)) from error
        if changed:
            time.sleep(settle_seconds(self.cache_ms))

    def set_states(self, nodes: tuple[str, ...] | list[str], wanted: str, only_from: str | None = None) -> str | None:
        """``set_state`` for each node (only those now ``only_from`` when given); the failure as
        text (the phase then fails and the journal's transition table decides), else None."""
        try:
            for node in nodes:
                if only_from is None or self.states().get(node, "active") == only_from:
                    self.set_state(node, wanted)
        except Exception as error:
            return f"node state not writable: {error}"
        return None

    def on_redis(self, action: Callable[[Any], Any]) -> Any:
        """``action(host)`` on the first redis host where it succeeds (a lost data host is not a stop)."""
        from ooha.rollout.live import nodestate

        try:
            return nodestate.first(self.fleet.redis, action)
        except nodestate.NodeStateError as error:
            raise Stop(str(error)) from error

    # --- cluster store ----------------------------------------------------------------------

    def beat(self, force: bool = False) -> None:
        """Raise LockLost when the heartbeat found the lock taken over (checked at every wait step).

        The heartbeat itself runs in a greenlet (``start_heartbeat``) so a long phase (a pull
        in the compat gate, a slow wave) never lets the lock look stale; a store error there is
        retried on the next tick, only a lost lock is fatal.
        """
        if self.lost is not None:
            raise self.lost
        if force:
            assert self.journal is not None
            self.store.heartbeat(self.token, self.journal.phase.value, time.time())
            self.last_beat = time.time()

    def start_heartbeat(self) -> None:
        import gevent

        def run() -> None:
            every = self.ctx.options.rollout_lock_heartbeat_seconds
            warned = False
            while self.journal is not None and self.lost is None:
                gevent.sleep(max(1.0, every - (time.time() - self.last_beat)))
                if time.time() - self.last_beat < every or self.journal is None:
                    continue
                try:
                    self.store.heartbeat(self.token, self.journal.phase.value, time.time())
                    self.last_beat = time.time()
                except lk.LockLost as error:
                    self.lost = error
                except Exception as error:  # a failover, an SSH hiccup: retried on the next tick
                    if not warned:
                        self.say(f"heartbeat failed ({error}); retrying")
                        warned = True

        self.heartbeat = gevent.spawn(run)

    def stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.kill(block=False)
            self.heartbeat = None

    def save(self) -> None:
        assert self.journal is not None
        now = time.time()
        self.store.save(self.journal, self.token, now)
        self.last_beat = now
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        (RECORD_DIR / f"{self.journal.rollout_id}.json").write_text(self.journal.to_json() + "\n")

    def wait(self, seconds: float) -> None:
        """Sleep in small steps, heartbeating; an interruption ends the wait early."""
        end = time.time() + seconds
        while time.time() < end and not self.ctx.interrupts:
            time.sleep(min(1.0, max(0.0, end - time.time())))
            self.beat()

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        problem = self.store.ready()
        if problem:
            self.say(f"refused: {problem}")
            return 1
        nodes = self.nodes()
        rows = self.store.releases()
        target = self.target(rows)
        if target is None:
            return 1
        decision = decide_start(self.store.open_journal(), self.ctx.kind, target)
        if decision.action == "refuse":
            self.say(f"refused: {decision.message}")
            return 1
        if decision.action == "resume":
            journal = self.store.open_journal()
            assert journal is not None
            self.say(decision.message)
            return self.resume(journal, nodes)
        superseded = self.store.open_journal() if decision.action == "supersede" else None
        planned = plan_rollout(nodes, target, self.ctx.options.rollout_max_per_wave)
        if planned.empty:
            self.say(f"nothing to do: every node runs {target} and is active "
                     f"({', '.join(planned.skipped) or 'no nodes'})")
            return 0
        compat = self.compat_needed(target, rows)
        previous = {n.name: n.running for n in nodes if n.running is not None}
        journal = new_journal(self.new_id(), self.ctx.kind, target, planned.waves, previous, compat,
                              f"{getpass.getuser()}@{socket.gethostname()}", time.time())
        journal.flags["before"] = {r.node: r.to_dict() for r in rows}
        if not self.ctx.options.rollout_compat:
            journal.flags["compat_forced_off"] = True
        self.say(f"{self.ctx.kind} to {target}: waves {' -> '.join(','.join(w) for w in journal.waves)}"
                 f" (canary {journal.waves[0][0]}); compat gate {'on' if compat else 'skipped'}")
        if not self.acquire(journal):
            return 1
        if superseded is not None:
            # its wave's nodes may be draining, out or sick on its image: this rollout repairs them
            journal.flags["in_flight"] = list(superseded.current_nodes())
            superseded.status = Status.SUPERSEDED
            superseded.reason = (superseded.reason + "; " if superseded.reason else "") + f"superseded by {journal.rollout_id}"
            self.store.save(superseded, self.token, time.time())
            self.save()  # the lock row names this rollout's phase again
        self.first_sightings(nodes, rows)
        return self.loop()

    def target(self, rows: list[NodeRelease]) -> ImageRef | None:
        """The release to go to: the one asked for; for a rollback without ``ds_version``, an
        open rollback's own target (a rerun resumes it, never reverses it), else the target of
        the newest finished rollback when it was the newest finished rollout (nothing to undo:
        the plan then finds every node on it), else the ledger's previous release."""
        if self.ctx.wanted is not None:
            return self.ctx.wanted
        open_journal = self.store.open_journal()
        if open_journal is not None and open_journal.kind == "rollback":
            return open_journal.target
        finished = [r for r in self.store.records() if r.outcome == Status.DONE.value and r.kind in ("patch", "rollback")]
        if finished and finished[0].kind == "rollback":
            return finished[0].target
        found = ledger.rollback_target(rows)
        if found.target is None:
            self.say(f"refused: {found.problem}")
        return found.target

    def compat_needed(self, target: ImageRef, rows: list[NodeRelease]) -> bool:
        if not self.ctx.options.rollout_compat:
            return False
        verified = ledger.verified_images(rows, self.store.records())
        if self.ctx.kind == "rollback" and any(ref == target.ref or (target.digest is None and ref.split("@")[0] == target.ref)
                                               for ref in verified):
            return False
        return True

    def new_id(self) -> str:
        return time.strftime("r%Y%m%d-%H%M%S", time.gmtime()) + "-" + _secrets.token_hex(2)

    def acquire(self, journal: Journal) -> bool:
        now = time.time()
        record_ = lk.LockRecord(journal.rollout_id, self.token, journal.who, os.getpid(),
                                f"{journal.kind} {journal.target.version}", now, now,
                                float(self.ctx.options.rollout_lock_stale_seconds), journal.phase.value)
        decision = self.store.acquire(record_, journal, now, self.ctx.options.rollout_break_lock)
        if decision.action == "refuse":
            self.say(f"refused: {decision.message}")
            return False
        if decision.message:
            self.say(decision.message)
        self.journal = journal
        self.last_beat = now
        return True

    def resume(self, journal: Journal, nodes: list[NodeView]) -> int:
        if not self.acquire(journal):
            return 1
        resume(journal, time.time())
        self.save()
        in_flight = frozenset(journal.current_nodes())
        if journal.phase in (Phase.REVERT, Phase.REVERT_HEALTH, Phase.REVERT_RETURN):
            # putting a failed node back must not wait for a backup or a lag to be fine again
            self.say("resuming a revert: the preflight's findings are shown, not enforced")
            self.preflight(nodes, in_flight, [])
            return self.loop()
        ok, detail = self.preflight(nodes, in_flight, [list(w) for w in journal.waves[max(journal.wave, 0):]])
        if not ok:
            self.say(f"resume refused by the preflight: {detail}")
            interrupt(journal, time.time())
            self.save()
            self.store.release(self.token)
            return 1
        return self.loop()

    def first_sightings(self, nodes: list[NodeView], rows: list[NodeRelease]) -> None:
        """Nodes the ledger has never seen get a row (healthy and serving: verified here)."""
        known = {r.node for r in rows}
        new = [ledger.node_changed(None, n.name, n.running, time.time(), None, n.healthy)
               for n in nodes if n.name not in known and n.running is not None]
        if new:
            self.store.put_releases(new, self.token)

    def loop(self) -> int:
        journal = self.journal
        assert journal is not None
        phases: dict[Phase, Callable[[], tuple[bool, str]]] = {
            Phase.PREFLIGHT: self.phase_preflight, Phase.COMPAT: self.phase_compat, Phase.DRAIN: self.phase_drain,
            Phase.REPLACE: self.phase_replace, Phase.HEALTH: self.phase_health, Phase.RETURN: self.phase_return,
            Phase.SOAK: self.phase_soak, Phase.REVERT: self.phase_revert, Phase.REVERT_HEALTH: self.phase_revert_health,
            Phase.REVERT_RETURN: self.phase_revert_return,
        }
        self.start_heartbeat()
        try:
            while journal.status is Status.RUNNING and journal.phase is not Phase.END:
                if self.ctx.interrupts:
                    return self.interrupted()
                self.say("start")
                journal.phase_started = time.time()
                self.save()
                ok, detail = phases[journal.phase]()
                if self.ctx.interrupts and not ok:
                    return self.interrupted()
                self.say(("OK " if ok else "FAILED: ") + detail)
                record(journal, ok, time.time(), detail)
                self.save()
            return self.finish()
        except lk.LockLost as error:
            self.say(f"stopped: {error}; the lock is not ours any more: nothing else is touched")
            return 1
        except Exception as error:  # Stop, StoreError, anything unexpected: leave it resumable
            self.say(f"stopped: {type(error).__name__}: {error}; the journal stays open: rerun the same command to resume")
            self.leave_resumable()
            return 1
        finally:
            self.stop_heartbeat()

    def leave_resumable(self) -> None:
        """Best effort after an error: mark the journal interrupted and free the lock (if the
        store answers), so the same command resumes at once instead of waiting for staleness."""
        assert self.journal is not None
        try:
            interrupt(self.journal, time.time())
            self.save()
            self.store.release(self.token)
        except Exception as error:
            self.say(f"could not release the lock ({error}): it becomes stale after "
                     f"{self.ctx.options.rollout_lock_stale_seconds} s; then rerun with "
                     f"--data rollout_break_lock={self.journal.rollout_id}")

    def interrupted(self) -> int:
        assert self.journal is not None
        interrupt(self.journal, time.time())
        self.save()
        self.store.release(self.token)
        self.say(f"interrupted; rerun the same command to resume {self.JOB} {self.journal.rollout_id}")
        return 130

    def finish(self) -> int:
        journal = self.journal
        assert journal is not None
        self.store.release(self.token)
        times: dict[str, float] = {}
        for event in journal.events:
            for node in event.nodes:
                times[f"{node} {event.phase.value}"] = times.get(f"{node} {event.phase.value}", 0) + event.ended - event.started
        self.ctx.out(f"rollout {journal.rollout_id} {journal.status.value} in {elapsed_text(time.time() - self.ctx.started)}"
                     + (f": {journal.reason}" if journal.reason else ""))
        self.ctx.out("phase times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
        cut = journal.flags.get("sessions_cut", {})
        unknown = [n for n, c in cut.items() if c < 0]
        self.ctx.out(f"sessions ended by the drain bound: {sum(c for c in cut.values() if c > 0)}"
                     + (f" ({', '.join(f'{n}: {c}' for n, c in cut.items() if c >= 0)})" if cut else "")
                     + (f"; unknown on {', '.join(unknown)}" if unknown else ""))
        return ledger.final_outcome_exit_code(journal.status)

    # --- phases (each re-runnable from its start) -------------------------------------------

    def preflight(self, nodes: list[NodeView], in_flight: frozenset[str], waves: list[list[str]]) -> tuple[bool, str]:
        from ooha.rollout.live import observe

        cluster = observe.cluster_view(self.fleet.inventory)
        results = gates.preflight(nodes, cluster, waves, self.ctx.options.limits(), time.time(), in_flight)
        for result in results:
            for line in result.lines():
                self.ctx.out(f"    {line}")
        problems = gates.problems_of(results)
        return (not problems, "; ".join(problems) if problems else f"{len(results)} gates OK")

    def phase_preflight(self) -> tuple[bool, str]:
        assert self.journal is not None
        return self.preflight(self.nodes(), frozenset(self.journal.flags.get("in_flight", ())), self.journal.waves)

    def phase_compat(self) -> tuple[bool, str]:
        from ooha.rollout.live import compat

        journal = self.journal
        assert journal is not None
        host = self.fleet.doc(journal.waves[0][0])
        observation, detail = compat.run_compat(host, self.fleet.postgres, self.fleet.rabbitmq, self.fleet.redis,
                                                journal.target, watch_seconds=self.ctx.options.rollout_compat_watch_seconds,
                                                progress=lambda line: self.say(line))
        result = gates.compat_gate(observation, journal.target, host.name)
        for line in result.lines():
            self.ctx.out(f"    {line}")
        return result.ok, "; ".join(gates.problems_of([result])) or detail

    def phase_drain(self) -> tuple[bool, str]:
        from ooha.rollout.live import observe

        journal = self.journal
        assert journal is not None
        wave = journal.current_nodes()
        failed = self.set_states(wave, "draining", only_from="active")
        if failed:
            return False, failed
        from ooha.rollout.live import nodestate

        end = nodestate.wait_drained(lambda: {n: observe.node_view(self.fleet.doc(n), "", "draining").sessions for n in wave},
                                     self.drain_seconds, self.wait, self.say, lambda: bool(self.ctx.interrupts), PROGRESS_EVERY_S)
        if end.drained:
            return True, f"0 editing sessions left after {end.elapsed:.0f} s"
        if end.interrupted:
            return False, "interrupted"
        # -1: the count was unknown when the bound ended (reported as such, never as 0)
        journal.flags.setdefault("sessions_cut", {}).update({n: -1 if v is None else v for n, v in end.left.items()})
        return True, (f"{sum(v or 0 for v in end.left.values())} editing session(s) still open when ds_drain_seconds "
                      f"({self.drain_seconds} s) ended: the replace cuts them")

    def phase_replace(self) -> tuple[bool, str]:
        journal = self.journal
        assert journal is not None
        wave = journal.current_nodes()
        failed = self.set_states(wave, "out")
        if failed:
            return False, failed
        return self.converge(list(wave), journal.target)

    def phase_health(self) -> tuple[bool, str]:
        """The wave's nodes run the target (HEALTH) or their previous image (REVERT_HEALTH), healthy."""
        from ooha.rollout.live import observe

        journal = self.journal
        assert journal is not None
        revert = journal.phase is Phase.REVERT_HEALTH
        end = time.time() + self.ctx.options.rollout_health_timeout_seconds
        while True:
            results = []
            for node in journal.current_nodes():
                image = journal.previous[node] if revert else journal.target
                running, health, version = observe.node_health(self.fleet.doc(node))
                results.append(gates.health_gate(node, running, health, version, image))
            problems = gates.problems_of(results)
            if not problems:
                return True, "; ".join(f"{r.detail}" for r in results) + " healthy"
            if time.time() > end or self.ctx.interrupts:
                return False, "; ".join(problems)
            self.wait(2)

    def phase_return(self) -> tuple[bool, str]:
        journal = self.journal
        assert journal is not None
        failed = self.set_states(journal.current_nodes(), "active")
        if failed:
            return False, failed
        self.ledger_update(verified=False)
        return True, "back in the load balancers' table"

    def phase_soak(self) -> tuple[bool, str]:
        from ooha.rollout.live import observe

        journal = self.journal
        assert journal is not None
        opts = self.ctx.options
        samples: dict[str, list[gates.SoakSample]] = {n: [] for n in journal.current_nodes()}
        before = {n: observe.lb_counters(self.fleet.lbs, n) for n in samples}
        end = time.time() + opts.rollout_soak_seconds
        last_print = 0.0
        while time.time() < end and not self.ctx.interrupts:
            self.wait(min(opts.rollout_sample_seconds, max(0.0, end - time.time())))
            for node in samples:
                now_counts = observe.lb_counters(self.fleet.lbs, node)
                _, health, _ = observe.node_health(self.fleet.doc(node))
                requests, errors = observe.counter_delta(before[node], now_counts)
                samples[node].append(gates.SoakSample(time.time(), health, requests, errors))
                before[node] = now_counts
            if time.time() - last_print >= PROGRESS_EVERY_S:
                self.say(f"{max(0, end - time.time()):.0f} s left")
                last_print = time.time()
        if self.ctx.interrupts:
            return False, "interrupted"
        results = []
        states = self.states()
        names = [h.name for h in self.fleet.docs]
        whys = []
        for node, node_samples in samples.items():
            session, why = observe.synthetic_session_detail(self.front_door(), node, names, states, self.ca_file())
            if not session:
                whys.append(f"{node}: synthetic session: {why}")
            results.append(gates.soak_gate(node, node_samples, session, opts.limits(), tuple(lb.name for lb in self.fleet.lbs)))
        problems = gates.problems_of(results)
        if problems:
            return False, "; ".join(problems + whys)
        self.ledger_update(verified=True)
        return True, "; ".join(r.detail for r in results) + ", synthetic session opened"

    def phase_revert(self) -> tuple[bool, str]:
        journal = self.journal
        assert journal is not None
        failed = self.set_states(journal.current_nodes(), "out")
        if failed:
            return False, failed
        by_image: dict[ImageRef, list[str]] = {}
        for node in journal.current_nodes():
            by_image.setdefault(journal.previous[node], []).append(node)
        details = []
        for image, group in by_image.items():
            ok, detail = self.converge(group, image)
            details.append(detail)
            if not ok:
                return False, "; ".join(details)
        return True, "; ".join(details)

    def phase_revert_health(self) -> tuple[bool, str]:
        return self.phase_health()

    def phase_revert_return(self) -> tuple[bool, str]:
        journal = self.journal
        assert journal is not None
        failed = self.set_states(journal.current_nodes(), "active")
        if failed:
            return False, failed
        before = {n: NodeRelease.from_dict(d) for n, d in journal.flags.get("before", {}).items()}
        rows = []
        from ooha.rollout.live import observe
        for node in journal.current_nodes():
            running, _, _ = observe.node_health(self.fleet.doc(node))
            if running is not None:
                rows.append(ledger.node_reverted(before.get(node), node, running, time.time(), journal.rollout_id))
        if rows:
            self.store.put_releases(rows, self.token)
        return True, "back on " + ", ".join(f"{n} {journal.previous[n].version}" for n in journal.current_nodes())

    # --- helpers ----------------------------------------------------------------------------

    def ledger_update(self, verified: bool) -> None:
        from ooha.rollout.live import observe

        journal = self.journal
        assert journal is not None
        current = {r.node: r for r in self.store.releases()}
        rows = []
        for node in journal.current_nodes():
            running, _, _ = observe.node_health(self.fleet.doc(node))
            if running is not None:
                rows.append(ledger.node_changed(current.get(node), node, running, time.time(), journal.rollout_id, verified))
        self.store.put_releases(rows, self.token)

    def deployable(self, image: ImageRef) -> ImageRef:
        """The reference a wave deploys: the operator's own (patch target as asked), else the
        image and tag with the digest only if the inventory pins one for that tag.

        Observations carry the digest a node was pulled as (the ledger's audit); deploying
        it as ``tag@digest`` when the inventory says ``tag`` would make every later main job
        see another image reference and recreate the container.
        """
        if self.ctx.wanted is not None and image == self.ctx.wanted:
            return image
        data = self.fleet.data()
        pinned = data.get("ds_image_digest") if str(data.get("ds_version")) == image.version else None
        return ImageRef(image.image, image.version, pinned or None)

    def mark_release(self, node: str, image: ImageRef) -> None:
        """Record on the node, before it moves, the release this rollout puts it on: from then on
        the main job refuses to move it elsewhere unless told why (documentserver ``release_guard``)."""
        from ooha.layers.documentserver import CONFIG_DIR, RELEASE_FILE

        journal = self.journal
        assert journal is not None
        text = json.dumps({"ref": image.ref, "rollout_id": journal.rollout_id})
        result = remote.run(self.fleet.doc(node), f"install -d -m 700 {remote.quote(CONFIG_DIR)} && "
                                                  f"cat > {remote.quote(RELEASE_FILE)}.new && chmod 600 {remote.quote(RELEASE_FILE)}.new && "
                                                  f"mv {remote.quote(RELEASE_FILE)}.new {remote.quote(RELEASE_FILE)}", stdin=text + "\n")
        if not result.ok:
            raise Stop(f"{node}: cannot record the release on the node: {result.why()}")

    def front_door(self) -> str:
        """The front door the synthetic session goes through: the floating address."""
        return f"https://{str(self.fleet.data().get('lb_vip')).split('/')[0]}/"

    def ca_file(self) -> str | None:
        """The CA bundle (on the controller) the front door's certificate chains to; None: the system's."""
        return self.ctx.options.rollout_front_door_ca

    def converge(self, nodes: list[str], image: ImageRef) -> tuple[bool, str]:
        """The main job on ``nodes`` with only the documentserver layer and ``image`` (a subprocess)."""
        journal = self.journal
        assert journal is not None
        image = self.deployable(image)
        args = wave_command(self.ctx.argv, nodes, image, journal.rollout_id)
        try:
            for node in nodes:
                self.mark_release(node, image)
        except Stop as error:
            return False, str(error)
        return self.run_main_job(args, nodes, image.version)

    def run_main_job(self, args: list[str], nodes: list[str], version: str) -> tuple[bool, str]:
        """Run one main-job subprocess ``args`` for ``nodes`` to its end, logged under RECORD_DIR."""
        journal = self.journal
        assert journal is not None
        log = RECORD_DIR / journal.rollout_id / f"{journal.wave + 1}-{journal.phase.value}-{'-'.join(nodes)}-{int(time.time())}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with log.open("w") as handle:
            child = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, "PYINFRA_PROGRESS": "off"})
            self.ctx.child = child
            last_print = time.time()
            try:
                # The wave runs to its end even if the lock is lost meanwhile: a replace cut in
                # the middle is worse than one that finishes; the loss is raised right after.
                while child.poll() is None:
                    time.sleep(1)
                    if time.time() - started > WAVE_TIMEOUT_S:
                        child.kill()
                    if time.time() - last_print >= PROGRESS_EVERY_S:
                        self.say(f"main job on {', '.join(nodes)} ({version}) running, {time.time() - started:.0f} s")
                        last_print = time.time()
            finally:
                if child.poll() is None:  # the driver itself is dying: do not leave it unwatched
                    child.terminate()
                    child.wait(timeout=60)
                self.ctx.child = None
        self.beat()
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if "drain:" in line or "Error" in line or "error:" in line:
                self.ctx.out(f"    {line.strip()}")
        if child.returncode != 0:
            tail = " / ".join(l.strip() for l in text.splitlines()[-4:])
            return False, f"main job on {', '.join(nodes)} exited {child.returncode} after {time.time() - started:.0f} s ({tail}); log {log}"
        return True, f"{', '.join(nodes)} on {version} in {time.time() - started:.0f} s"


# --- command line -----------------------------------------------------------------------------

OVERRIDDEN = ("ds_version", "ds_image", "ds_image_digest", "layers", "ds_release_change")


def wave_command(argv: list[str], nodes: list[str], image: ImageRef, rollout_id: str = "") -> list[str]:
    """The main job's command line for one wave, from the operator's own pyinfra command line.

    The job file becomes deploys/ha.py (next to it), the operator's other options and ``--data``
    are kept except the rollout's own keys and the release keys, which the wave sets.
    """
    out: list[str] = [sys.executable, "-m", "pyinfra"]
    skip_next = False
    for i, arg in enumerate(argv):
        if i == 0:
            continue  # the pyinfra script as the operator called it: the module runs with our interpreter
        if skip_next:
            skip_next = False
            continue
        if arg in ("--limit", "--exclude"):  # the wave names its own nodes
            skip_next = True
            continue
        if arg.startswith(("--limit=", "--exclude=")):
            continue
        if arg == "--data" and i + 1 < len(argv):
            key = argv[i + 1].split("=", 1)[0]
            if key in OVERRIDDEN or key.startswith("rollout_"):
                skip_next = True
                continue
        if arg.startswith("--data="):
            key = arg[len("--data="):].split("=", 1)[0]
            if key in OVERRIDDEN or key.startswith("rollout_"):
                continue
        if arg.endswith(("/patch.py", "/rollback.py")) or arg in ("patch.py", "rollback.py"):
            arg = str(Path(arg).with_name("ha.py"))
        out.append(arg)
    if "-y" not in out and "--yes" not in out:
        out.insert(3, "-y")
    for node in nodes:
        out += ["--limit", node]
    out += ["--data", "layers=documentserver", "--data", f"ds_image={image.image}", "--data", f"ds_version={image.version}",
            "--data", f"ds_release_change={rollout_id or 'rollout'}"]
    if image.digest:
        out += ["--data", f"ds_image_digest={image.digest}"]
    return out


def run_rollout(inventory: Any, kind: str, wanted: ImageRef | None, options: RolloutOptions,
                argv: list[str] | None = None, out: Callable[[str], None] | None = None) -> int:
    """Run one rollout to its end; returns the command's exit status (0 done/nothing to do)."""
    ctx = Context(kind, wanted, options, list(argv if argv is not None else sys.argv),
                  out or (lambda line: print(line, flush=True)))
    driver = Driver(Fleet.of(inventory), ctx)
    return run_interruptibly(driver, ctx)


def run_interruptibly(driver: Any, ctx: Context) -> int:
    """``driver.run()`` with Ctrl-C/SIGTERM/SIGHUP meaning "finish the current phase, then stop"
    (a second one kills the running wave), and a store or input error after the lock left
    resumable; shared by the rollout and scale commands.  Returns the command's exit status."""

    def on_signal(signum: int, frame: Any) -> None:
        ctx.interrupts += 1
        if ctx.interrupts == 1:
            try:  # after a SIGHUP the terminal may be gone
                ctx.out("interrupt: finishing the current phase, then stopping (again to kill it)")
            except OSError:
                pass
        elif ctx.child is not None:
            ctx.child.kill()

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for sig in old:
        signal.signal(sig, on_signal)
    try:
        return driver.run()
    except (Stop, StoreError, ValueError, StopIteration) as error:
        if driver.journal is not None:  # after the lock was taken: leave it resumable
            ctx.out(f"stopped: {type(error).__name__}: {error}")
            driver.leave_resumable()
        else:
            ctx.out(f"refused: {type(error).__name__}: {error}; nothing was changed by this run")
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def explicit_data(argv: list[str], key: str) -> str | None:
    """The value of ``--data key=value`` on the command line (the last one), else None."""
    value = None
    for i, arg in enumerate(argv):
        item = argv[i + 1] if arg == "--data" and i + 1 < len(argv) else arg[len("--data="):] if arg.startswith("--data=") else None
        if item is not None and item.split("=", 1)[0] == key and "=" in item:
            value = item.split("=", 1)[1]
    return value


def run_from_deploy(kind: str) -> None:
    """Body of deploys/patch.py and deploys/rollback.py: run the rollout once per CLI run.

    pyinfra executes a deploy file once per host at prepare time; the rollout runs on the
    first execution (every host is connected by then), queues no operation, and ends the CLI
    with the rollout's exit status when it is not 0.
    """
    from pyinfra import host, inventory, state

    from ooha.rollout.options import rollout_options

    if getattr(state, "_ooha_rollout_status", None) is not None:
        return
    state._ooha_rollout_status = "running"  # before anything that yields: one rollout per CLI run
    argv = list(sys.argv)
    unsupported = [a for a in argv if a.split("=", 1)[0] in ("--dry", "--limit", "--exclude")]
    if unsupported:
        print(f"refused: {', '.join(unsupported)}: a rollout moves every Document Server node, one wave at a time, "
              "and its drain is real (no dry run); fix: run it without them", flush=True)
        sys.exit(1)
    data = host.data
    wanted: ImageRef | None = None
    if kind == "patch" or explicit_data(argv, "ds_version") is not None:
        wanted = ImageRef(str(data.get("ds_image")), str(data.get("ds_version")), data.get("ds_image_digest") or None)
    status = run_rollout(inventory, kind, wanted, rollout_options(data), argv)
    state._ooha_rollout_status = status
    if status != 0:
        sys.exit(status)
