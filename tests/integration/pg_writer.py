"""A client on a Document Server host that writes numbered rows in a loop through the stable
PostgreSQL endpoint (HAProxy on 127.0.0.1:5432) and records each acknowledged id, plus the
helpers the PostgreSQL drills and the failover benchmark share (who leads, wait for a state).

Each row is one ``psql`` run, i.e. a new connection: a client that reconnects after an
error, as Document Server's pool does.  A row counts as acknowledged only when psql
exited 0 after COMMIT (synchronous mode: a standby has it too).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.integration.conftest import connect, ssh

DATA_HOSTS = ("data1", "data2", "data3")
TABLE = "ooha_drill_rows"


def put_private_file(lab: dict[str, Any], host: str, path: str, content: str) -> None:
    """Write a file readable by admin only on ``host``, content over stdin (never in argv)."""
    client = connect(lab, host)
    try:
        stdin, stdout, _ = client.exec_command(f"umask 077 && cat > {shlex.quote(path)}", timeout=30)
        stdin.write(content)
        stdin.channel.shutdown_write()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def cluster_view(lab: dict[str, Any], hosts: tuple[str, ...] = DATA_HOSTS) -> dict[str, Any] | None:
    """Patroni's /cluster from the first of ``hosts`` that answers, plus each member's own role."""
    from ooha.facts.patroni import _CLUSTER_SCRIPT, parse_patroni_cluster

    for name in hosts:
        try:
            rc, out = ssh(lab, name, f"python3 -c {shlex.quote(_CLUSTER_SCRIPT)} http://127.0.0.1:8008", timeout=20)
        except Exception:  # noqa: BLE001  (a stopped host: ask the next one)
            continue
        view = parse_patroni_cluster(out.strip().splitlines()[-1] if out.strip() else "")
        if rc == 0 and view is not None:
            return view
    return None


def wait_for(what: str, condition: Callable[[], Any], deadline: float, interval: float = 1.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what} (last: {last!r})")


def healthy(view: dict[str, Any] | None, members: int = 3) -> bool:
    """One leader, every other member streaming with a known lag, a sync standby, one timeline.

    Right after a failover a streaming replica can still report the previous timeline for a
    few Patroni loops; a settled cluster has every member on the leader's timeline.
    """
    if not view or not view["leader"] or len(view["primaries"]) != 1 or len(view["members"]) != members:
        return False
    if len({m.get("timeline") for m in view["members"]}) != 1:
        return False
    replicas = [m for m in view["members"] if m["name"] != view["leader"]]
    return all(m["streaming"] and m["state"] == "running" and m["lag"] is not None for m in replicas) \
        and bool(view["sync_standbys"])


def wait_healthy(lab: dict[str, Any], deadline: float = 180) -> dict[str, Any]:
    return wait_for("a healthy Patroni cluster", lambda: v if healthy(v := cluster_view(lab)) else None, deadline)


@dataclass
class PgWriter:
    """The writer loop on ``host``; ``start`` it, break something, ``stop`` it, read ``acked``."""

    lab: dict[str, Any]
    host: str = "ds1"
    address: str = "127.0.0.1"
    port: int = 5432
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def _log(self) -> str:
        return f"/tmp/ooha-pgwriter-{self.run}.log"

    @property
    def _stop(self) -> str:
        return f"/tmp/ooha-pgwriter-{self.run}.stop"

    def _psql(self, sql: str, timeout: int = 10) -> str:
        return (f"PGPASSFILE=$HOME/.ooha-pgpass PGCONNECT_TIMEOUT=2 timeout {timeout} psql -h {self.address} "
                f"-p {self.port} -U onlyoffice -d onlyoffice -XAtq -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}")

    def prepare(self, password: str) -> None:
        """The client's password file (0600) and the drill table."""
        put_private_file(self.lab, self.host, ".ooha-pgpass", f"*:*:onlyoffice:onlyoffice:{password}\n")
        sql = f"create table if not exists {TABLE} (run text, id int, at timestamptz default now(), primary key (run, id))"
        rc, out = ssh(self.lab, self.host, self._psql(sql, timeout=20), timeout=40)
        assert rc == 0, out

    def start(self, max_seconds: int = 300) -> None:
        """Start the loop in the background on the host; it stops by itself after max_seconds."""
        # Double quotes so the shell expands $i (run is hex: nothing else to expand).
        insert = self._psql("X", timeout=5).replace("-c X", f"-c \"insert into {TABLE} (run, id) values ('{self.run}', $i)\"")
        loop = (
            f"i=0; end=$((SECONDS+{int(max_seconds)})); "
            f"while [ $SECONDS -lt $end ] && [ ! -e {self._stop} ]; do i=$((i+1)); "
            f"if {insert} >/dev/null 2>&1; then echo \"ok $i $(date +%s.%N)\"; "
            f"else echo \"fail $i $(date +%s.%N)\"; sleep 0.1; fi; done; echo done"
        )
        rc, out = ssh(self.lab, self.host, f"nohup bash -c {shlex.quote(loop)} > {self._log} 2>&1 < /dev/null &")
        assert rc == 0, out

    def events(self) -> list[tuple[str, int, float]]:
        """(ok|fail, id, unix time) lines so far."""
        rc, out = ssh(self.lab, self.host, f"cat {self._log} 2>/dev/null || true")
        events = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("ok", "fail"):
                events.append((parts[0], int(parts[1]), float(parts[2])))
        return events

    def acked(self) -> list[int]:
        return [i for kind, i, _ in self.events() if kind == "ok"]

    def acked_after(self, when: float) -> int:
        """How many rows were acknowledged after unix time ``when``."""
        return sum(1 for kind, _, at in self.events() if kind == "ok" and at > when)

    def stop(self, deadline: float = 30) -> list[tuple[str, int, float]]:
        """Stop the loop and return its events."""
        ssh(self.lab, self.host, f"touch {self._stop}")
        wait_for("the writer loop to end", lambda: ssh(self.lab, self.host, f"tail -n1 {self._log}")[1].strip() == "done", deadline)
        return self.events()

    def present(self) -> set[int]:
        """Ids of this run present in the database (read through the endpoint, from the leader)."""
        rc, out = ssh(self.lab, self.host, self._psql(f"select id from {TABLE} where run = '{self.run}'", timeout=20), timeout=40)
        assert rc == 0, out
        return {int(x) for x in out.split()}

    def cleanup(self) -> None:
        ssh(self.lab, self.host, f"touch {self._stop}; rm -f {self._log}")


def unavailability_window(events: list[tuple[str, int, float]], since: float) -> float:
    """Seconds between the last acknowledged write before ``since`` and the first one after
    the first failure that follows it (0 when no write failed)."""
    before = [at for kind, _, at in events if kind == "ok" and at <= since]
    start = before[-1] if before else since
    fails = [at for kind, _, at in events if kind == "fail" and at >= start]
    if not fails:
        # No error seen: the longest gap between two acknowledgements after `since`.
        oks = [start] + [at for kind, _, at in events if kind == "ok" and at > start]
        return max((b - a for a, b in zip(oks, oks[1:])), default=0.0)
    after = [at for kind, _, at in events if kind == "ok" and at > fails[0]]
    return (after[0] if after else fails[-1]) - start


def leader_psql(lab: dict[str, Any], host: str, sql: str) -> tuple[int, str]:
    """Run SQL as the local superuser on a data host (peer auth through the socket)."""
    cmd = f"echo {shlex.quote(sql)} | sudo -u postgres timeout 10 psql -h /var/run/postgresql -d onlyoffice -XAtq -v ON_ERROR_STOP=1"
    return ssh(lab, host, cmd, timeout=30)


def secrets(lab: dict[str, Any]) -> dict[str, Any]:
    import yaml

    with open(lab["secrets_file"], encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def dumps(view: Any) -> str:
    return json.dumps(view, indent=1, default=str)
