"""The compatibility gate's I/O: the target image as a throwaway container on scratch objects.

Why a throwaway container and not "deploy the canary and see": a release that cannot start,
cannot find its schema or generates its own JWT secret must be refused before any live node
is drained (issue 11, "compatibility gate"); and a release whose health degrades a few
seconds after start (the lab's 9.3.2.9) passes a one-shot probe, so ``/healthcheck`` is
WATCHED for ``watch_seconds`` after its first ``true``, sample by sample, not asked once.

Isolation: the container gets the live node's env contract (``container_env`` and
``local_config`` of ooha/layers/documentserver.py, the same code the layer uses) with three
overrides: its own database (``ooha_compat_<node>``, ooha/contract.py ``node_compat_database``:
pg_hba names every database a DS host may reach, so it is one fixed name per host; created like
the per-node ones, owner = the DS role, on the Patroni leader over the local socket), its own
RabbitMQ vhost (the DS user's permissions) and its own Redis key prefix (random names).  So its ``removetbl.sql``, its ``ds.pubsub`` broadcasts (the SIGTERM
trap when it is removed) and its keys reach nothing live.  It publishes no port (checks go to
its bridge address from the DS host), mounts none of the node's volumes (anonymous volumes,
removed with it) and is named ``ooha-compat-<token>``, never the node's container.  Secrets go
as the layer's do: an env-file (0600, in a 0700 directory on the host's tmpfs ``/run``) and the
Sentinel config as a read-only bind mount; the JWT for the version command is signed on the
controller and reaches curl on stdin.

Every scratch object is removed in a ``finally`` (also after a failed pull or a timeout), then
looked for again: whatever is still there is reported in ``CompatObservation.leftovers`` and
fails the gate (``ooha.rollout.gates.compat_gate``).  The pulled image stays on the host: the
canary's replace wave needs it next.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from ooha.contract import CONTRACT_DEFAULTS, node_compat_database
from ooha.facts.documentserver import DsContainer, parse_json_line
from ooha.facts.rabbitmq import RabbitmqVhosts
from ooha.layers.documentserver import DS_DEFAULTS, command_token, container_env, container_spec, local_config
from ooha.ops.containers import Mount, env_file_text, env_sha256
from ooha.rollout.gates import CompatObservation
from ooha.rollout.live.remote import Result, quote as q, run
from ooha.rollout.release import ImageRef
from ooha.settings import Settings
from ooha.settings import secret as _secret

_value = Settings(DS_DEFAULTS, CONTRACT_DEFAULTS, optional=True)

RUN_DIR = "/run/ooha-compat"
"""Where the scratch env-file and Sentinel config live on the DS host (tmpfs: gone at reboot)."""
SAMPLE_SECONDS = 2.0
"""Interval of the /healthcheck samples, before the first `true` and during the watch."""
DOCSERVICE_LOG = "/var/log/onlyoffice/documentserver/docservice/out.log"
"""DocService's log inside the image (real and stand-in): the reason a health check turned false."""
_SECRET_KEYS = ("jwt_secret", "secure_link_secret", "postgres_ds_password", "rabbitmq_password",
                "redis_password", "redis_sentinel_password")
_PSQL = "runuser -u postgres -- psql -h /var/run/postgresql -XAtq -v ON_ERROR_STOP=1"


@dataclass(frozen=True)
class Scratch:
    """The names of one compat run's scratch objects: a random token, and the DS host's fixed
    scratch database (pg_hba names every database a DS host may reach, ooha/contract.py)."""

    token: str
    database: str

    @property
    def container(self) -> str:
        return f"ooha-compat-{self.token}"

    @property
    def vhost(self) -> str:
        return f"ooha_compat_{self.token}"

    @property
    def redis_prefix(self) -> str:
        return f"ooha:compat:{self.token}:"

    @property
    def run_dir(self) -> str:
        return f"{RUN_DIR}/{self.token}"

    @property
    def doc_key(self) -> str:
        """The editing session's document key: every key an image stores for it contains it."""
        return f"ooha-compat-{self.token}"


def new_scratch(ds_host_name: str) -> Scratch:
    """Fresh names: 12 hex digits, so they cannot meet a live object's name nor an earlier run's
    (the database is the host's one scratch database: a stale one is dropped before the run)."""
    return Scratch(secrets.token_hex(6), node_compat_database(ds_host_name))


# --- what the container gets (pure: unit-testable with a fake host) ----------------------


def scratch_env(ds_host: Any, scratch: Scratch) -> dict[str, str]:
    """The live node's env (the layer's own function) pointed at the scratch database and vhost."""
    env = container_env(ds_host)
    env["DB_NAME"] = scratch.database
    base, _, _vhost = env["AMQP_URI"].rpartition("/")
    env["AMQP_URI"] = f"{base}/{quote(scratch.vhost, safe='')}"
    return env


def scratch_config(ds_host: Any, scratch: Scratch) -> str | None:
    """The layer's Sentinel config (ee/de; None for community) with the scratch Redis prefix."""
    text = local_config(ds_host)
    if text is None:
        return None
    config = json.loads(text)
    config["services"]["CoAuthoring"]["redis"]["prefix"] = scratch.redis_prefix
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def scratch_spec(ds_host: Any, scratch: Scratch, target: ImageRef, env: dict[str, str], config_text: str | None) -> Any:
    """The layer's ContainerSpec made throwaway: the scratch name and files, no port, no named
    volume (the node's Data volume holds its release date), no restart, labelled as scratch."""
    spec = container_spec(ds_host, env, config_text)
    mounts = (Mount("bind", f"{scratch.run_dir}/local-production-linux.json", m.destination, read_only=True)
              for m in spec.mounts if m.kind == "bind")
    return replace(spec, name=scratch.container, hostname=scratch.container, image=target.ref,
                   env_file=f"{scratch.run_dir}/env", mounts=tuple(mounts), ports=(), restart_policy="no",
                   labels={**spec.labels, "ooha.compat": scratch.token})


def redact(text: str, ds_host: Any) -> str:
    """``text`` without any secret of the cluster (raw or URL-quoted): log lines shown to operators."""
    for key in _SECRET_KEYS:
        value = _secret(ds_host, key)
        if value and len(value) >= 4:
            text = text.replace(value, "***").replace(quote(value, safe=""), "***")
    return text


def watch_verdict(samples: list[tuple[float, str]], watch_seconds: int, reason: str = "") -> str:
    """CompatObservation.healthcheck from the watch's (seconds since first true, body) samples:
    ``"true"`` only if every sample said true; else what turned and when (the defect's name)."""
    for at, body in samples:
        if body != "true":
            said = body or "no answer"
            return (f"{said} {at:.0f} s into the {watch_seconds} s watch (true before)"
                    + (f"; docservice: {reason}" if reason else ""))
    return "true"


# --- remote steps -------------------------------------------------------------------------


def _pg_leader(postgres_hosts: list[Any]) -> Any | None:
    """The data host whose PostgreSQL is the primary now (asked over the local socket)."""
    for pg in postgres_hosts:
        result = run(pg, f"{_PSQL} -c 'select pg_is_in_recovery()'", timeout=20)
        if result.ok and result.stdout.strip() == "f":
            return pg
    return None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql(host: Any, sql: str, database: str = "postgres", timeout: int = 60) -> Result:
    """SQL on ``host`` as the postgres superuser, the statement on stdin (never on argv)."""
    return run(host, f"{_PSQL} -d {q(database)}", stdin=sql + "\n", timeout=timeout)


def _redis_primary(redis_hosts: list[Any]) -> Any | None:
    """The Redis host that says ``master`` now (through the layer's password-free wrapper)."""
    for rh in redis_hosts:
        result = run(rh, "/usr/local/sbin/ooha-redis-cli redis role | head -n 1", timeout=20)
        if result.ok and result.stdout.strip() == "master":
            return rh
    return None


def _redis_patterns(scratch: Scratch) -> tuple[str, ...]:
    """Keys a scratch run may leave: under its prefix, or naming its document (an image that
    ignores the prefix, like the lab's stand-in, still puts the document key in its keys)."""
    return (f"{scratch.redis_prefix}*", f"*{scratch.doc_key}*")


def _redis_keys(primary: Any, scratch: Scratch) -> list[str] | None:
    """The scratch run's keys on the primary (None: could not ask)."""
    keys: list[str] = []
    for pattern in _redis_patterns(scratch):
        result = run(primary, f"/usr/local/sbin/ooha-redis-cli redis --scan --pattern {q(pattern)}", timeout=60)
        if not result.ok:
            return None
        keys += result.lines()
    return sorted(set(keys))


def _rabbit(rabbitmq_hosts: list[Any], args: str) -> Result:
    """``rabbitmqctl ARGS`` on the first RabbitMQ host where it succeeds (vhosts are cluster-wide)."""
    last = Result(False, "", "no RabbitMQ host")
    for rh in rabbitmq_hosts:
        last = run(rh, f"timeout 30 rabbitmqctl {args}", timeout=40)
        if last.ok:
            return last
    return last


def _vhosts(rabbitmq_hosts: list[Any]) -> list[str] | None:
    """The cluster's vhost names (None: no RabbitMQ host answered)."""
    result = _rabbit(rabbitmq_hosts, "list_vhosts name --formatter json")
    return RabbitmqVhosts().process(result.lines()) if result.ok else None


def _docker(ds_host: Any, args: str, timeout: int = 60, stdin: str | None = None) -> Result:
    return run(ds_host, f"docker {args}", timeout=timeout, stdin=stdin)


def _container_state(ds_host: Any, name: str) -> tuple[str, str]:
    """(status, exit code) of the scratch container; ("absent", "") when there is none."""
    result = _docker(ds_host, f"inspect -f '{{{{.State.Status}}}} {{{{.State.ExitCode}}}}' {q(name)}", timeout=20)
    if not result.ok:
        return "absent", ""
    status, _, code = result.stdout.strip().partition(" ")
    return status, code


def _container_address(ds_host: Any, name: str) -> str | None:
    result = _docker(ds_host, f"inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' {q(name)}",
                     timeout=20)
    addresses = result.stdout.split() if result.ok else []
    return addresses[0] if addresses else None


def _health(ds_host: Any, address: str) -> str:
    """The body of /healthcheck through the container's nginx ("" when nothing answered)."""
    result = run(ds_host, f"curl -s -m 5 http://{q(address)}/healthcheck", timeout=15)
    return result.stdout.strip() if result.ok else ""


def _last_error(ds_host: Any, scratch: Scratch) -> str:
    """DocService's newest ERROR line (secrets removed, shortened): why the health turned."""
    result = _docker(ds_host, f"exec {q(scratch.container)} sh -c "
                              f"{q(f'tail -n 200 {DOCSERVICE_LOG} 2>/dev/null | grep -i error | tail -n 1')}", timeout=20)
    line = result.stdout.strip() if result.ok else ""
    # "[time] [ERROR] [tenant] ... DocService - message": the message is what names the cause.
    line = re.sub(r"^(\[[^\]]*\]\s*)+", "", line)
    head, sep, message = line.partition(" - ")
    line = message if sep and len(head) <= 40 else line
    return redact(line, ds_host)[:240]


def _wait_first_true(ds_host: Any, scratch: Scratch, deadline_s: int) -> tuple[str | None, str]:
    """Poll until /healthcheck says true: (address, "") or (address|None, why it never did)."""
    end = time.monotonic() + deadline_s
    address: str | None = None
    body = ""
    while True:
        status, code = _container_state(ds_host, scratch.container)
        if status in ("exited", "dead", "absent"):
            return address, f"container {status} (exit code {code or '?'}) before /healthcheck said true"
        address = address or _container_address(ds_host, scratch.container)
        if address:
            body = _health(ds_host, address)
            if body == "true":
                return address, ""
        if time.monotonic() >= end:
            return address, f"{body or 'no answer'} for {deadline_s} s after start (never true)"
        time.sleep(SAMPLE_SECONDS)


def _watch(ds_host: Any, address: str, watch_seconds: int) -> list[tuple[float, str]]:
    """/healthcheck every SAMPLE_SECONDS for ``watch_seconds``; stops at the first non-true."""
    samples: list[tuple[float, str]] = []
    t0 = time.monotonic()
    while True:
        at = time.monotonic() - t0
        body = _health(ds_host, address)
        samples.append((at, body))
        if body != "true" or at >= watch_seconds:
            return samples
        time.sleep(min(SAMPLE_SECONDS, max(0.0, watch_seconds - at)))


def _version(ds_host: Any, address: str) -> dict[str, Any] | None:
    """POST /command {"c":"version"} with the cluster's JWT (header on curl's stdin)."""
    token = command_token(_secret(ds_host, "jwt_secret"), {"payload": {"c": "version"}})
    header = f"{_value(ds_host, 'ds_jwt_header')}: Bearer {token}\n"
    result = run(ds_host, "curl -s -m 10 -H @- -H 'Content-Type: application/json' -d '{\"c\":\"version\"}' "
                          f"http://{q(address)}/command", stdin=header, timeout=20)
    answer = parse_json_line(result.lines()) if result.ok else None
    return answer if isinstance(answer, dict) else None


def _websocket_opens(ds_host: Any, address: str, scratch: Scratch) -> bool:
    """An editing websocket under /doc/ through the container's nginx: the upgrade is answered 101.

    curl speaks the HTTP/1.1 upgrade itself (any curl version) and holds the socket 3 s, long
    enough for the server to register the session; its timeout exit is expected.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    url = f"http://{address}/doc/{scratch.doc_key}/c/?EIO=4&transport=websocket"
    result = run(ds_host, "curl -s -i -N --http1.1 -m 3 -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
                          f"-H 'Sec-WebSocket-Version: 13' -H {q('Sec-WebSocket-Key: ' + key)} {q(url)}; true", timeout=20)
    first = result.stdout.splitlines()[0] if result.stdout else ""
    return first.startswith("HTTP/1.1 101")


def _tables(leader: Any | None, scratch: Scratch) -> tuple[str, ...]:
    if leader is None:
        return ()
    result = _sql(leader, "select table_name from information_schema.tables where table_schema = current_schema() "
                          "order by 1", database=scratch.database)
    return tuple(result.lines()) if result.ok else ()


def _jwt_from_env(ds_host: Any, scratch: Scratch, env: dict[str, str], answer: dict[str, Any] | None) -> bool:
    """The env contract: the container's JWT_SECRET is the cluster's (compared as digests made on
    each side, as the layer's DsContainer fact does) and the server did not reject the cluster's
    token (error 6 = it signs with a secret of its own, generated at start)."""
    command = DsContainer().command(container=scratch.container, env_keys=("JWT_SECRET",)).get_raw_value()
    result = run(ds_host, command, timeout=20)
    inspected = parse_json_line(result.lines()) if result.ok else None
    if not isinstance(inspected, dict):
        return False
    same = inspected.get("env_sha256") == env_sha256({"JWT_SECRET": env["JWT_SECRET"]})
    return same and not (answer is not None and answer.get("error") in (6, 7))


def _version_failure(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return "command: no answer"
    return f"command error {answer.get('error')}" + (" (token rejected: JWT secret differs)" if answer.get("error") in (6, 7) else "")


# --- the gate's run ------------------------------------------------------------------------


def _create_scratch(ds_host: Any, postgres_hosts: list[Any], rabbitmq_hosts: list[Any], scratch: Scratch,
                    env: dict[str, str], config_text: str | None) -> str:
    """Database, vhost and files for the container; '' or what failed."""
    leader = _pg_leader(postgres_hosts)
    if leader is None:
        return "no PostgreSQL primary answered"
    # The host's scratch database exists only if an earlier run was killed before its cleanup.
    created = _sql(leader, f"DROP DATABASE IF EXISTS {_ident(scratch.database)} WITH (FORCE);\n"
                           f"CREATE DATABASE {_ident(scratch.database)} OWNER {_ident(env['DB_USER'])} ENCODING 'UTF8'")
    if not created.ok:
        return f"creating database {scratch.database} failed: {created.why()}"
    user = str(_value(ds_host, "rabbitmq_user"))
    for args in (f"add_vhost {q(scratch.vhost)}", f"set_permissions -p {q(scratch.vhost)} {q(user)} '.*' '.*' '.*'"):
        result = _rabbit(rabbitmq_hosts, args)
        if not result.ok:
            return f"rabbitmqctl {args.split()[0]} failed: {result.why()}"
    files = run(ds_host, f"umask 077 && mkdir -p {q(scratch.run_dir)} && cat > {q(scratch.run_dir + '/env')}",
                stdin=env_file_text(env), timeout=20)
    if not files.ok:
        return f"writing the env-file failed: {files.why()}"
    if config_text is not None:
        # 0644 inside the 0700 directory, as the layer's: the container's ds user reads it.
        files = run(ds_host, f"umask 022 && cat > {q(scratch.run_dir + '/local-production-linux.json')}",
                    stdin=config_text, timeout=20)
        if not files.ok:
            return f"writing the Sentinel config failed: {files.why()}"
    return ""


def _remove_scratch(ds_host: Any, postgres_hosts: list[Any], rabbitmq_hosts: list[Any], redis_hosts: list[Any],
                    scratch: Scratch) -> tuple[str, ...]:
    """Remove every scratch object (each step whatever the others did), then list what remains."""
    _docker(ds_host, f"rm -f -v {q(scratch.container)} >/dev/null 2>&1; true", timeout=90)
    run(ds_host, f"rm -rf {q(scratch.run_dir)}", timeout=20)
    leader = _pg_leader(postgres_hosts)
    if leader is not None:
        _sql(leader, f"DROP DATABASE IF EXISTS {_ident(scratch.database)} WITH (FORCE)")
    if scratch.vhost in (_vhosts(rabbitmq_hosts) or [scratch.vhost]):
        _rabbit(rabbitmq_hosts, f"delete_vhost {q(scratch.vhost)}")
    primary = _redis_primary(redis_hosts)
    if primary is not None:
        for pattern in _redis_patterns(scratch):
            run(primary, f"/usr/local/sbin/ooha-redis-cli redis --scan --pattern {q(pattern)} | "
                         "xargs -r -n 100 /usr/local/sbin/ooha-redis-cli redis del >/dev/null", timeout=60)
    return _leftovers(ds_host, postgres_hosts, rabbitmq_hosts, redis_hosts, scratch)


def _leftovers(ds_host: Any, postgres_hosts: list[Any], rabbitmq_hosts: list[Any], redis_hosts: list[Any],
               scratch: Scratch) -> tuple[str, ...]:
    """Scratch objects still present (or that could not be looked for: counted as left)."""
    left: list[str] = []
    if _container_state(ds_host, scratch.container)[0] != "absent":
        left.append(f"container {scratch.container} on {ds_host.name}")
    if not run(ds_host, f"test ! -e {q(scratch.run_dir)}", timeout=20).ok:
        left.append(f"{scratch.run_dir} on {ds_host.name}")
    leader = _pg_leader(postgres_hosts)
    count = _sql(leader, f"select count(*) from pg_database where datname = '{scratch.database}'") if leader else None
    if count is None or not count.ok or count.stdout.strip() != "0":
        left.append(f"database {scratch.database}" + ("" if count is not None and count.ok else " (could not check)"))
    vhosts = _vhosts(rabbitmq_hosts)
    if vhosts is None or scratch.vhost in vhosts:
        left.append(f"vhost {scratch.vhost}" + ("" if vhosts is not None else " (could not check)"))
    primary = _redis_primary(redis_hosts)
    keys = _redis_keys(primary, scratch) if primary is not None else None
    if keys is None:
        left.append(f"Redis keys {' / '.join(_redis_patterns(scratch))} (could not check)")
    elif keys:
        left.append(f"{len(keys)} Redis key(s) like {keys[0]}")
    return tuple(left)


def run_compat(ds_host: Any, postgres_hosts: list[Any], rabbitmq_hosts: list[Any], redis_hosts: list[Any],
               target: ImageRef, *, watch_seconds: int = 30, start_timeout: int | None = None,
               progress: Callable[[str], None] = print) -> tuple[CompatObservation, str]:
    """Run ``target`` as a throwaway container on ``ds_host`` against scratch objects; observe it.

    Hosts are connected pyinfra Hosts (the driver's, from ``pyinfra.inventory``). Returns the
    observation for ``gates.compat_gate`` and one line for the journal/progress. Never raises for
    what it observes; every scratch object is removed before it returns.
    """
    t0 = time.monotonic()
    scratch = new_scratch(ds_host.name)
    where = f"compat {target.version} on {ds_host.name}"
    deadline = int(start_timeout or _value(ds_host, "ds_start_deadline") or 180)
    env = scratch_env(ds_host, scratch)
    config_text = scratch_config(ds_host, scratch)
    health: str | None = None
    answer: dict[str, Any] | None = None
    websocket = False
    tables: tuple[str, ...] = ()
    jwt_ok = False
    failure = ""
    try:
        progress(f"{where}: pulling {target.ref}")
        pulled = _docker(ds_host, f"pull -q {q(target.ref)} >/dev/null", timeout=900)
        if not pulled.ok:
            failure = f"docker pull {target.ref} failed: {pulled.why()}"
        else:
            failure = _create_scratch(ds_host, postgres_hosts, rabbitmq_hosts, scratch, env, config_text)
        if not failure:
            spec = scratch_spec(ds_host, scratch, target, env, config_text)
            started = run(ds_host, spec.run_command().get_raw_value() + " >/dev/null", timeout=120)
            if not started.ok:
                failure = f"docker run failed: {started.why()}"
        if not failure:
            progress(f"{where}: {scratch.container} started (db {scratch.database}, vhost {scratch.vhost}, "
                     f"prefix {scratch.redis_prefix}); waiting for /healthcheck")
            address, never = _wait_first_true(ds_host, scratch, deadline)
            if never:
                health = never
            else:
                progress(f"{where}: /healthcheck true; watching it {watch_seconds} s")
                samples = _watch(ds_host, address, watch_seconds)
                turned = any(body != "true" for _, body in samples)
                health = watch_verdict(samples, watch_seconds, _last_error(ds_host, scratch) if turned else "")
            if address:
                answer = _version(ds_host, address)
                websocket = _websocket_opens(ds_host, address, scratch)
            tables = _tables(_pg_leader(postgres_hosts), scratch)
            jwt_ok = _jwt_from_env(ds_host, scratch, env, answer)
    finally:
        progress(f"{where}: removing the scratch container, database, vhost and Redis keys")
        leftovers = _remove_scratch(ds_host, postgres_hosts, rabbitmq_hosts, redis_hosts, scratch)
    version = str(answer["version"]) if answer and answer.get("error") == 0 and "version" in answer else None
    obs = CompatObservation(healthcheck=health, version=version, websocket_opened=websocket, tables=tables,
                            jwt_secret_from_env=jwt_ok, leftovers=leftovers)
    detail = (f"{where} ({time.monotonic() - t0:.0f} s): "
              + (f"{failure}; " if failure else "")
              + f"healthcheck {health or 'not observed'}, version {version or _version_failure(answer)}, "
              f"websocket {'opened' if websocket else 'not opened'}, tables {','.join(tables) or 'none'}, "
              f"JWT secret {'from the env' if jwt_ok else 'NOT from the env'}; "
              + (f"LEFT: {', '.join(leftovers)}" if leftovers else "scratch objects removed"))
    return obs, detail
