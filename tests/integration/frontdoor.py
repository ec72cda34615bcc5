"""Clients of the front door for the load-balancer tests: editor sessions through the VIP."""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

from websockets.sync.client import ClientConnection, connect

from lab.workload import vip


def session(state: dict[str, Any], key: str, shardkey: bool = True, timeout: float = 10) -> tuple[ClientConnection, str]:
    """Open an editor websocket for document ``key`` through the VIP (lab CA verified).

    Returns the open connection and the node named in the server's welcome message.
    ``shardkey=False`` leaves the query argument out (routing by the /doc/<key>/ path).
    """
    context = ssl.create_default_context(cafile=state["ca_cert"])
    query = f"?shardkey={key}&EIO=4&transport=websocket" if shardkey else "?EIO=4&transport=websocket"
    url = f"wss://{vip(state)}/doc/{key}/c/{query}"
    try:
        ws = connect(url, ssl=context, proxy=None, open_timeout=timeout)
    except TimeoutError:
        # An editor reconnects when its socket does not open; so does this client, once,
        # saying so (seen rarely on the shared 2-core test machine, never twice in a row).
        print(f"\nsession {key}: handshake timed out after {timeout} s, reconnecting once")
        ws = connect(url, ssl=context, proxy=None, open_timeout=timeout)
    welcome = json.loads(ws.recv(timeout=timeout))
    assert welcome.get("type") == "welcome" and welcome.get("key") == key, welcome
    return ws, str(welcome["node"])


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
