"""The cluster-side rollout lock: one rollout at a time, whoever's controller runs it.

Why in the cluster (a row in ``ooha_ops.rollout_lock``, one row at most, taken in the same
transaction that opens the journal): two operators on two laptops must exclude each other, which
a file on a controller cannot do.  Why not a PostgreSQL advisory lock: it lives as long as one
database session, and the driver's waves are separate SSH commands.

Staleness: the holder writes ``heartbeat_at`` at every journal write and every
``heartbeat_every_s`` during long waits; a lock whose heartbeat is older than ``stale_after_s``
is STALE (its controller is probably gone).  A stale lock is never taken over automatically (a
hung controller may wake up mid-wave): it is explained (who, where, pid, since, last
heartbeat, phase) and broken only explicitly, by naming its rollout id
(``--data rollout_break_lock=<id>``).  A fresh lock cannot be broken: wait until it is stale.
Fencing: every write of the holder is conditional on its ``token``; a holder whose lock was
broken finds 0 rows updated and stops before the next wave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_STALE_AFTER_S = 300.0
DEFAULT_HEARTBEAT_EVERY_S = 30.0


@dataclass(frozen=True)
class LockRecord:
    rollout_id: str
    token: str
    holder: str  # "user@controller"
    pid: int
    command: str  # "patch 9.3.1.2" / "rollback"
    acquired_at: float
    heartbeat_at: float
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    phase: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rollout_id": self.rollout_id, "token": self.token, "holder": self.holder, "pid": self.pid,
                "command": self.command, "acquired_at": self.acquired_at, "heartbeat_at": self.heartbeat_at,
                "stale_after_s": self.stale_after_s, "phase": self.phase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LockRecord":
        return cls(str(d["rollout_id"]), str(d["token"]), str(d["holder"]), int(d["pid"]), str(d["command"]),
                   float(d["acquired_at"]), float(d["heartbeat_at"]), float(d.get("stale_after_s", DEFAULT_STALE_AFTER_S)),
                   str(d.get("phase", "")))

    def age(self, now: float) -> float:
        return now - self.heartbeat_at

    def is_stale(self, now: float) -> bool:
        return self.age(now) > self.stale_after_s


def explain(lock: LockRecord, now: float) -> str:
    """One line an operator can act on: who holds it, since when, is it alive, how to break it."""
    head = (f"rollout lock held by {lock.holder} (pid {lock.pid}, {lock.command}, rollout {lock.rollout_id}"
            f"{', phase ' + lock.phase if lock.phase else ''}) for {now - lock.acquired_at:.0f} s, "
            f"last heartbeat {lock.age(now):.0f} s ago")
    if lock.is_stale(now):
        return (f"{head}: STALE (no heartbeat for more than {lock.stale_after_s:.0f} s: its controller is probably gone); "
                f"fix: make sure no rollout runs from {lock.holder}, then rerun with --data rollout_break_lock={lock.rollout_id}")
    wait = lock.stale_after_s - lock.age(now)
    return (f"{head}: alive; fix: wait for it to finish (or, if its controller is gone, it becomes stale in "
            f"{wait:.0f} s and can then be broken with --data rollout_break_lock={lock.rollout_id})")


@dataclass(frozen=True)
class LockDecision:
    action: str  # "acquire" | "break-and-acquire" | "refuse"
    message: str = ""


def decide_acquire(existing: LockRecord | None, now: float, break_id: str | None = None) -> LockDecision:
    """May this invocation take the lock?  ``break_id``: the rollout id the operator named to break."""
    if existing is None:
        if break_id:
            return LockDecision("acquire", f"no lock to break (rollout_break_lock={break_id} ignored)")
        return LockDecision("acquire")
    if break_id is None:
        return LockDecision("refuse", explain(existing, now))
    if break_id != existing.rollout_id:
        return LockDecision("refuse", f"rollout_break_lock={break_id} does not name the holder; {explain(existing, now)}")
    if not existing.is_stale(now):
        return LockDecision("refuse", f"refusing to break a live lock; {explain(existing, now)}")
    return LockDecision("break-and-acquire", f"breaking the stale lock of rollout {existing.rollout_id} held by {existing.holder}")


def heartbeat(lock: LockRecord, token: str, now: float, phase: str) -> LockRecord:
    """The record after a heartbeat by ``token``; a foreign token means the lock was lost (fencing)."""
    if token != lock.token:
        raise LockLost(f"rollout lock now belongs to rollout {lock.rollout_id} ({lock.holder}): this run stops")
    return LockRecord(lock.rollout_id, lock.token, lock.holder, lock.pid, lock.command, lock.acquired_at, now,
                      lock.stale_after_s, phase)


class LockLost(RuntimeError):
    """The holder's token no longer owns the lock: stop before touching another node."""


def heartbeat_due(last: float, now: float, every: float = DEFAULT_HEARTBEAT_EVERY_S) -> bool:
    return now - last >= every


def timing_problems(stale_after_s: float, heartbeat_every_s: float) -> list[str]:
    """Input rule: a lock must survive several missed heartbeats (an SSH hiccup, a PostgreSQL
    failover of ~12 s) before it looks stale, else a live rollout could be broken."""
    if stale_after_s < 3 * heartbeat_every_s:
        return [f"all: rollout_lock_stale_seconds: {stale_after_s:.0f} is under 3 heartbeats of {heartbeat_every_s:.0f} s; "
                f"fix: raise it to at least {3 * heartbeat_every_s:.0f}"]
    return []
