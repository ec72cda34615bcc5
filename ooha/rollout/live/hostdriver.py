"""Rolling OS and package patching of every host through the rollout engine (deploys/patch_hosts.py).

Design: ooha/rollout/hostplan.py (the order and the steps around each host, pure),
ooha/rollout/hostgates.py (the host gates, pure), ooha/rollout/live/hoststeps.py (observing hosts and
running one step) and docs/architecture.md "Day-2 jobs".  A ``HostDriver`` is the rollout ``Driver``
(the SAME cluster lock, journal and store, heartbeat, progress lines, Ctrl-C handling through
``run_interruptibly``, the controller copy under .ooha/rollouts) with its own flow:

1. observe every host (``hoststeps.observe_hosts``: ``apt-get update``, the apt simulation, roles);
2. plan (``hostplan.plan_hosts``): a problem refuses; an empty plan is "nothing to patch";
3. preflight: the DS rollout's cluster gates (Patroni, etcd, Sentinel, RabbitMQ, backup age, DS
   nodes healthy, capacity while a planned DS host is out) plus ``hoststeps.host_gates`` (disk,
   apt sources, manual attention); every refusal one ``host: gate: what; fix: ...`` line, nothing changed;
4. lock + journal: one wave per host; ``flags["hosts"][host]`` keeps the host's step sequence, the
   index of its current step and the step memo (``StepEnv.memo``), saved after every step;
5. per host, in the plan's order: a fresh look (the host's steps come from what is true when its
   turn comes: a previous host's failover may have moved a role), then every step through
   ``hoststeps.run_step``; a failed step: ``hoststeps.undo`` for this host, the journal FAILED with
   host, step and reason, exit 1, no other host touched; at the end of each turn the driver writes
   ``/var/lib/onlyoffice-ha/patch-last.json`` on the host (the report's "last patch run");
6. the summary: hosts patched, rebooted, skipped with why, time per host and in total.

Resume: an open host-patching journal (interrupted, failed, or a lost controller whose stale lock
was broken) is resumed by the same command: the current host is observed again, its wave recomputed
with ``hostplan.host_wave`` and merged with what the journal says was done (``resume_sequence``),
and the current step runs again (every step is idempotent when re-entered; the memo says what
happened before the interruption, e.g. that the reboot was already issued).

A DS rollout (or scale) and host patching never run at once: the same lock row, and an open journal
of the other kind refuses the start with the command that finishes it.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ooha.rollout import gates, hostplan
from ooha.rollout.hostplan import HostPlan, PatchOptions
from ooha.rollout.journal import HOST_PATCH, Event, Journal, Phase, Status, interrupt, new_journal, resume
from ooha.rollout.live import remote
from ooha.rollout.live.driver import Context, Driver, Fleet, run_interruptibly
from ooha.rollout.lock import LockLost
from ooha.rollout.options import RolloutOptions
from ooha.rollout.progress import elapsed_text
from ooha.rollout.release import ImageRef

PATCH_LAST_FILE = "/var/lib/onlyoffice-ha/patch-last.json"
"""Written on each host at the end of its turn; read by the report (ooha/facts/base.py HostPatchState)."""

MIDDLE = ("apt_upgrade", "reboot")


# --- pure helpers (unit-tested without a lab) ---------------------------------------------------


def target_of(patch: PatchOptions) -> ImageRef:
    """The journal's ``target`` (an ImageRef by its format): what a host-patching run installs."""
    return ImageRef("os-packages", ",".join(patch.packages) or "all")


def patch_flags(patch: PatchOptions) -> dict[str, Any]:
    return {"packages": list(patch.packages), "reboot": patch.reboot}


def patch_of(journal: Journal) -> PatchOptions:
    """The options a journal was started with (a resume keeps them)."""
    flags = journal.flags.get("patch", {})
    return PatchOptions(packages=tuple(flags.get("packages", ())), reboot=str(flags.get("reboot", "auto")))


def host_state(journal: Journal, host: str) -> dict[str, Any]:
    """``flags["hosts"][host]``: {"sequence", "index", "memo", "outcome", "started", "ended"} (created empty)."""
    hosts = journal.flags.setdefault("hosts", {})
    return hosts.setdefault(host, {"sequence": [], "index": 0, "memo": {}, "outcome": None, "started": None, "ended": None})


def resume_sequence(old: list[str] | tuple[str, ...], index: int, new: list[str] | tuple[str, ...]) -> tuple[list[str], int]:
    """A resumed host's steps: ``old[:index]`` were done; the rest comes from the fresh wave ``new``.

    The steps left of the journal's sequence (``old[index:]``, the current one first) are kept even if
    the fresh look would not plan them (a moved role drops ``patroni_clear_nosync`` from the fresh
    wave, yet the tag this run set must still go; the upgrade already done drops ``apt_upgrade``,
    which re-runs as a no-op); a step only the fresh wave has is added after its predecessor in
    ``new`` but never before the current step (the journal's current step is the one re-run first),
    except a pre-step once the upgrade or the reboot has started (moving a role away from a host
    that already went down protects nothing).  Returns (sequence, index of the current step).
    """
    done = list(old[:index])
    remaining = list(old[index:])
    middle_started = any(step in MIDDLE for step in done) or (bool(remaining) and remaining[0] in MIDDLE)
    first_middle = next((i for i, step in enumerate(new) if step in MIDDLE), None)
    for position, step in enumerate(new):
        if step in done or step in remaining:
            continue
        is_pre = first_middle is not None and position < first_middle
        if is_pre and middle_started:
            continue
        before = [s for s in new[:position] if s in remaining]
        at = remaining.index(before[-1]) + 1 if before else 0
        remaining.insert(max(at, 1) if remaining else 0, step)  # the current step stays the one re-run first
    return done + remaining, len(done)


def host_where(journal: Journal, azs: dict[str, str]) -> str:
    host = journal.current_nodes()[0] if journal.current_nodes() else None
    if host is None:
        return "cluster"
    return f"host {journal.wave + 1}/{len(journal.waves)} {host} ({azs.get(host, '?')})"


def host_progress(journal: Journal | None, started: float, now: float, azs: dict[str, str], step: str | None,
                  detail: str = "") -> str:
    """``[  2m14s] host 3/8 data2 (az2) step patroni_switchover_to_sync_standby: detail``."""
    where = host_where(journal, azs) if journal is not None else "cluster"
    line = f"[{elapsed_text(now - started):>7}] {where}" + (f" step {step}" if step else "")
    return f"{line}: {detail}" if detail else line


def nothing_to_patch(plan: HostPlan) -> str:
    """The line of a run that plans nothing (a second run after a finished one)."""
    skipped = "; ".join(f"{host}: {why}" for host, why in plan.skipped.items()) or "no hosts"
    return f"nothing to patch: every host skipped ({skipped})"


def refusal_lines(problems: list[str]) -> list[str]:
    """The preflight's refusal: one line per problem, then what it means."""
    return [f"    {line}" for line in problems] + [
        f"refused: {len(problems)} problem(s) before any change; nothing was changed (fix them, then rerun)"]


def other_kind_refusal(journal: Journal) -> str:
    """An open DS rollout / rollback / scale: host patching waits for it (its node may be drained)."""
    where = ",".join(journal.current_nodes()) or "cluster"
    if journal.kind.startswith("scale"):
        node = ",".join(n for w in journal.waves for n in w)
        key = "ds_retire" if journal.kind == "scale-in" else "ds_join"
        command = f"deploys/scale.py --data {key}={node}"
    elif journal.kind == "rollback":
        command = "deploys/rollback.py"
    else:
        command = f"deploys/patch.py --data ds_version={journal.target.version} (or deploys/rollback.py)"
    return (f"refused: rollout {journal.rollout_id} ({journal.kind}) is unfinished ({journal.status.value}) at "
            f"{where} {journal.phase.value}; host patching never runs beside it; fix: finish it first with {command}")


def patch_last_record(run_id: str, finished: float, outcome: str, packages: list[str], rebooted: bool) -> dict[str, Any]:
    """The content of patch-last.json (the contract in /tmp/issue12-contract.md; the report reads
    ``finished`` and ``outcome``)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished))
    return {"run_id": run_id, "finished": stamp, "outcome": outcome, "packages": list(packages), "rebooted": bool(rebooted)}


def summary_lines(journal: Journal, total_seconds: float) -> list[str]:
    """The end of a run: outcome and time, hosts patched and rebooted, skipped with why, per-host times."""
    hosts = journal.flags.get("hosts", {})
    patched = [h for w in journal.waves for h in w if hosts.get(h, {}).get("outcome") == "done"]
    rebooted = [h for h in patched if hosts[h].get("memo", {}).get("rebooted")]
    left = {h: s["outcome"] for h, s in hosts.items() if str(s.get("outcome") or "").startswith("skipped")}
    skipped = {**journal.flags.get("skipped", {}), **{h: o.removeprefix("skipped: ") for h, o in left.items()}}
    lines = [f"host patching {journal.rollout_id} {journal.status.value} in {elapsed_text(total_seconds)}"
             + (f": {journal.reason}" if journal.reason else "")]
    lines.append(f"patched {len(patched)} host(s){': ' + ', '.join(patched) if patched else ''}; "
                 f"rebooted {len(rebooted)}{': ' + ', '.join(rebooted) if rebooted else ''}")
    lines.append("skipped: " + ("; ".join(f"{h} ({why})" for h, why in skipped.items()) if skipped else "none"))
    times = [f"{h} {elapsed_text((s['ended'] or 0) - (s['started'] or 0))}" for h, s in hosts.items()
             if s.get("started") and s.get("ended")]
    if times:
        lines.append("host times: " + ", ".join(times))
    if journal.open:
        host = ",".join(journal.current_nodes())
        step = journal.flags.get("host_step_name", "")
        lines.append(f"next: fix the cause, then rerun the same command: it resumes at {host} step {step}")
    return lines


def packages_of(memo: dict[str, Any], facts: Any, patch: PatchOptions) -> list[str]:
    """``["name version", ...]`` installed on the host: the apt_upgrade step's memo, else the
    observed selection (``PendingPackage``s of the host's facts, filtered by ``patch_packages``)."""
    if isinstance(memo.get("packages"), list):
        return [str(p) for p in memo["packages"]]
    from ooha.rollout.hostgates import select_packages

    pending = getattr(facts, "pending", None)
    try:
        chosen = pending(patch.packages) if callable(pending) else select_packages(tuple(pending or ()), patch.packages)
        return [f"{p.name} {p.candidate}" for p in chosen or ()]
    except (AttributeError, TypeError):
        return []


# --- the driver -----------------------------------------------------------------------------------


class OneHost:
    """The inventory as ``observe_hosts`` sees it for one host's fresh look: every group stays (the
    roles are read from the cluster's members: Patroni leader, Sentinels' primary) but only ``name``
    is observed, so a turn costs one host's ``apt-get update``, not every host's."""

    def __init__(self, inventory: Any, name: str) -> None:
        self._inventory, self._name = inventory, name

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inventory, item)

    def _only(self, hosts: Any) -> Any:
        return iter([h for h in hosts if h.name == self._name])

    def iter_activated_hosts(self) -> Any:
        every = getattr(self._inventory, "iter_activated_hosts", None)
        return self._only(every() if every is not None else self._inventory)

    def __iter__(self) -> Any:
        return self._only(self._inventory)



@dataclass
class Steps:
    """The I/O the driver calls (hoststeps' functions; unit tests pass fakes)."""

    observe_hosts: Callable[..., Any]
    host_gates: Callable[..., Any]
    run_step: Callable[..., tuple[bool, str]]
    undo: Callable[..., list[str]]
    StepEnv: Callable[..., Any]

    @classmethod
    def live(cls) -> "Steps":
        from ooha.rollout.live import hoststeps

        return cls(hoststeps.observe_hosts, hoststeps.host_gates, hoststeps.run_step, hoststeps.undo, hoststeps.StepEnv)


class HostDriver(Driver):
    """One host-patching run, from the first look to its summary (or to an interruption)."""

    JOB = "host patching"

    def __init__(self, fleet: Fleet, ctx: Context, patch: PatchOptions, steps: Steps | None = None) -> None:
        super().__init__(fleet, ctx)
        self.patch = patch
        self.steps = steps or Steps.live()
        self.step: str | None = None
        self.facts: dict[str, Any] = {}

    # --- output -------------------------------------------------------------------------------

    def azs(self) -> dict[str, str]:
        return {h.name: str(h.data.get("az") or "?") for h in self.fleet.inventory}

    def say(self, detail: str = "") -> None:
        self.ctx.out(host_progress(self.journal, self.ctx.started, time.time(), self.azs(), self.step, detail))

    def host(self, name: str) -> Any:
        get = getattr(self.fleet.inventory, "get_host", None)
        return get(name) if get is not None else next(h for h in self.fleet.inventory if h.name == name)

    def step_wait(self, seconds: float) -> None:
        """A step's poll interval: heartbeats; a first Ctrl-C lets the step finish (a reboot wait cut
        short would leave a host nobody watches come back), a second one ends the wait.  gevent's
        sleep: the heartbeat greenlet runs meanwhile (pyinfra does not monkey-patch time.sleep)."""
        import gevent

        end = time.time() + seconds
        while time.time() < end and self.ctx.interrupts < 2:
            gevent.sleep(min(1.0, max(0.0, end - time.time())))
            self.beat()

    # --- observations and gates ---------------------------------------------------------------

    def observe(self, patch: PatchOptions) -> tuple[list[Any], dict[str, Any]]:
        views, facts = self.steps.observe_hosts(self.fleet.inventory, patch)
        self.facts = dict(facts)
        return list(views), self.facts

    def gate_problems(self, planned: list[str], facts: dict[str, Any], show: Callable[[str], None]) -> list[str]:
        """The DS rollout's cluster gates (capacity for each planned DS host out alone) and the
        host gates for the ``planned`` hosts; every result is shown, the problems returned."""
        from ooha.rollout.live import observe

        docs = {h.name for h in self.fleet.docs}
        nodes = self.nodes() if docs else []
        cluster = observe.cluster_view(self.fleet.inventory)
        waves = [[h] for h in planned if h in docs]
        results = gates.preflight(nodes, cluster, waves, self.ctx.options.limits(), time.time())
        results += list(self.steps.host_gates(self.fleet.inventory, facts, planned))
        for result in results:
            for line in result.lines():
                show(f"    {line}")
        return gates.problems_of(results)

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        problem = self.store.ready()
        if problem:
            self.say(f"refused: {problem}")
            return 1
        open_journal = self.store.open_journal()
        if open_journal is not None and open_journal.kind != HOST_PATCH:
            self.ctx.out(other_kind_refusal(open_journal))
            return 1
        if open_journal is not None:
            return self.resume_run(open_journal)
        self.say(f"observing every host (apt-get update, pending updates, roles); packages "
                 f"{','.join(self.patch.packages) or 'all'}, reboot {self.patch.reboot}")
        views, facts = self.observe(self.patch)
        plan = hostplan.plan_hosts(views, self.patch)
        if plan.problems:
            for line in refusal_lines([p.line() for p in plan.problems]):
                self.ctx.out(line)
            return 1
        if plan.empty:
            self.say(nothing_to_patch(plan))
            return 0
        skipped = "; ".join(f"{h} ({why})" for h, why in plan.skipped.items())
        self.say(f"plan: {' -> '.join(plan.hosts())}" + (f"; skipped: {skipped}" if skipped else ""))
        for wave in plan.waves:
            self.ctx.out(f"    {wave.host} (tier {wave.tier.name.lower()}): {' '.join(wave.sequence())}")
        started = time.time()
        problems = self.gate_problems(plan.hosts(), facts, self.ctx.out)
        if problems:
            for line in refusal_lines(problems)[-1:]:
                self.ctx.out(line)
            return 1
        target = target_of(self.patch)
        journal = new_journal(self.new_id(), HOST_PATCH, target, plan.journal_waves(), {h: target for h in plan.hosts()},
                              False, f"{getpass.getuser()}@{socket.gethostname()}", started)
        journal.flags.update(patch=patch_flags(self.patch), skipped=dict(plan.skipped))
        for wave in plan.waves:
            host_state(journal, wave.host)["sequence"] = list(wave.sequence())
        if not self.acquire(journal):
            return 1
        journal.events.append(Event(Phase.PREFLIGHT, -1, (), started, time.time(), True, "cluster and host gates OK"))
        journal.phase, journal.wave = Phase.HOST_STEP, 0
        self.save()
        return self.turns(resumed_host=None, views=views)

    def resume_run(self, journal: Journal) -> int:
        if not self.acquire(journal):
            return 1
        resume(journal, time.time())
        self.save()
        wanted = patch_of(journal)
        if wanted != self.patch:
            self.say(f"resuming with the journal's options (packages {','.join(wanted.packages) or 'all'}, "
                     f"reboot {wanted.reboot}), not this command's")
        self.patch = wanted
        host = journal.current_nodes()[0] if journal.current_nodes() else None
        state = host_state(journal, host) if host else {}
        self.step = journal.flags.get("host_step_name")
        self.say(f"resuming host patching {journal.rollout_id} ({journal.reason or 'interrupted'})")
        self.step = None
        views, facts = self.observe(self.patch)
        known = {h.name for h in self.fleet.inventory}
        remaining = [h for w in journal.waves[max(journal.wave, 0):] for h in w if h in known]
        # a turn that began (even if its first step failed half-way: a drain left `draining`) owes
        # its own steps first; the cluster gates then only inform
        mid_turn = bool(state.get("index") or state.get("started"))
        problems = self.gate_problems(remaining, facts, self.ctx.out)
        if problems and mid_turn:
            self.say(f"{host} is mid-turn: the preflight's findings are shown, not enforced (its own steps gate its return)")
        elif problems:
            for line in refusal_lines(problems)[-1:]:
                self.ctx.out(line.replace("nothing was changed", "nothing more was changed"))
            interrupt(journal, time.time())
            self.save()
            self.store.release(self.token)
            return 1
        return self.turns(resumed_host=host if mid_turn else None, views=views)

    def turns(self, resumed_host: str | None, views: list[Any] | None = None) -> int:
        journal = self.journal
        assert journal is not None
        self.start_heartbeat()
        try:
            for index in range(max(journal.wave, 0), len(journal.waves)):
                host = journal.waves[index][0]
                journal.wave, journal.phase = index, Phase.HOST_STEP
                if self.ctx.interrupts:
                    return self.interrupted()
                state = host_state(journal, host)
                if state.get("outcome") == "done":
                    continue
                if not self.fresh_look(host, state, resume=host == resumed_host, views=views):
                    return self.failed(host, "fresh-look", journal.flags.get("look_problem", ""), [])
                views = None  # the next host gets its own fresh look
                if str(state.get("outcome") or "").startswith("skipped"):
                    self.save()
                    continue
                status = self.turn(host, state)
                if status is not None:
                    return status
            journal.phase, journal.status = Phase.END, Status.DONE
            self.step = None
            self.save()
            return self.finish()
        except LockLost as error:
            self.say(f"stopped: {error}; the lock is not ours any more: nothing else is touched")
            return 1
        except Exception as error:  # Stop, StoreError, anything unexpected: leave it resumable
            self.say(f"stopped: {type(error).__name__}: {error}; the journal stays open: rerun the same command to resume")
            self.leave_resumable()
            return 1
        finally:
            self.stop_heartbeat()

    def fresh_look(self, host: str, state: dict[str, Any], resume: bool, views: list[Any] | None) -> bool:
        """Before the host's turn (or when resuming it): its steps from what is true now.

        The plan's order stands; a host that has nothing to do any more is skipped; a host whose
        own observation is incomplete (its Patroni role, whether it holds the VIP, apt unreadable)
        stops the run before it changes.  Only this host is observed (``OneHost``).
        """
        journal = self.journal
        assert journal is not None
        self.step = None
        if not any(h.name == host for h in self.fleet.inventory):  # removed on purpose (retired, replaced)
            state["outcome"] = "skipped: not in the inventory any more"
            self.say("skipped: not in the inventory any more (the main job owns what is left of it)")
            return True
        if views is None:
            self.say("fresh look before its turn")
            found, facts = self.steps.observe_hosts(OneHost(self.fleet.inventory, host), self.patch)
            views = list(found)
            self.facts.update(facts)
        view = next((v for v in views if v.name == host), None)
        if view is None:
            journal.flags["look_problem"] = f"{host}: not observed (not in the inventory any more?); fix: put it back, then rerun"
            return False
        # the host's own observation must be complete (the cross-host checks, one leader and one VIP
        # holder, were the plan's; the steps check the cluster again before anything moves)
        problems = [p for p in hostplan.plan_hosts([view], self.patch).problems if p.where == host]
        if problems:
            journal.flags["look_problem"] = "; ".join(p.line() for p in problems)
            return False
        fresh = list(hostplan.host_wave(view, self.patch).sequence())
        index = int(state.get("index") or 0)
        skip = hostplan.skip_reason(view, self.patch)
        if resume and index:
            sequence, index = resume_sequence(state["sequence"], index, fresh)
            self.say(f"resuming at step {sequence[index] if index < len(sequence) else 'end'} of {' '.join(sequence)}")
        elif skip and not resume:  # a resumed turn that began runs through (its first step may have moved a role)
            state["outcome"] = f"skipped: {skip} (fresh look)"
            self.say(f"skipped: {skip} (fresh look)")
            return True
        else:
            sequence, index = fresh, 0
            if fresh != state.get("sequence"):
                self.say(f"steps from the fresh look: {' '.join(fresh)}")
        state["sequence"], state["index"] = sequence, index
        return True

    def turn(self, host: str, state: dict[str, Any]) -> int | None:
        """Run the host's steps from ``state["index"]``; None when the host is done, else the exit status."""
        journal = self.journal
        assert journal is not None
        memo: dict[str, Any] = state.setdefault("memo", {})
        state["started"] = state.get("started") or time.time()
        env = self.steps.StepEnv(inventory=self.fleet.inventory, options=self.ctx.options, patch=self.patch,
                                 say=lambda detail: self.say(detail), wait=self.step_wait, memo=memo)
        sequence: list[str] = state["sequence"]
        while state["index"] < len(sequence):
            if self.ctx.interrupts:
                return self.interrupted()
            step = sequence[state["index"]]
            self.step = step
            journal.flags["host_step_name"] = step
            journal.phase_started = time.time()
            self.say("start")
            self.save()
            ok, reason = self.steps.run_step(env, host, step)
            if not ok and self.ctx.interrupts:
                self.say(f"did not finish ({reason})")
                return self.interrupted()
            self.say(("OK " if ok else "FAILED: ") + reason)
            journal.events.append(Event(Phase.HOST_STEP, journal.wave, (host,), journal.phase_started, time.time(), ok,
                                        f"{step}: {reason}"))
            if not ok:
                if self.lost is not None:  # the lock is another controller's now: its hosts, not ours to undo
                    raise self.lost
                # the failed step is in ``done`` too: it may have half-moved something (keepalived
                # stopped, nosync set, a node draining) that undo must put back
                return self.failed(host, step, reason, sequence[:state["index"] + 1], env)
            state["index"] += 1
            self.save()
        self.step = None
        state["outcome"], state["ended"] = "done", time.time()
        self.write_last(host, "done", memo)
        self.save()
        self.say("patched" + (", rebooted" if memo.get("rebooted") else ", not rebooted")
                 + f" in {elapsed_text(state['ended'] - state['started'])}")
        return None

    def failed(self, host: str, step: str, reason: str, done: list[str], env: Any = None) -> int:
        """A step failed: undo this host's temporary moves that are safe to undo, journal FAILED (a
        rerun resumes at this step), patch-last.json says so, lock released, exit 1."""
        journal = self.journal
        assert journal is not None
        if env is not None:
            try:
                for line in self.steps.undo(env, host, list(done)):
                    self.say(f"undo: {line}")
            except Exception as error:  # the undo is best effort: the journal must still say where it stopped
                self.say(f"undo: {type(error).__name__}: {error}")
        journal.status = Status.FAILED
        journal.flags["host_step_name"] = step
        journal.reason = f"{host} step {step} failed: {reason}"
        state = host_state(journal, host)
        state["outcome"] = f"failed: {step}"
        if env is not None:
            try:
                self.write_last(host, f"failed: {step}", state.get("memo", {}))
            except Exception as error:
                self.say(f"could not write {PATCH_LAST_FILE}: {error}")
        self.save()
        return self.finish()

    def write_last(self, host: str, outcome: str, memo: dict[str, Any]) -> None:
        journal = self.journal
        assert journal is not None
        record_ = patch_last_record(journal.rollout_id, time.time(), outcome,
                                    packages_of(memo, self.facts.get(host), self.patch), bool(memo.get("rebooted")))
        path = remote.quote(PATCH_LAST_FILE)
        result = remote.run(self.host(host), f"install -d -m 755 $(dirname {path}) && cat > {path}.new && "
                                             f"chmod 644 {path}.new && mv {path}.new {path}",
                            stdin=json.dumps(record_) + "\n")
        if not result.ok:
            self.say(f"could not write {PATCH_LAST_FILE}: {result.why()}")

    def finish(self) -> int:
        journal = self.journal
        assert journal is not None
        self.store.release(self.token)
        self.step = None
        for line in summary_lines(journal, time.time() - self.ctx.started):
            self.ctx.out(line)
        return 0 if journal.status is Status.DONE else 1


# --- command line ---------------------------------------------------------------------------------


def run_patch_hosts(inventory: Any, patch: PatchOptions, options: RolloutOptions, argv: list[str] | None = None,
                    out: Callable[[str], None] | None = None, steps: Steps | None = None) -> int:
    """Run one host-patching run to its end; the command's exit status (0 done or nothing to patch)."""
    ctx = Context(HOST_PATCH, None, options, list(argv if argv is not None else sys.argv),
                  out or (lambda line: print(line, flush=True)))
    driver = HostDriver(Fleet.of(inventory), ctx, patch, steps)
    return run_interruptibly(driver, ctx)


def patch_hosts_problems(data: Any, argv: list[str]) -> list[str]:
    """Every bad input of deploys/patch_hosts.py, one ``KEY: problem; fix: ...`` line each."""
    from ooha.rollout.options import option_problems

    problems = [a.split("=", 1)[0] + ": host patching goes through every host, one at a time, for real (no dry run, "
                "no limit: --data patch_packages=... narrows what it installs); fix: run it without it"
                for a in argv if a.split("=", 1)[0] in ("--dry", "--limit", "--exclude")]
    return problems + hostplan.patch_option_problems(data) + option_problems(data)


def run_patch_hosts_from_deploy() -> None:
    """Body of deploys/patch_hosts.py: validate, run once per CLI run, exit with the run's status."""
    from pyinfra import host, inventory, state

    from ooha.rollout.options import rollout_options

    if getattr(state, "_ooha_rollout_status", None) is not None:
        return
    state._ooha_rollout_status = "running"
    argv = list(sys.argv)
    problems = patch_hosts_problems(host.data, argv)
    if problems:
        print("refused (nothing was changed):\n" + "\n".join(f"  {p}" for p in problems), flush=True)
        sys.exit(1)
    status = run_patch_hosts(inventory, hostplan.patch_options(host.data), rollout_options(host.data), argv)
    state._ooha_rollout_status = status
    if status != 0:
        sys.exit(status)
