"""Clients of the front door for the load-balancer tests: editor sessions through the VIP."""

from __future__ import annotations

import time
from typing import Any

from websockets.sync.client import ClientConnection

from lab.workload import editor_session


def session(state: dict[str, Any], key: str, shardkey: bool = True, timeout: float = 10) -> tuple[ClientConnection, str]:
    """Open an editor websocket for document ``key`` through the VIP (lab/workload.py editor_session)."""
    return editor_session(state, key, shardkey, timeout)


def alive(ws: ClientConnection) -> bool:
    """The session still answers (a ping gets its pong within 5 s).

    websockets' sync ``ping()`` returns a ``threading.Event``: ``wait`` returns False on a
    timeout instead of raising (and with ``ack_on_close`` False a close never sets it).
    """
    try:
        return ws.ping().wait(5)
    except Exception:  # already closed or reset: ping() raises, the session is gone
        return False


def close_all(sockets: list[ClientConnection]) -> None:
    for ws in sockets:
        try:
            ws.close()
        except Exception:  # already dead with its node
            pass


def unique(prefix: str) -> str:
    """A document key never seen before (so the shard table has no entry for it)."""
    return f"{prefix}-{time.time_ns()}"
