"""Terminal progress lines: which node, which phase, sessions left, elapsed.

Why a fixed format: an operator at 3 a.m. reads the last line; a test greps it.
``[  2m14s] wave 2/3 ds2 (az2) drain: 3 session(s) left, 41 s of 600``.
"""

from __future__ import annotations

from ooha.rollout.journal import Journal


def elapsed_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(journal: Journal, started: float, now: float, azs: dict[str, str], detail: str = "") -> str:
    where = "cluster"
    if journal.current_nodes():
        where = f"wave {journal.wave + 1}/{len(journal.waves)} " + ", ".join(
            f"{n} ({azs.get(n, '?')})" for n in journal.current_nodes())
    line = f"[{elapsed_text(now - started):>7}] {where} {journal.phase.value}"
    return f"{line}: {detail}" if detail else line
