"""Scale the Document Server tier in and out with the rollout engine (issue 11, deliverable 4).

Why a command and a membership check, not the main job alone: the main job renders the load
balancers' node list from the inventory at plan time.  Removing a DS host from the inventory
would drop it from both LBs at the next reload WITHOUT a drain (its editors' documents
re-pointed to other nodes while their sockets still edit on it) and leave its container
running unwatched; adding one would put it into the table as soon as the LB layer runs,
whether or not its container ever became healthy (pyinfra drops a failed host and goes on).

So ``deploys/scale.py`` does the live part through the engine (lock, journal, ledger, drain,
health gate, progress), and the main job refuses a membership change it did not prepare:

- scale in (``--data ds_retire=ds3``, the host still in the inventory so it can be reached):
  preflight (the other nodes healthy, capacity for its sessions), drain (``draining``, wait
  for its editing sessions up to ``ds_drain_seconds``), ``out`` in the node-state hash (out
  of BOTH LBs: they read the same Redis), THEN its container stops;
  a ``retired`` marker on every LB and on the node; its ledger row dropped.  The operator
  then removes the host from the inventory and runs the main job.
- scale out (``--data ds_join=ds4``, the host added to the inventory): the node is announced
  ``out`` in the hash (so the LBs render it without routing to it), a ``joining`` marker on
  every LB, the main job converges the whole cluster (per-node database, vhost, container,
  LB tables), the health gate (runs the inventory's release, ``/healthcheck`` true, version),
  then ``active``; a ledger row.  A failed gate leaves it ``out`` (never served), exit 1.
- the main job (loadbalancer layer, plan time): a node in an LB's deployed table but not in the
  inventory must carry a ``retired`` marker; a node in the inventory but not in the table a
  ``joining`` one; otherwise it refuses, naming the node and the command to run.  An LB with
  no deployed table (first converge, a rebuilt LB) checks nothing.

Everything here is pure (no I/O): the live part is ooha/rollout/live/scale.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

RETIRED, JOINING = "retired", "joining"
MARKER_FILE = "/etc/onlyoffice-ha/loadbalancer/scale.json"
"""On every LB: node -> {"change": retired|joining, "rollout_id"}; written by the scale command,
read by the loadbalancer layer at plan time, pruned by it once the change is rendered."""
NODE_MARKER_FILE = "/etc/onlyoffice-ha/documentserver/retired.json"
"""On a retired DS node: the main job refuses to start its container again while it is in the
inventory (finish: remove it from the inventory, or bring it back with ds_join)."""

SCALE_KEYS = ("ds_retire", "ds_join")

_LUA_NODE = re.compile(r'^\s*\{ name = "((?:[^"\\]|\\.)*)", host = ')


class ScaleOptions(BaseModel):
    """The scale command's keys: exactly one of ``ds_retire`` / ``ds_join``, a DS host's name."""

    model_config = ConfigDict(extra="ignore")

    ds_retire: str | None = None
    ds_join: str | None = None

    @field_validator("ds_retire", "ds_join")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value)):
            raise ValueError("is not a host name (letters, digits, '.', '_', '-')")
        return value


def scale_problems(data: Any, docs: list[str]) -> list[str]:
    """One "KEY: problem; fix: ..." line per bad scale input (``data``: HostData or dict)."""
    values = {key: data.get(key) for key in SCALE_KEYS if data.get(key) is not None}
    try:
        options = ScaleOptions(**{k: str(v) for k, v in values.items()})
    except ValidationError as error:
        return [f"{item['loc'][0]}: {values.get(str(item['loc'][0]))!r}: {str(item['msg']).removeprefix('Value error, ')}; "
                f"fix: --data {item['loc'][0]}=<a host of the docs group>" for item in error.errors()]
    problems = []
    if options.ds_retire is None and options.ds_join is None:
        problems.append("ds_retire/ds_join: neither is set; fix: --data ds_retire=<docs host> to scale in, "
                        "or --data ds_join=<docs host> to scale out")
    if options.ds_retire is not None and options.ds_join is not None:
        problems.append("ds_retire/ds_join: both are set; fix: one change per run")
    for key in SCALE_KEYS:
        name = getattr(options, key)
        if name is not None and name not in docs:
            problems.append(f"{key}: {name!r} is not in the inventory's docs group ({', '.join(docs) or 'empty'}); "
                            f"fix: {'keep it in the inventory until it is retired' if key == 'ds_retire' else 'add it to the docs group first'}")
    if options.ds_retire is not None and options.ds_retire in docs and len(docs) < 2:
        problems.append(f"ds_retire: {options.ds_retire} is the only Document Server node; fix: add another one first")
    return problems


def scale_request(data: Any) -> tuple[str, str]:
    """("scale-in", node) or ("scale-out", node) of validated ``data``."""
    if data.get("ds_retire"):
        return "scale-in", str(data.get("ds_retire"))
    return "scale-out", str(data.get("ds_join"))


# --- the LBs' deployed table and markers --------------------------------------------------------


def lua_nodes(lines: list[str] | None) -> list[str] | None:
    """The node names of a deployed ooha_shard.lua (``M.nodes``); None: no deployed table."""
    if not lines:
        return None
    names = []
    for line in lines:
        match = _LUA_NODE.match(line)
        if match:
            names.append(match.group(1).encode().decode("unicode_escape"))
    return names


def parse_markers(lines: list[str] | str | None) -> dict[str, dict[str, str]]:
    """MARKER_FILE's contents -> {node: {"change", "rollout_id"}} (absent/unreadable: none)."""
    text = "\n".join(lines) if isinstance(lines, list) else (lines or "")
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): {"change": str(v.get("change")), "rollout_id": str(v.get("rollout_id", ""))}
            for k, v in value.items() if isinstance(v, dict) and v.get("change") in (RETIRED, JOINING)}


def with_marker(markers: dict[str, dict[str, str]], node: str, change: str, rollout_id: str) -> str:
    """MARKER_FILE's new text with ``node`` marked ``change`` (replacing its previous marker)."""
    updated = {k: v for k, v in markers.items() if k != node}
    updated[node] = {"change": change, "rollout_id": rollout_id}
    return json.dumps(updated, sort_keys=True) + "\n"


def membership_problems(lb: str, live: list[str] | None, inventory: list[str],
                        markers: dict[str, dict[str, str]], inventory_file: str = "INVENTORY") -> list[str]:
    """The main job's refusal on one LB: membership changes the scale command did not prepare.

    ``live``: the nodes of the LB's deployed table (None: nothing deployed, nothing to check).
    """
    if live is None:
        return []
    problems = []
    for node in live:
        if node not in inventory and markers.get(node, {}).get("change") != RETIRED:
            problems.append(
                f"{lb}: docs: {node} is in the load balancers' table but no longer in the inventory, and it was not "
                f"retired (its open editing sessions would be cut and its container left running); fix: put {node} "
                f"back in the inventory, run `pyinfra {inventory_file} deploys/scale.py --data ds_retire={node}`, "
                "then remove it and run the main job (a host lost for good: --data ds_membership_change=<why>)")
    for node in inventory:
        if node not in live and markers.get(node, {}).get("change") != JOINING:
            problems.append(
                f"{lb}: docs: {node} is new to the load balancers' table; fix: run "
                f"`pyinfra {inventory_file} deploys/scale.py --data ds_join={node}` (it joins after its health gate)")
    return problems


def remaining_markers(markers: dict[str, dict[str, str]], inventory: list[str]) -> dict[str, dict[str, str]]:
    """The markers still needed once the LB renders ``inventory``: a retired node still in the
    inventory (the operator has not removed it yet) keeps its marker; a joining node is rendered
    now and a removed retired one is gone: theirs are done."""
    return {n: m for n, m in markers.items() if m["change"] == RETIRED and n in inventory}


def retired_refusal(node: str, marker_lines: list[str] | None) -> str | None:
    """The documentserver layer's refusal for a node retired by scale-in that is still in the
    inventory (the main job would start its container again); None when not retired."""
    text = "\n".join(marker_lines or [])
    if not text.strip():
        return None
    try:
        rollout_id = str(json.loads(text).get("rollout_id", "?"))
    except (ValueError, AttributeError):
        rollout_id = "?"
    return (f"{node}: retired by scale-in {rollout_id} (drained, out of the load balancers, container stopped) but "
            f"still in the inventory; fix: remove {node} from the inventory and rerun, or bring it back with "
            f"deploys/scale.py --data ds_join={node}")
