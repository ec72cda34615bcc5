"""The release ledger: what each node runs, since when, what it ran before, and every rollout.

Why in the cluster (PostgreSQL database ``ooha_ops``, see docs/architecture.md): the ledger is the
audit trail of releases and the source of ``rollback.py``'s target, so it must survive the loss of
the controller, be the same for every operator, and be in the backups (pgBackRest covers it).
This module is the record format and the decisions over it; the driver stores the dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ooha.rollout.journal import Journal, Phase, Status
from ooha.rollout.release import ImageRef


@dataclass(frozen=True)
class NodeRelease:
    """Row ``node_release``: one node's current image, since when, by which rollout, the previous one."""

    node: str
    current: ImageRef
    since: float
    rollout_id: str | None
    previous: ImageRef | None = None
    healthy_verified: bool = False  # passed the health gate AND the soak with ``current``
    previous_verified: bool = False  # ``previous`` had (kept when ``current`` is replaced)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "current": self.current.to_dict(), "since": self.since, "rollout_id": self.rollout_id,
                "previous": self.previous.to_dict() if self.previous else None, "healthy_verified": self.healthy_verified,
                "previous_verified": self.previous_verified}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NodeRelease":
        return cls(str(d["node"]), ImageRef.from_dict(d["current"]), float(d["since"]), d.get("rollout_id"),
                   ImageRef.from_dict(d["previous"]) if d.get("previous") else None, bool(d.get("healthy_verified", False)),
                   bool(d.get("previous_verified", False)))


def node_changed(old: NodeRelease | None, node: str, running: ImageRef, now: float, rollout_id: str | None,
                 verified: bool) -> NodeRelease:
    """The row after ``node`` was seen running ``running`` (after a replace's health gate, a revert,
    or a first sighting by the report).  Same image: keep ``since``/``previous`` (idempotent);
    a different image: the old current becomes previous."""
    if old is not None and old.current == running:
        return NodeRelease(node, running, old.since, old.rollout_id, old.previous, old.healthy_verified or verified,
                           old.previous_verified)
    return NodeRelease(node, running, now, rollout_id, old.current if old else None, verified,
                       bool(old and old.healthy_verified))


def node_reverted(before: NodeRelease | None, node: str, running: ImageRef, now: float, rollout_id: str | None) -> NodeRelease:
    """The row after an automatic revert: the row from BEFORE the failed wave when the node is back
    on that image (so ``previous`` never names the image that failed, and rollback.py still finds
    the fleet's real previous release); the attempt itself is in the rollout record."""
    if before is not None and before.current == running:
        return before
    return node_changed(before, node, running, now, rollout_id, verified=False)


@dataclass(frozen=True)
class RolloutRecord:
    """Row ``rollout``: one rollout's summary (its journal, with every phase, is stored beside it)."""

    rollout_id: str
    kind: str
    target: ImageRef
    who: str
    started: float
    ended: float | None
    outcome: str
    reason: str = ""
    phases: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "kind": self.kind, "target": self.target.to_dict(), "who": self.who,
                "started": self.started, "ended": self.ended, "outcome": self.outcome, "reason": self.reason,
                "phases": [dict(p) for p in self.phases]}


def rollout_record(journal: Journal) -> RolloutRecord:
    """The ledger row of a journal (phases with times and outcomes = the audit trail)."""
    started = journal.events[0].started if journal.events else (journal.phase_started or 0.0)
    ended = journal.events[-1].ended if journal.events and not journal.open else None
    return RolloutRecord(journal.rollout_id, journal.kind, journal.target, journal.who, started, ended,
                         journal.status.value, journal.reason, tuple(e.to_dict() for e in journal.events))


def verified_images(rows: list[NodeRelease], records: list[RolloutRecord]) -> set[str]:
    """Image refs recorded as having run healthy HERE: a node passed the soak with it.

    From the rows (``healthy_verified``) and from finished rollouts' successful SOAK events
    (so an image that ran healthy and was later replaced still counts).  rollback.py skips the
    compat gate only for these.
    """
    refs = {row.current.ref for row in rows if row.healthy_verified}
    refs |= {row.previous.ref for row in rows if row.previous is not None and row.previous_verified}
    for rec in records:
        if any(p["phase"] == Phase.SOAK.value and p["ok"] for p in rec.phases):
            refs.add(rec.target.ref)
    return refs


@dataclass(frozen=True)
class RollbackTarget:
    target: ImageRef | None
    problem: str = ""


def rollback_target(rows: list[NodeRelease]) -> RollbackTarget:
    """The fleet's previous release, for ``rollback.py`` without ``ds_version``.

    Nodes on the newest release (the most common ``current``) go back to their ``previous``;
    every such node must name the same previous, else the operator chooses (``ds_version=``).
    """
    if not rows:
        return RollbackTarget(None, "the ledger has no node rows; fix: pass --data ds_version=")
    counts: dict[ImageRef, int] = {}
    for row in rows:
        counts[row.current] = counts.get(row.current, 0) + 1
    newest = max(counts, key=lambda ref: (max(r.since for r in rows if r.current == ref), counts[ref]))
    previous = {row.previous for row in rows if row.current == newest}
    if None in previous:
        return RollbackTarget(None, f"a node on {newest} has no previous release in the ledger; fix: pass --data ds_version=")
    if len(previous) != 1:
        names = ", ".join(sorted(str(p) for p in previous))
        return RollbackTarget(None, f"nodes on {newest} came from different releases ({names}); fix: pass --data ds_version=")
    return RollbackTarget(previous.pop())


def fleet_line(rows: list[NodeRelease], rollout_open: bool) -> tuple[bool, str]:
    """The report's fleet line: (ok, text).  Mixed versions are flagged unless a rollout is open."""
    if not rows:
        return False, "no release recorded"
    by_ref: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r.node):
        by_ref.setdefault(row.current.ref, []).append(row.node)
    text = "; ".join(f"{ref} on {', '.join(nodes)}" for ref, nodes in sorted(by_ref.items()))
    if len(by_ref) > 1 and not rollout_open:
        return False, f"mixed versions outside a rollout: {text}; fix: finish the rollout or roll back"
    return True, text + (" (rollout in progress)" if rollout_open and len(by_ref) > 1 else "")


def final_outcome_exit_code(status: Status) -> int:
    """The command's exit code: 0 for done/noop, 1 for anything an operator must look at."""
    return 0 if status in (Status.DONE, Status.NOOP) else 1
