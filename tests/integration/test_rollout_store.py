"""The rollout store on the lab: database ooha_ops made by the main job, the lock (acquire,
refuse, stale, explicit break, fencing, release), the journals and the release ledger, written
through psql on the Patroni leader; and a switchover under a heartbeating holder.

The store runs over pyinfra Hosts connected here the way the pyinfra CLI connects them for the
driver (inventories/lab.py).  Every row a test writes is deleted in a ``finally``.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Iterator

import pytest

from lab.client import lab_lock, ssh
from lab.workload import cluster_view, wait_healthy
from ooha.rollout import journal as J
from ooha.rollout.ledger import NodeRelease
from ooha.rollout.live import store as S
from ooha.rollout.lock import LockLost, LockRecord
from ooha.rollout.release import ImageRef

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

OLD = ImageRef("onlyoffice/documentserver-ee", "9.0.0")
NEW = ImageRef("onlyoffice/documentserver-ee", "9.0.1", "sha256:" + "ab" * 32)
HOSTILE = "it's \"$$\" $ooha_x$ :var :'v' \\q \\! echo no\nsecond line; DROP TABLE rollout; --"


@pytest.fixture(scope="module")
def postgres_hosts(converged: dict[str, Any]) -> Iterator[list[Any]]:
    """The postgres group's pyinfra Hosts of inventories/lab.py, connected with the same SSH
    settings as the CLI uses for the driver (not through pyinfra_cli: importing it would
    monkey-patch this pytest process with gevent)."""
    from pyinfra.api import Config, Inventory, State

    from inventories.labstate import load_lab_groups

    groups = load_lab_groups()
    all_hosts, all_data = groups.pop("all")
    inventory = Inventory((all_hosts, all_data), **{name: (hosts, {}) for name, hosts in groups.items()})
    State(inventory, Config())
    hosts = list(inventory.get_group("postgres"))
    for host in hosts:
        host.connect(raise_exceptions=True)
    yield hosts
    for host in hosts:
        host.disconnect()


class Written:
    """What a test wrote, deleted at the end whatever happened."""

    def __init__(self, store: S.Store) -> None:
        self.store, self.rollouts, self.nodes, self.tokens = store, set(), set(), set()

    def rollout_id(self) -> str:
        rid = f"test-store-{secrets.token_hex(4)}"
        self.rollouts.add(rid)
        return rid

    def token(self) -> str:
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return token

    def cleanup(self) -> None:
        lit = S.literal
        statements = [f"DELETE FROM rollout WHERE rollout_id = {lit(r)};" for r in sorted(self.rollouts)]
        statements += [f"DELETE FROM node_release WHERE node = {lit(n)};" for n in sorted(self.nodes)]
        statements += [f"DELETE FROM rollout_lock WHERE token = {lit(t)};" for t in sorted(self.tokens)]
        self.store._call(S.script(*statements, "SELECT 'null'::jsonb;"))


@pytest.fixture
def written(postgres_hosts: list[Any]) -> Iterator[Written]:
    store = S.Store(postgres_hosts)
    held = store.lock()
    assert held is None, f"a rollout lock is held on the lab (not by this test): {held}"
    record = Written(store)
    try:
        yield record
    finally:
        record.cleanup()


def _lock(rid: str, token: str, now: float, stale_after_s: float = 300.0) -> LockRecord:
    return LockRecord(rid, token, "tester@ci", 4242, "patch 9.0.1", now, now, stale_after_s, "")


def _journal(rid: str, now: float, reason: str = "") -> J.Journal:
    journal = J.new_journal(rid, "patch", NEW, [["ds1"], ["ds2", "ds3"]], {n: OLD for n in ("ds1", "ds2", "ds3")},
                            True, "tester@ci", now)
    journal.reason = reason
    return journal


def test_ooha_ops_is_ready_after_the_main_job(postgres_hosts: list[Any]) -> None:
    assert S.Store(postgres_hosts).ready() is None


def test_lock_acquire_refuse_fence_break_release(postgres_hosts: list[Any], written: Written) -> None:
    store = S.Store(postgres_hosts)
    now = time.time()
    a_id, a_token = written.rollout_id(), written.token()
    journal_a = _journal(a_id, now, reason=HOSTILE)
    first = store.acquire(_lock(a_id, a_token, now), journal_a, now)
    assert first.action == "acquire", first
    held = store.lock()
    assert held is not None and held.token == a_token and held.heartbeat_at == now, held
    assert store.journal(a_id) == journal_a  # the journal went in with the lock, hostile reason intact

    # A second run (another token) is refused with the holder explained; nothing of it is written.
    b_id, b_token = written.rollout_id(), written.token()
    refused = store.acquire(_lock(b_id, b_token, now + 5), _journal(b_id, now + 5), now + 5)
    assert refused.action == "refuse" and "held by tester@ci (pid 4242, patch 9.0.1, rollout " + a_id in refused.message
    assert "alive" in refused.message and store.journal(b_id) is None

    # The holder saves and heartbeats; a wrong token is fenced off (LockLost), changing nothing.
    J.record(journal_a, True, now + 10, "preflight ok")
    store.save(journal_a, a_token, now + 10)
    assert store.journal(a_id) == journal_a and store.lock().phase == "compat"
    with pytest.raises(LockLost):
        store.save(journal_a, b_token, now + 11)
    with pytest.raises(LockLost):
        store.heartbeat(b_token, "drain ds1", now + 11)
    store.heartbeat(a_token, "drain ds1", now + 12)
    assert store.lock().heartbeat_at == now + 12 and store.lock().phase == "drain ds1"

    # Stale (no heartbeat for > 300 s, seen from a `now` in the future): refused unless broken by name.
    later = now + 12 + 301
    stale = store.acquire(_lock(b_id, b_token, later), _journal(b_id, later), later)
    assert stale.action == "refuse" and "STALE" in stale.message and f"rollout_break_lock={a_id}" in stale.message
    wrong = store.acquire(_lock(b_id, b_token, later), _journal(b_id, later), later, break_id="no-such-rollout")
    assert wrong.action == "refuse" and "does not name the holder" in wrong.message
    live = store.acquire(_lock(b_id, b_token, now + 20), _journal(b_id, now + 20), now + 20, break_id=a_id)
    assert live.action == "refuse" and "refusing to break a live lock" in live.message
    broken = store.acquire(_lock(b_id, b_token, later), _journal(b_id, later), later, break_id=a_id)
    assert broken.action == "break-and-acquire", broken
    assert store.lock().token == b_token and store.journal(b_id) is not None

    # The old holder wakes up: every write of it is refused; its release does not free B's lock.
    with pytest.raises(LockLost, match=f"belongs to rollout {b_id}"):
        store.heartbeat(a_token, "soak ds1", later + 1)
    with pytest.raises(LockLost):
        store.put_releases([NodeRelease("test-store-node", NEW, later, a_id)], a_token)
    store.release(a_token)
    assert store.lock().token == b_token
    store.release(b_token)
    assert store.lock() is None


def test_release_ledger_round_trip(postgres_hosts: list[Any], written: Written) -> None:
    store = S.Store(postgres_hosts)
    now = time.time()
    rid, token = written.rollout_id(), written.token()
    nodes = [f"test-store-{secrets.token_hex(3)}" for _ in range(2)]
    written.nodes.update(nodes)
    rows = [NodeRelease(nodes[0], OLD, now - 86400.5, None), NodeRelease(nodes[1], NEW, now, rid, OLD, True)]
    store.put_releases(rows, None)
    mine = lambda: sorted((r for r in store.releases() if r.node in nodes), key=lambda r: r.node)  # noqa: E731
    assert mine() == sorted(rows, key=lambda r: r.node)

    # Fenced by the lock: written while the token holds it, LockLost (nothing written) otherwise.
    assert store.acquire(_lock(rid, token, now), _journal(rid, now), now).action == "acquire"
    moved = NodeRelease(nodes[0], NEW, now + 1, rid, OLD, False)
    store.put_releases([moved], token)
    assert moved in mine()
    with pytest.raises(LockLost):
        store.put_releases([NodeRelease(nodes[0], OLD, now + 2, rid)], "not-the-token")
    assert moved in mine()
    store.release(token)


def test_open_journal_finds_running_not_done(postgres_hosts: list[Any], written: Written) -> None:
    store = S.Store(postgres_hosts)
    now = time.time() + 10 ** 6  # newer than any real rollout on the lab, so it is THE newest open one
    rid, token = written.rollout_id(), written.token()
    journal = _journal(rid, now)
    assert store.acquire(_lock(rid, token, now), journal, now).action == "acquire"
    found = store.open_journal()
    assert found is not None and found.rollout_id == rid and found.status is J.Status.RUNNING
    journal.status = J.Status.INTERRUPTED
    store.save(journal, token, now + 1)
    assert store.open_journal().rollout_id == rid
    journal.status = J.Status.DONE
    store.save(journal, token, now + 2)
    found = store.open_journal()
    assert found is None or found.rollout_id != rid
    [record] = [r for r in store.records(10) if r.rollout_id == rid]
    assert record.outcome == "done" and record.who == "tester@ci" and record.target == NEW
    store.release(token)


def test_a_switchover_does_not_stop_the_holder(converged: dict[str, Any], postgres_hosts: list[Any],
                                               written: Written) -> None:
    """Heartbeats keep succeeding while Patroni moves the leader (the store finds it again)."""
    store = S.Store(postgres_hosts)
    now = time.time()
    rid, token = written.rollout_id(), written.token()
    assert store.acquire(_lock(rid, token, now), _journal(rid, now), now).action == "acquire"
    with lab_lock():
        view = wait_healthy(converged)
        leader = view["leader"]
        candidate = next(m["name"] for m in view["members"] if m["role"] == "sync_standby")
        outcome: dict[str, Any] = {}

        def switchover() -> None:
            outcome["result"] = ssh(converged, leader, "sudo patronictl -c /etc/patroni/config.yml switchover "
                                                       f"--candidate {candidate} --force")

        thread = threading.Thread(target=switchover)
        thread.start()
        slowest, beats, end = 0.0, 0, time.monotonic() + 30
        while time.monotonic() < end:
            started = time.monotonic()
            store.heartbeat(token, "soak ds1", time.time())  # raises (StoreError) if the failover killed it
            slowest, beats = max(slowest, time.monotonic() - started), beats + 1
            if not thread.is_alive() and store.leader() is not None and store.leader().name == candidate:
                break
        thread.join(timeout=60)
        assert outcome.get("result", (1, ""))[0] == 0, outcome
        assert store.leader().name == candidate, (store.leader(), cluster_view(converged))
        wait_healthy(converged)
    store.release(token)
    print(f"rollout store: {beats} heartbeats across a switchover {leader} -> {candidate}, slowest {slowest:.1f} s")
