"""The phase state machine and the journal that makes a rollout resumable.

Why a journal: a rollout takes minutes to hours (drains are bounded by ``ds_drain_seconds``);
a Ctrl-C or a lost controller must not leave a node drained forever or, worse, half a fleet on
an image nobody is watching.  The journal says exactly where the rollout is (wave, phase) and
is written to the cluster (ledger database) at every transition, so the same command, from any
controller, continues from there.  Every phase is idempotent when re-entered from its start
(drain sets a state that may already be set; replace runs the main job's documentserver layer,
which does nothing when the container already has the wanted spec; gates re-observe; soak
restarts its clock), so "resume" is simply "run the current phase again".

Rollout-level phases: PREFLIGHT, COMPAT; per wave: DRAIN, REPLACE, HEALTH, RETURN, SOAK (the node
is back in the load balancers' table before the soak: a canary soaks under real traffic, which
is what its upstream error rate at each LB and the synthetic session measure); on a failure of
REPLACE/HEALTH/RETURN/SOAK the wave's nodes go through REVERT, REVERT_HEALTH, REVERT_RETURN
to their previous image and the rollout ends ABORTED (exit non-zero, other nodes untouched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ooha.rollout.release import ImageRef


class Phase(str, Enum):
    PREFLIGHT = "preflight"
    COMPAT = "compat"
    DRAIN = "drain"
    REPLACE = "replace"
    HEALTH = "health"
    SOAK = "soak"
    RETURN = "return"
    REVERT = "revert"
    REVERT_HEALTH = "revert-health"
    REVERT_RETURN = "revert-return"
    STOP = "stop"  # scale-in: out of the LBs' table, container stopped (ooha/rollout/live/scale.py)
    JOIN = "join"  # scale-out: announced out, the main job converges the new node and the LBs
    HOST_STEP = "host-step"  # host patching: one step of the current host's turn (ooha/rollout/live/hostdriver.py)
    END = "end"


class Status(str, Enum):
    RUNNING = "running"          # a controller is (or was, if the lock is stale) working on it
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM at a phase boundary; the lock was released
    DONE = "done"                # every planned node on the target and active
    NOOP = "noop"                # nothing to do (never written to the cluster, reported only)
    REFUSED = "refused"          # a gate before any live change said no; nothing changed
    ABORTED = "aborted"          # a gate failed on a wave; its nodes are back on their previous image
    REVERT_FAILED = "revert-failed"  # the automatic revert itself failed: an operator must act
    SUPERSEDED = "superseded"    # an unfinished rollout replaced by a rollback (explicit)
    FAILED = "failed"            # host patching: a step failed, the host's temporary moves undone where safe;
                                 # the same command resumes at that step once the cause is fixed (open, like INTERRUPTED)


HOST_PATCH = "host-patch"
"""``Journal.kind`` of a host-patching run (deploys/patch_hosts.py)."""

OPEN = frozenset({Status.RUNNING, Status.INTERRUPTED, Status.FAILED})
"""Statuses a new run of the same command resumes."""

WAVE_PHASES = (Phase.DRAIN, Phase.REPLACE, Phase.HEALTH, Phase.RETURN, Phase.SOAK)
REVERT_PHASES = (Phase.REVERT, Phase.REVERT_HEALTH, Phase.REVERT_RETURN)
LIVE_CHANGE = frozenset(WAVE_PHASES) | frozenset(REVERT_PHASES)
"""Phases after which the fleet may differ from before the rollout."""


@dataclass(frozen=True)
class Event:
    """One phase run: what, where, from when to when, with which outcome (the audit trail)."""

    phase: Phase
    wave: int
    nodes: tuple[str, ...]
    started: float
    ended: float
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "wave": self.wave, "nodes": list(self.nodes), "started": self.started,
                "ended": self.ended, "ok": self.ok, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(Phase(data["phase"]), int(data["wave"]), tuple(data["nodes"]), float(data["started"]),
                   float(data["ended"]), bool(data["ok"]), str(data.get("detail", "")))


@dataclass
class Journal:
    """Where one rollout is.  ``wave`` is -1 during PREFLIGHT/COMPAT.

    ``previous`` is each planned node's image before the rollout (what REVERT goes back to);
    ``compat_needed`` False when the ledger records the target as having run healthy here
    (rollback) or the operator forced the gate off (recorded in ``reason``-free ``flags``).
    """

    rollout_id: str
    kind: str
    target: ImageRef
    waves: list[list[str]]
    previous: dict[str, ImageRef]
    compat_needed: bool = True
    status: Status = Status.RUNNING
    phase: Phase = Phase.PREFLIGHT
    wave: int = -1
    phase_started: float | None = None
    reason: str = ""
    who: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    # --- where we are ---------------------------------------------------------------------

    def current_nodes(self) -> tuple[str, ...]:
        return tuple(self.waves[self.wave]) if 0 <= self.wave < len(self.waves) else ()

    def finished_nodes(self) -> list[str]:
        """Nodes whose wave went through SOAK successfully (on the target, active, soaked)."""
        done = {e.wave for e in self.events if e.phase is Phase.SOAK and e.ok}
        return [n for i, wave in enumerate(self.waves) if i in done for n in wave]

    @property
    def open(self) -> bool:
        return self.status in OPEN

    # --- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1, "rollout_id": self.rollout_id, "kind": self.kind, "target": self.target.to_dict(),
            "waves": [list(w) for w in self.waves], "previous": {n: r.to_dict() for n, r in self.previous.items()},
            "compat_needed": self.compat_needed, "status": self.status.value, "phase": self.phase.value,
            "wave": self.wave, "phase_started": self.phase_started, "reason": self.reason, "who": self.who,
            "flags": dict(self.flags), "events": [e.to_dict() for e in self.events],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Journal":
        if data.get("format") != 1:
            raise ValueError(f"unknown journal format {data.get('format')!r}")
        return cls(
            rollout_id=str(data["rollout_id"]), kind=str(data["kind"]), target=ImageRef.from_dict(data["target"]),
            waves=[list(w) for w in data["waves"]],
            previous={n: ImageRef.from_dict(r) for n, r in data["previous"].items()},
            compat_needed=bool(data["compat_needed"]), status=Status(data["status"]), phase=Phase(data["phase"]),
            wave=int(data["wave"]), phase_started=data.get("phase_started"), reason=str(data.get("reason", "")),
            who=str(data.get("who", "")), flags=dict(data.get("flags", {})),
            events=[Event.from_dict(e) for e in data.get("events", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> "Journal":
        return cls.from_dict(json.loads(text))


def new_journal(rollout_id: str, kind: str, target: ImageRef, waves: list[list[str]] | tuple[tuple[str, ...], ...],
                previous: dict[str, ImageRef], compat_needed: bool, who: str, now: float) -> Journal:
    """A journal at PREFLIGHT; every planned node must have a previous image (REVERT needs it)."""
    flat = [n for w in waves for n in w]
    missing = [n for n in flat if n not in previous]
    if missing:
        raise ValueError(f"no previous image for {', '.join(missing)}: a revert would have nowhere to go")
    if len(set(flat)) != len(flat):
        raise ValueError("a node appears in two waves")
    return Journal(rollout_id=rollout_id, kind=kind, target=target, waves=[list(w) for w in waves],
                   previous=dict(previous), compat_needed=compat_needed, who=who, phase_started=now)


def _after_wave(journal: Journal) -> tuple[Phase, int, Status]:
    if journal.wave + 1 < len(journal.waves):
        return Phase.DRAIN, journal.wave + 1, Status.RUNNING
    return Phase.END, journal.wave, Status.DONE


def next_step(journal: Journal, ok: bool) -> tuple[Phase, int, Status]:
    """(phase, wave, status) after the current phase ended with ``ok``; pure, no mutation.

    The only table of transitions: success walks the wave phases then the next wave; a failed
    REPLACE/HEALTH/RETURN/SOAK starts the revert of the current wave (the revert takes the node
    out of the table first); a failed DRAIN (the node state could not be set) goes straight to
    REVERT_RETURN (nothing was replaced: put it back); a failed PREFLIGHT/COMPAT stops with
    nothing to undo; a failed revert phase stops
    with REVERT_FAILED (never loop on an automatic undo).
    """
    p, w = journal.phase, journal.wave
    if journal.status not in OPEN:
        raise ValueError(f"rollout {journal.rollout_id} is {journal.status.value}: no next step")
    if p is Phase.PREFLIGHT:
        if not ok:
            return p, w, Status.REFUSED
        if journal.compat_needed:
            return Phase.COMPAT, -1, Status.RUNNING
        return (Phase.DRAIN, 0, Status.RUNNING) if journal.waves else (Phase.END, -1, Status.DONE)
    if p is Phase.COMPAT:
        if not ok:
            return p, w, Status.REFUSED
        return (Phase.DRAIN, 0, Status.RUNNING) if journal.waves else (Phase.END, -1, Status.DONE)
    if p is Phase.DRAIN:
        return (Phase.REPLACE, w, Status.RUNNING) if ok else (Phase.REVERT_RETURN, w, Status.RUNNING)
    if p in (Phase.REPLACE, Phase.HEALTH, Phase.RETURN, Phase.SOAK):
        if not ok:
            return Phase.REVERT, w, Status.RUNNING
        if p is Phase.SOAK:
            return _after_wave(journal)
        return WAVE_PHASES[WAVE_PHASES.index(p) + 1], w, Status.RUNNING
    if p is Phase.REVERT:
        return (Phase.REVERT_HEALTH, w, Status.RUNNING) if ok else (p, w, Status.REVERT_FAILED)
    if p is Phase.REVERT_HEALTH:
        return (Phase.REVERT_RETURN, w, Status.RUNNING) if ok else (p, w, Status.REVERT_FAILED)
    if p is Phase.REVERT_RETURN:
        return (Phase.END, w, Status.ABORTED) if ok else (p, w, Status.REVERT_FAILED)
    raise ValueError(f"no transition from {p.value}")


def record(journal: Journal, ok: bool, now: float, detail: str = "") -> Journal:
    """Close the current phase (an Event), move to the next step, return the same journal.

    The reason of the FIRST failure is kept in ``reason`` (a revert that follows must not hide
    why the rollout was aborted); a revert's own failure is appended to it.
    """
    started = journal.phase_started if journal.phase_started is not None else now
    journal.events.append(Event(journal.phase, journal.wave, journal.current_nodes(), started, now, ok, detail))
    if not ok:
        where = ",".join(journal.current_nodes()) or "cluster"
        line = f"{journal.phase.value} failed on {where}: {detail}".rstrip(": ")
        journal.reason = f"{journal.reason}; {line}" if journal.reason else line
    phase, wave, status = next_step(journal, ok)
    journal.phase, journal.wave, journal.status = phase, wave, status
    journal.phase_started = now
    return journal


def interrupt(journal: Journal, now: float) -> Journal:
    """Ctrl-C/SIGTERM: keep the phase (it is re-run from its start on resume), mark INTERRUPTED."""
    if journal.open:
        journal.status = Status.INTERRUPTED
        journal.events.append(Event(journal.phase, journal.wave, journal.current_nodes(),
                                    journal.phase_started or now, now, False, "interrupted"))
    return journal


def resume(journal: Journal, now: float) -> Journal:
    """Continue an open journal: same wave and phase, phase clock restarted, status RUNNING.

    PREFLIGHT is always re-run on resume even if the journal is past it (the cluster may have
    changed while nobody watched); the driver runs the preflight gate before calling this.
    """
    if not journal.open:
        raise ValueError(f"rollout {journal.rollout_id} is {journal.status.value}: nothing to resume")
    journal.status = Status.RUNNING
    journal.phase_started = now
    return journal


@dataclass(frozen=True)
class StartDecision:
    """What a new invocation does about the newest journal in the cluster."""

    action: str  # "new" | "resume" | "supersede" | "refuse"
    message: str = ""


def decide_start(open_journal: Journal | None, kind: str, target: ImageRef) -> StartDecision:
    """New rollout, resume, supersede, or refuse, given the open journal (if any).

    Same kind and same target: resume (the 3 a.m. case: run the same command again).  A rollback
    while a patch is open: supersede it (the operator wants to go back; the rollback plans from
    what the nodes run now).  Anything else: refuse and say how to finish or supersede.
    """
    if open_journal is None or not open_journal.open:
        return StartDecision("new")
    if open_journal.kind.startswith("scale"):  # a scale's node may be draining or out: finish it first
        node = ",".join(n for w in open_journal.waves for n in w)
        key = "ds_retire" if open_journal.kind == "scale-in" else "ds_join"
        return StartDecision("refuse", (
            f"{open_journal.kind} {open_journal.rollout_id} of {node} is unfinished at {open_journal.phase.value}; "
            f"fix: finish it first with deploys/scale.py --data {key}={node}"))
    if open_journal.kind == HOST_PATCH:  # a host may be mid-turn (drained, a role moved away, rebooting)
        return StartDecision("refuse", unfinished_host_patch(open_journal))
    if open_journal.kind == kind and open_journal.target == target:
        where = ",".join(open_journal.current_nodes()) or "cluster"
        return StartDecision("resume", f"resuming rollout {open_journal.rollout_id} at {where} {open_journal.phase.value}")
    if kind == "rollback":
        return StartDecision("supersede", f"rollout {open_journal.rollout_id} ({open_journal.kind} to "
                                          f"{open_journal.target.version}) is superseded by this rollback")
    return StartDecision("refuse", (
        f"rollout {open_journal.rollout_id} ({open_journal.kind} to {open_journal.target.version}) is unfinished at "
        f"{','.join(open_journal.current_nodes()) or 'cluster'} {open_journal.phase.value}; fix: rerun it with "
        f"ds_version={open_journal.target.version}, or go back with deploys/rollback.py"))


def unfinished_host_patch(journal: Journal) -> str:
    """The refusal naming an open host-patching run (a DS rollout or a scale must not start
    while a host is mid-turn: they share the lock, and the patch run's host may be drained)."""
    host = ",".join(journal.current_nodes()) or "preflight"
    step = journal.flags.get("host_step_name") or journal.phase.value
    return (f"host patching {journal.rollout_id} is unfinished ({journal.status.value}) at {host} step {step}; "
            "fix: finish it first with deploys/patch_hosts.py (the same command resumes it)")
