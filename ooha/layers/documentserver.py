"""Document Server layer: one ``onlyoffice-documentserver`` container per DS host ("per-node shards").

Design (docs/architecture.md, "App tier: Document Server").  Every DS node has ITS OWN
PostgreSQL database, RabbitMQ vhost and Redis key prefix (ooha/contract.py) on the shared
HA data tier; the load balancer keeps each document on one node, so nodes never share
editing state.  That makes the image's two cluster traps impossible by construction,
whoever stops or changes a container (an operator's ``docker stop``, a host shutdown,
this deploy):

* SIGTERM trap: the entrypoint answers SIGTERM with ``PUT /internal/cluster/inactive``,
  which DocService broadcasts over the ``ds.pubsub`` fanout of ITS vhost: only the node
  being stopped goes inactive.  ``ONLYOFFICE_DATA_CONTAINER(_HOST)`` is NOT used to
  disarm the trap: in the real image a ``_HOST`` other than localhost makes the
  entrypoint wait for a remote data container.
* table-reset trap: on a version change (release date differs from
  ``Data/.private/ds_release_date``) start-up runs ``removetbl.sql`` on ITS database:
  only the changed node's tables are recreated.

Replacing a running container drains it first (``drain_script``, run by
ooha/ops/containers.py after the new image is pulled): ``PUT /internal/cluster/pre-stop``
inside the container (node-local, 9.2+; its failure is tolerated), then ``GET
/internal/connections/edit`` every second until it is 0 or ``ds_drain_seconds`` have
passed (the deploy output says how many editing sessions remained), then ``docker stop -t
ds_stop_grace_seconds``: the entrypoint's SIGTERM trap runs and reaches only this node's
vhost.  Sessions still open after the drain bound are cut by the stop, and a version change
then drops their unsaved changes with this node's tables: raise ``ds_drain_seconds`` (or
move documents away first) when that matters.

The container: image ``<ds_image>:<ds_version>[@<ds_image_digest>]`` from the private
registry (the docker layer logs root in); env from a 0600 env-file (never on a command
line); DB/AMQP/Redis at the Docker bridge gateway (``docker_bip``), where the endpoints
layer's HAProxy listens and follows every failover; for ee/de the Sentinel list in a
read-only mounted ``local-production-linux.json`` (``services.CoAuthoring.redis``, name
ioredis, the node's key prefix).  Port 80 is published on ``<private_address>:<ds_http_port>``
only: DocService's 8000 (which serves ``/internal/*`` to anyone who reaches it) is never
published, and nginx on 80 allows ``/internal/`` from 127.0.0.1 only.  Named volumes
``onlyoffice-data`` (Data: release date, license, keys), ``onlyoffice-cache``,
``onlyoffice-logs``.  The container is recreated only when its wanted spec differs
(ooha/ops/containers.py explains why pyinfra's docker.container cannot do it).

A rebuilt (blank) host: before anything else the layer calls the filebackup layer's
``restore_if_blank`` (ooha/layers/filebackup.py), so the container starts on the Data volume
(license, keys, release date) restored from the node's newest snapshot.

Self-healing (``ds_heal_*``): ``ooha-ds-heal.timer`` runs ``/usr/local/sbin/ooha-ds-heal check``
every ``ds_heal_interval_seconds``; a running container whose /healthcheck is not ``true`` for
``ds_heal_after_seconds`` while the local HAProxy has a PostgreSQL primary, a Redis primary and a
RabbitMQ server UP is drained (pre-stop) and restarted; after ``ds_heal_max_restarts`` restarts
within ``ds_heal_window_seconds`` it gives up: the container is stopped (the load balancers move
its documents), the deploy leaves it stopped and the report fails until an operator resets it:
``systemctl start ooha-ds-heal-reset`` on the host, or the main job with ``--data ds_heal_reset=true``.
The pure decision is ``decide()`` in templates/documentserver/ooha-ds-heal.py.j2.

Community edition keeps editing state in process memory: it works only because every
document stays on one node; a warning says so when it runs on more than one node.

The test example (``ds_example_enabled``, default off; ONLYOFFICE says never in
production): on -> ``autostart=true`` in the container's supervisor config (kept across
``docker restart``; a recreated container gets it again from this deploy) and
``supervisorctl start ds:example``; off -> ``autostart=false`` and stopped, and the
report says why ``/example/`` answers 502 and how to turn it on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import shlex
import time
from io import StringIO
from typing import Any
from urllib.parse import quote

from pyinfra import host, inventory, logger
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from ooha.ops.containers import ContainerSpec, Mount, Port, container, env_file_text, env_sha256, memory_bytes, nano_cpus
from ooha.contract import CONTRACT_DEFAULTS, contract_defaults, docker_gateway, node_database, node_redis_prefix, node_vhost
from ooha.ops.private_files import private_put
from ooha.report import CheckResult, poll
from ooha.settings import Settings
from ooha.settings import secret as _secret
from ooha.facts.documentserver import (
    CONTAINER,
    EXAMPLE_CONF,
    HEAL_SCRIPT,
    HEAL_STATE,
    HEAL_TIMER,
    DsContainer,
    DsExample,
    DsHealState,
    DsHttp,
    DsNginxErrors,
    DsVersion,
)
from ooha.templating import JINJA, TEMPLATES

HEAL_SERVICE = "ooha-ds-heal.service"
HEAL_RESET_SERVICE = "ooha-ds-heal-reset.service"
HEAL_DEPENDENCIES = ("pg-primary", "redis-primary", "rabbitmq")
"""HAProxy proxies (templates/endpoints/haproxy.cfg.j2) that must have a server UP before a sick node is healed."""

CONFIG_DIR = "/etc/onlyoffice-ha/documentserver"
ENV_FILE = f"{CONFIG_DIR}/documentserver.env"
RELEASE_FILE = f"{CONFIG_DIR}/release.json"
RETIRED_FILE = f"{CONFIG_DIR}/retired.json"
"""Written by deploys/scale.py --data ds_retire=<node> (ooha/rollout/scale.py NODE_MARKER_FILE)."""
"""Written by the rollout driver before it moves a node: {"ref": image ref, "rollout_id": id}."""
LOCAL_CONFIG = f"{CONFIG_DIR}/local-production-linux.json"
LOCAL_CONFIG_IN_CONTAINER = "/etc/onlyoffice/documentserver/local-production-linux.json"
VOLUMES = (
    ("onlyoffice-data", "/var/www/onlyoffice/Data"),
    ("onlyoffice-cache", "/var/lib/onlyoffice"),
    ("onlyoffice-logs", "/var/log/onlyoffice"),
)
EDITIONS = ("ee", "de", "community")
LABEL_PREFIX = "ooha.deploy."

DS_DEFAULTS: dict[str, Any] = {
    # Image repository in the private registry (lab: 198.18.20.10:5000/onlyoffice/documentserver-ee)
    # and the pinned tag (required, e.g. "9.3.0.1"; never "latest").
    "ds_image": "onlyoffice/documentserver-ee",
    "ds_version": None,
    # Optional "sha256:<64 hex>": pins the exact image; the tag must still be given.
    "ds_image_digest": None,
    # A node whose release was set by deploys/patch.py or rollback.py (RELEASE_FILE) is moved to
    # another release by the main job only when this names why (the rollout driver passes its
    # rollout id): an inventory not updated after a patch never silently downgrades the fleet.
    "ds_release_change": None,
    # ee | de | community (community cannot share editing state across nodes: see the docstring).
    "ds_edition": "ee",
    # The test example (never in production): on -> /example/ answers 200 on each node.
    "ds_example_enabled": False,
    # Host port (on private_address only) that publishes the container's nginx (80); the
    # load balancer's upstreams read the same key (default in ooha/contract.py).
    **contract_defaults("ds_http_port"),
    "ds_restart_policy": "unless-stopped",
    # Optional limits: docker sizes ("4g", "512m") and CPUs (2, 1.5); None: no limit.
    "ds_memory_limit": None,
    "ds_cpus": None,
    # Header DS reads the JWT from (JWT_HEADER); the secret is secret jwt_secret.
    "ds_jwt_header": "Authorization",
    # Extra non-secret env for the container, e.g. {"WOPI_ENABLED": "true"}.
    "ds_extra_env": {},
    # Sentinel master name and port for ee/de: the redis layer's, from the contract.
    "ds_redis_master_name": CONTRACT_DEFAULTS["redis_master_name"],
    "ds_sentinel_port": CONTRACT_DEFAULTS["redis_sentinel_port"],
    # Seconds the deploy waits for supervisord in a new container (the entrypoint first waits
    # for the database), and the report for /healthcheck to say true after a (re)start.
    "ds_start_deadline": 180,
    "ds_settle_seconds": 180,
    # Replacing a running container: seconds to wait for its editing sessions to end after
    # pre-stop (0: do not wait), then docker stop's grace before SIGKILL.
    "ds_drain_seconds": 60,
    "ds_stop_grace_seconds": 30,
    # Self-healing (ooha-ds-heal.timer): a running container whose /healthcheck is not true
    # for ds_heal_after_seconds (counted from ds_heal_start_grace_seconds after each start)
    # while its dependencies are UP is restarted (drained for up to ds_heal_drain_seconds);
    # after ds_heal_max_restarts restarts within ds_heal_window_seconds it is stopped and left
    # stopped until a reset (`systemctl start ooha-ds-heal-reset`, or --data ds_heal_reset=true).
    "ds_heal_enabled": True,
    "ds_heal_interval_seconds": 10,
    "ds_heal_after_seconds": 60,
    "ds_heal_start_grace_seconds": 120,
    "ds_heal_max_restarts": 3,
    "ds_heal_window_seconds": 1800,
    "ds_heal_drain_seconds": 10,
    # Day-2: true resets the self-healing state in this run (and the container starts again).
    "ds_heal_reset": False,
}

_REPO = re.compile(r"^[a-z0-9]+([._:/-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:[1-9][0-9]*)?)$")
_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SECRETS = ("jwt_secret", "secure_link_secret", "postgres_ds_password", "rabbitmq_password", "redis_password")


_value = Settings(DS_DEFAULTS, CONTRACT_DEFAULTS, optional=True)
"""A data key with this layer's default, else the contract's (rabbitmq_user, endpoint_*_port,
postgres_ds_role are other layers' keys), else None: the report runs outside the deploy."""


def image_ref(target: Any) -> str:
    """``repository:tag`` or ``repository:tag@sha256:...``: what docker run gets and inspect shows."""
    ref = f"{_value(target, 'ds_image')}:{_value(target, 'ds_version')}"
    digest = _value(target, "ds_image_digest")
    return f"{ref}@{digest}" if digest else ref


def release_of(release_lines: list[str] | None) -> dict[str, Any]:
    """The node's RELEASE_FILE as a dict ({} when absent or unreadable)."""
    try:
        value = json.loads("\n".join(release_lines)) if release_lines else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def same_release(recorded: str, wanted: str) -> bool:
    """``recorded`` (the reference a rollout deployed, ``image:tag[@digest]``) is exactly what
    the inventory asks for.  Exact, digest included: the container's spec compares the same
    string, so ``tag`` against a deployed ``tag@digest`` would recreate every node at once."""
    return recorded.strip() == wanted.strip()


def release_keys(ref: str) -> str:
    """The inventory keys that name ``ref``: ``ds_version=X`` (and ``ds_image_digest=D``)."""
    base, _, digest = ref.partition("@")
    keys = f"ds_version={base.rsplit(':', 1)[-1]}"
    return f"{keys} and ds_image_digest={digest}" if digest else keys


def release_guard(target: Any, release_lines: list[str] | None) -> None:
    """Refuse (DeployError) to move a node off the release a rollout put it on, unless told why.

    After ``deploys/patch.py`` the fleet runs the new release while the inventory may still
    name the old one; a main job run then must not downgrade the nodes behind the ledger's back
    (the node's tables would be reset, the ledger wrong).  ``ds_release_change`` (the rollout
    driver passes its rollout id) says the change is intended.
    """
    if _value(target, "ds_release_change"):
        return
    recorded = release_of(release_lines)  # absent or unreadable: the container rules apply
    ref = str(recorded.get("ref") or "")
    if ref and not same_release(ref, image_ref(target)):
        raise DeployError(
            f"{target.name}: ds_version: the node runs {ref} (rollout {recorded.get('rollout_id')}) but the inventory "
            f"says {image_ref(target)}; fix: set {release_keys(ref)} in the inventory, or change releases with "
            "deploys/patch.py / deploys/rollback.py (or --data ds_release_change=<why> to force it)")


def retired_guard(target: Any, marker_lines: list[str] | None) -> None:
    """Refuse (DeployError) to converge a node that deploys/scale.py retired while it is still in
    the inventory: the main job would start its stopped container again behind the scale-in's
    back.  ``ds_join`` removes the marker before its own main job."""
    from ooha.rollout.scale import retired_refusal

    refusal = retired_refusal(target.name, marker_lines)
    if refusal:
        raise DeployError(refusal)


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs on ``target``, one line each: host, field, fix."""
    name = target.name
    problems = []
    image = str(_value(target, "ds_image") or "")
    if not _REPO.match(image) or "@" in image:
        problems.append(f"{name}: ds_image: {image!r} is not an image repository; fix: e.g. "
                        "\"registry.example.com:5000/onlyoffice/documentserver-ee\" (tag in ds_version)")
    version = _value(target, "ds_version")
    if not version or not _TAG.match(str(version)) or str(version) == "latest":
        problems.append(f"{name}: ds_version: {version!r} is not a pinned tag; fix: set the image tag, e.g. \"9.3.0.1\"")
    digest = _value(target, "ds_image_digest")
    if digest and not _DIGEST.match(str(digest)):
        problems.append(f"{name}: ds_image_digest: {digest!r} is not sha256:<64 hex>; fix: copy it from `docker inspect` or unset it")
    edition = _value(target, "ds_edition")
    if edition not in EDITIONS:
        problems.append(f"{name}: ds_edition: {edition!r} is unknown; fix: one of {', '.join(EDITIONS)}")
    port = _value(target, "ds_http_port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"{name}: ds_http_port: {port!r} is not a port; fix: e.g. 80")
    if not _RESTART.match(str(_value(target, "ds_restart_policy"))):
        problems.append(f"{name}: ds_restart_policy: {_value(target, 'ds_restart_policy')!r} is unknown; "
                        "fix: unless-stopped, always, on-failure[:N] or no")
    try:
        memory_bytes(_value(target, "ds_memory_limit"))
    except ValueError:
        problems.append(f"{name}: ds_memory_limit: {_value(target, 'ds_memory_limit')!r} is not a size; fix: e.g. \"4g\" or unset")
    try:
        nano_cpus(_value(target, "ds_cpus"))
    except (TypeError, ValueError):
        problems.append(f"{name}: ds_cpus: {_value(target, 'ds_cpus')!r} is not a positive number; fix: e.g. 2 or unset")
    for key, low in (("ds_drain_seconds", 0), ("ds_stop_grace_seconds", 1)):
        seconds = _value(target, key)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not low <= seconds <= 3600:
            problems.append(f"{name}: {key}: {seconds!r} is not a whole number of seconds from {low} to 3600; "
                            f"fix: e.g. {DS_DEFAULTS[key]}")
    if not isinstance(_value(target, "ds_example_enabled"), bool):
        problems.append(f"{name}: ds_example_enabled: must be true or false; fix: --data ds_example_enabled=true|false")
    extra = _value(target, "ds_extra_env")
    if not isinstance(extra, dict) or any(not _ENV_KEY.match(str(k)) or "\n" in str(v) for k, v in extra.items()):
        problems.append(f"{name}: ds_extra_env: must map UPPER_CASE names to one-line values; fix: e.g. {{\"WOPI_ENABLED\": \"true\"}}")
    try:
        if docker_gateway(target.data.get("docker_bip")) is None:
            problems.append(f"{name}: docker_bip: not set, so the container has no gateway to the data tier's endpoints; "
                            "fix: set docker_bip (docker layer), e.g. \"10.200.0.1/24\"")
    except ValueError:
        problems.append(f"{name}: docker_bip: {target.data.get('docker_bip')!r} is not an address/prefix; fix: e.g. \"10.200.0.1/24\"")
    try:
        ipaddress.ip_address(str(target.data.get("private_address")))
    except ValueError:
        problems.append(f"{name}: private_address: {target.data.get('private_address')!r} is not an IP address; fix: set it")
    wanted = list(_SECRETS) + (["redis_sentinel_password"] if edition in ("ee", "de") else [])
    for key in wanted:
        value = _secret(target, key)
        if not value:
            problems.append(f"all: secrets.{key}: missing; fix: set it in the secrets file")
        elif "\n" in value or "\r" in value:
            problems.append(f"all: secrets.{key}: holds a line break (an env-file cannot carry it); fix: use a one-line value")
    for key, low, high in (("ds_heal_interval_seconds", 1, 3600), ("ds_heal_after_seconds", 1, 86400),
                           ("ds_heal_start_grace_seconds", 0, 86400), ("ds_heal_max_restarts", 0, 100),
                           ("ds_heal_window_seconds", 60, 7 * 86400), ("ds_heal_drain_seconds", 0, 3600)):
        value = _value(target, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{name}: {key}: {value!r} must be an integer from {low} to {high}; fix: e.g. {DS_DEFAULTS[key]}")
    for key in ("ds_heal_enabled", "ds_heal_reset"):
        if not isinstance(_value(target, key), bool):
            problems.append(f"{name}: {key}: {_value(target, key)!r} must be true or false; fix: --data {key}=true|false")
    return problems


def community_warning(edition: str, docs_count: int) -> str | None:
    """The warning for a community edition on several nodes (None when there is nothing to say)."""
    if edition != "community" or docs_count < 2:
        return None
    return (f"WARNING: ds_edition=community on {docs_count} Document Server nodes: Community keeps editing state in "
            "process memory and cannot share it across nodes. This works only because the load balancer keeps every "
            "document on one node; a node's loss ends its documents' sessions. Use ee or de for shared-state clustering.")


def container_env(target: Any) -> dict[str, str]:
    """The container's environment (holds secrets: written only to the 0600 env-file)."""
    gateway = docker_gateway(target.data.get("docker_bip"))
    amqp_user = str(_value(target, "rabbitmq_user"))
    amqp_port = int(_value(target, "endpoint_amqp_port"))
    env = {
        "DB_TYPE": "postgres",
        "DB_HOST": str(gateway),
        "DB_PORT": str(int(_value(target, "endpoint_pg_primary_port"))),
        "DB_NAME": node_database(target.name),
        "DB_USER": str(_value(target, "postgres_ds_role")),
        "DB_PWD": _secret(target, "postgres_ds_password"),
        "AMQP_TYPE": "rabbitmq",
        "AMQP_URI": (f"amqp://{quote(amqp_user, safe='')}:{quote(_secret(target, 'rabbitmq_password'), safe='')}"
                     f"@{gateway}:{amqp_port}/{quote(node_vhost(target.name), safe='')}"),
        "JWT_ENABLED": "true",
        "JWT_SECRET": _secret(target, "jwt_secret"),
        "JWT_HEADER": str(_value(target, "ds_jwt_header")),
        "JWT_IN_BODY": "false",
        "SECURE_LINK_SECRET": _secret(target, "secure_link_secret"),
        # Community reads these (ee/de get Sentinel from the mounted config instead).
        "REDIS_SERVER_HOST": str(gateway),
        "REDIS_SERVER_PORT": str(int(_value(target, "endpoint_redis_port"))),
        "REDIS_SERVER_PASS": _secret(target, "redis_password"),
    }
    env.update({str(k): str(v) for k, v in (_value(target, "ds_extra_env") or {}).items()})
    return env


def local_config(target: Any) -> str | None:
    """local-production-linux.json for ee/de (None for community): Redis through Sentinel.

    Made with json.dumps, not a Jinja template, so any character of a password is quoted
    correctly; it holds the Redis passwords, so it is written with private_put.
    """
    if _value(target, "ds_edition") not in ("ee", "de"):
        return None
    sentinels = [{"host": str(t.data.get("private_address")), "port": int(_value(target, "ds_sentinel_port"))}
                 for t in inventory.get_group("redis")]
    config = {"services": {"CoAuthoring": {"redis": {
        "name": "ioredis",
        "prefix": node_redis_prefix(target.name),
        "iooptions": {
            "sentinels": sentinels,
            "name": str(_value(target, "ds_redis_master_name")),
            "password": _secret(target, "redis_password"),
            "sentinelPassword": _secret(target, "redis_sentinel_password"),
        },
    }}}}
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def container_spec(target: Any, env: dict[str, str], config_text: str | None) -> ContainerSpec:
    """The wanted container (env and config only as digests)."""
    mounts = [Mount("volume", name, path) for name, path in VOLUMES]
    labels = {f"{LABEL_PREFIX}layer": "documentserver", f"{LABEL_PREFIX}env-keys": ",".join(sorted(env))}
    if config_text is not None:
        mounts.append(Mount("bind", LOCAL_CONFIG, LOCAL_CONFIG_IN_CONTAINER, read_only=True))
        # The container reads the file at start: a changed file means a new container.
        labels[f"{LABEL_PREFIX}config-sha256"] = hashlib.sha256(config_text.encode()).hexdigest()
    return ContainerSpec(
        name=CONTAINER,
        image=image_ref(target),
        env_file=ENV_FILE,
        env_keys=tuple(sorted(env)),
        env_sha256=env_sha256(env),
        hostname=target.name,
        mounts=tuple(mounts),
        ports=(Port(str(target.data.get("private_address")), int(_value(target, "ds_http_port")), 80),),
        restart_policy=str(_value(target, "ds_restart_policy")),
        memory=memory_bytes(_value(target, "ds_memory_limit")),
        nano_cpus=nano_cpus(_value(target, "ds_cpus")),
        labels=labels,
    )


def example_script(container_name: str, enabled: bool, deadline: int) -> str:
    """Shell run on the DS host: wait (bounded) for supervisord, then set autostart and start/stop ds:example.

    ``supervisorctl update`` is never run: it would restart the whole ds group (docservice too).
    """
    c = shlex.quote(container_name)
    word = "true" if enabled else "false"
    action = ("supervisorctl status ds:example | grep -q RUNNING || supervisorctl start ds:example" if enabled
              else "supervisorctl status ds:example | grep -q RUNNING && supervisorctl stop ds:example || true")
    return (
        f"i=0; until docker exec {c} supervisorctl pid >/dev/null 2>&1; do i=$((i+1)); "
        f"if [ $i -ge {int(deadline)} ]; then echo 'supervisord in {c} did not answer within {int(deadline)} s "
        f"(see docker logs {c})' >&2; exit 1; fi; sleep 1; done; "
        f"docker exec {c} sed -i -E 's/^autostart=.*/autostart={word}/' {EXAMPLE_CONF} && "
        f"docker exec {c} sh -c '{action}' >/dev/null"
    )


def drain_script(seconds: int) -> str:
    """Shell run on the DS host (``$1`` = container) before a running container is replaced.

    pre-stop (node-local, 9.2+) then a bounded wait for ``connections/edit`` to reach 0;
    it always exits 0 and prints one line saying how the drain ended (ooha/ops/containers.py
    logs it).  Port 8000 is reached from inside the container only (never published).
    """
    return (
        'c="$1"; '
        "docker exec \"$c\" curl -sf -m 5 -X PUT http://localhost:8000/internal/cluster/pre-stop >/dev/null 2>&1 "
        "&& echo 'drain: pre-stop sent' || echo 'drain: pre-stop not accepted (Document Server before 9.2?), waiting anyway'; "
        f"end=$(($(date +%s) + {int(seconds)})); "
        "while :; do "
        "n=$(docker exec \"$c\" curl -sf -m 5 http://localhost:8000/internal/connections/edit 2>/dev/null); "
        "case \"$n\" in ''|*[!0-9]*) echo \"drain: connections/edit did not answer a number ($n); stopping\"; exit 0;; esac; "
        "if [ \"$n\" -eq 0 ]; then echo 'drain: no editing session left; stopping'; exit 0; fi; "
        f"if [ \"$(date +%s)\" -ge \"$end\" ]; then echo \"drain: $n editing session(s) still open after {int(seconds)} s "
        "(ds_drain_seconds); stopping anyway\"; exit 0; fi; "
        "sleep 1; done"
    )


@operation()
def example(container_name: str, enabled: bool, deadline: int = 180):
    """The test example on (autostart=true, running) or off (autostart=false, stopped)."""
    gave_up = heal_gave_up(host.get_fact(DsHealState))
    if gave_up:
        host.noop(f"example: container stopped ({gave_up})")
        return
    current = host.get_fact(DsExample, container=container_name)
    if current and current["state"] and current["autostart"] is enabled and (current["state"] == "RUNNING") is enabled:
        host.noop(f"example {'on' if enabled else 'off'}")
        return
    yield StringCommand("sh", "-c", QuoteString(example_script(container_name, enabled, deadline)))


def heal_config(target: Any) -> dict[str, Any]:
    """The self-healing script's settings (no secret: it reads /healthcheck and HAProxy's stats only)."""
    return {
        "container": CONTAINER,
        "health_url": f"{base_url(target)}/healthcheck",
        "stats_port": int(_value(target, "endpoint_stats_port")),
        "dependencies": list(HEAL_DEPENDENCIES),
        "heal_after": int(_value(target, "ds_heal_after_seconds")),
        "start_grace": int(_value(target, "ds_heal_start_grace_seconds")),
        "max_restarts": int(_value(target, "ds_heal_max_restarts")),
        "window": int(_value(target, "ds_heal_window_seconds")),
        "drain_seconds": int(_value(target, "ds_heal_drain_seconds")),
        "stop_grace": int(_value(target, "ds_stop_grace_seconds")),
        "state_file": HEAL_STATE,
        "lock_file": "/run/ooha-ds-heal.lock",
    }


def render_heal_script(target: Any) -> str:
    """templates/documentserver/ooha-ds-heal.py.j2 rendered for ``target``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined, **JINJA)
    config = heal_config(target)
    return env.get_template("documentserver/ooha-ds-heal.py.j2").render(
        config_json=json.dumps(config, sort_keys=True), interval=int(_value(target, "ds_heal_interval_seconds")),
        heal_after=config["heal_after"], start_grace=config["start_grace"], max_restarts=config["max_restarts"],
        window=config["window"])


def heal_gave_up(heal: dict[str, Any] | None) -> str | None:
    """Why the container must stay stopped (self-healing gave up on it), or None."""
    state = (heal or {}).get("state") or {}
    if not state.get("gave_up_at"):
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(float(state["gave_up_at"])))
    return f"self-healing gave up after {int(state.get('gave_up_restarts') or 0)} restarts at {when}"


def heal_fix(name: str) -> str:
    return (f"investigate (`docker logs {CONTAINER}`, `journalctl -u {HEAL_SERVICE}` on {name}), then "
            f"`systemctl start {HEAL_RESET_SERVICE.removesuffix('.service')}` on {name} or rerun the main job with "
            "--data ds_heal_reset=true")


@operation()
def heal_reset(reset: bool):
    """With ``reset``: forget the self-healing state (restarts, give-up) when there is one; starts a stopped container."""
    heal = host.get_fact(DsHealState)
    state = (heal or {}).get("state") or {}
    if not reset or heal is None or not (state.get("gave_up_at") or state.get("restarts")):
        host.noop("self-healing state: nothing to reset")
        return
    yield StringCommand(HEAL_SCRIPT, "reset")


def self_healing() -> None:
    """The self-healing script, its timer and the reset unit; the timer on or off (ds_heal_enabled)."""
    enabled = bool(_value(host, "ds_heal_enabled"))
    files.put(name="Self-healing script", src=StringIO(render_heal_script(host)), dest=HEAL_SCRIPT,
              user="root", group="root", mode="755")
    interval = int(_value(host, "ds_heal_interval_seconds"))
    timeout = int(_value(host, "ds_heal_drain_seconds")) + int(_value(host, "ds_stop_grace_seconds")) + 120
    units = [
        files.template(name="Self-healing service unit", src=str(TEMPLATES / "documentserver/ooha-ds-heal.service.j2"),
                       dest=f"/etc/systemd/system/{HEAL_SERVICE}", mode="644", jinja_env_kwargs=dict(JINJA),
                       script=HEAL_SCRIPT, timeout=timeout),
        files.template(name="Self-healing timer unit", src=str(TEMPLATES / "documentserver/ooha-ds-heal.timer.j2"),
                       dest=f"/etc/systemd/system/{HEAL_TIMER}", mode="644", jinja_env_kwargs=dict(JINJA), interval=interval),
        files.template(name="Self-healing reset unit", src=str(TEMPLATES / "documentserver/ooha-ds-heal-reset.service.j2"),
                       dest=f"/etc/systemd/system/{HEAL_RESET_SERVICE}", mode="644", jinja_env_kwargs=dict(JINJA),
                       script=HEAL_SCRIPT),
    ]
    systemd.daemon_reload(name="Reload systemd (self-healing units changed)", _if=any_changed(*units))
    systemd.service(name=f"Self-healing timer {'on' if enabled else 'off'}", service=HEAL_TIMER, running=enabled,
                    enabled=enabled)


_WARNED: list[bool] = [False]


@deploy("Document Server", data_defaults=DS_DEFAULTS)
def documentserver() -> None:
    """Converge this DS host's container; data keys are documented in DS_DEFAULTS."""
    problems = [p for target in inventory.get_group("docs") for p in input_problems(target)]
    if problems:
        raise DeployError("Document Server layer inputs:\n" + "\n".join(dict.fromkeys(problems)))
    warning = community_warning(str(_value(host, "ds_edition")), len(inventory.get_group("docs")))
    if warning and not _WARNED[0]:
        _WARNED[0] = True
        logger.warning(warning)
    release_guard(host, host.get_fact(FileContents, path=RELEASE_FILE))
    retired_guard(host, host.get_fact(FileContents, path=RETIRED_FILE))
    env = container_env(host)
    config_text = local_config(host)
    # A rebuilt (blank) host gets its Data volume and configs back BEFORE the container exists.
    from ooha.layers.filebackup import restore_if_blank

    restore_if_blank(container=CONTAINER)
    files.directory(name="Document Server config directory (root only)", path=CONFIG_DIR, user="root", group="root", mode="700")
    private_put(name="Document Server env-file (secrets, 0600)", src=StringIO(env_file_text(env)), dest=ENV_FILE,
                user="root", group="root", mode="600")
    if config_text is not None:
        # Read through a read-only bind mount by the container's ds user: 0644 inside a
        # 0700 root directory, so no other user of the host can reach it.
        private_put(name="Document Server local-production-linux.json (Redis Sentinel)", src=StringIO(config_text),
                    dest=LOCAL_CONFIG, user="root", group="root", mode="644")
    else:
        files.file(name="No Sentinel config (community edition)", path=LOCAL_CONFIG, present=False)
    heal_reset(name="Self-healing state reset (--data ds_heal_reset=true)", reset=bool(_value(host, "ds_heal_reset")))
    container(name=f"Document Server container ({image_ref(host)})", spec=container_spec(host, env, config_text),
              drain=drain_script(int(_value(host, "ds_drain_seconds"))),
              stop_grace=int(_value(host, "ds_stop_grace_seconds")),
              keep_stopped=lambda: heal_gave_up(host.get_fact(DsHealState)))
    example(name=f"Test example {'on' if _value(host, 'ds_example_enabled') else 'off'}", container_name=CONTAINER,
            enabled=bool(_value(host, "ds_example_enabled")), deadline=int(_value(host, "ds_start_deadline")))
    self_healing()


# --- validation -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def command_token(secret: str, payload: dict[str, Any], lifetime: int = 300, now: float | None = None) -> str:
    """An HS256 JWT for the command service, made on the controller (the secret never leaves it)."""
    issued = int(now if now is not None else time.time())
    body = dict(payload, iat=issued, exp=issued + lifetime)
    signing = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()) + "." + \
        _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64(signature)


def classify_502(log_lines: list[str], example_enabled: bool) -> tuple[str, str]:
    """The likely cause of a 502 from the container's nginx, and the error-log line that shows it.

    ``connect() failed (111: Connection refused)`` -> upstream refused (to the example's
    127.0.0.1:3000 with the example off -> example off); ``could not be resolved`` -> name
    not resolved.  The newest matching line wins.
    """
    for line in reversed(log_lines):
        if "could not be resolved" in line:
            return "name not resolved", line.strip()
        if "connect() failed (111" in line:
            if ":3000" in line or "/example/" in line:
                if not example_enabled:
                    return "example off", line.strip()
                return "upstream refused (the example is not running)", line.strip()
            return "upstream refused", line.strip()
    return "unknown (no matching nginx error line)", ""


def excerpt(line: str, width: int = 220) -> str:
    """The part of an nginx error line that shows the cause (it starts near the keyword)."""
    if len(line) <= width:
        return line
    for keyword in ("connect() failed", "could not be resolved"):
        at = line.find(keyword)
        if at >= 0:
            start = max(0, at - (60 if keyword.startswith("could") else 0))
            return line[start:start + width]
    return line[-width:]


def _cause_text(cause: str, line: str) -> str:
    return f"likely cause: {cause}" + (f" (nginx: {excerpt(line)})" if line else "")


def base_url(target: Any) -> str:
    return f"http://{target.data.get('private_address')}:{int(_value(target, 'ds_http_port'))}"


def example_text(status: int, cause: str, line: str) -> str:
    """The report's words for an example that is off (not a failure: the default)."""
    seen = f"answers {status}" if status else "gets no answer"
    return (f"example off: /example/ {seen} ({cause}: nothing listens on 127.0.0.1:3000 in the container"
            + (f"; nginx: {excerpt(line, 200)}" if line else "") + "); fix: set ds_example_enabled=true")


def check_documentserver_once(target: Any) -> CheckResult:
    """Container running with the wanted image, /healthcheck true, version from /command, example state."""
    wanted = image_ref(target)
    heal = target.get_fact(DsHealState)
    gave_up = heal_gave_up(heal)
    if gave_up:
        return CheckResult(False, gave_up, heal_fix(target.name), final=True)
    current = target.get_fact(DsContainer, container=CONTAINER, env_keys=())
    if current is None:
        return CheckResult(False, f"container {CONTAINER} does not exist", "rerun the deploy (--data layers=documentserver)", final=True)
    if not current["running"]:
        return CheckResult(False, f"node unreachable: container {CONTAINER} is {current['status']}",
                           f"`docker start {CONTAINER}` or rerun the deploy; see `docker logs {CONTAINER}`")
    release = release_of(target.get_fact(FileContents, path=RELEASE_FILE))
    if current["image"] != wanted:
        if release.get("ref") == current["image"]:
            return CheckResult(False, f"container runs {current['image']} (rollout {release.get('rollout_id')}), the inventory "
                               f"says {wanted}", f"set {release_keys(str(release['ref']))} in the inventory, or deploys/rollback.py",
                               final=True)
        return CheckResult(False, f"container runs {current['image']}, wanted {wanted}", "rerun the deploy", final=True)
    url = base_url(target)
    example_on = bool(_value(target, "ds_example_enabled"))
    health = target.get_fact(DsHttp, url=f"{url}/healthcheck")
    if health["status"] == 0:
        return CheckResult(False, f"node unreachable: nothing answers on {url}", f"see `docker logs {CONTAINER}` and `docker ps -a`")
    if health["status"] == 502:
        cause, line = classify_502(target.get_fact(DsNginxErrors), example_on)
        return CheckResult(False, f"/healthcheck answers 502, {_cause_text(cause, line)}", f"see `docker logs {CONTAINER}`")
    if health["body"] != "true":
        return CheckResult(False, f"/healthcheck says {health['body']!r} (HTTP {health['status']}): database, Redis or RabbitMQ "
                           "not reachable from the container", "check the endpoints and data layers' report lines; "
                           f"see /var/log/onlyoffice/documentserver/docservice/out.log in {CONTAINER}")
    token = command_token(_secret(target, "jwt_secret"), {"payload": {"c": "version"}})
    # The header goes to curl on stdin (-H @-): never on an argv on the DS host, never printed.
    header = f"{_value(target, 'ds_jwt_header')}: Bearer {token}\n"
    answer = target.get_fact(DsVersion, url=f"{url}/command", _stdin=header)
    if not answer or answer.get("error") != 0:
        return CheckResult(False, f"command service answered {answer!r} (6: token rejected, JWT secret differs)",
                           "rerun the deploy (JWT_SECRET comes from secrets.jwt_secret)")
    version = str(answer.get("version"))
    if re.match(r"^\d+(\.\d+){3}$", str(_value(target, "ds_version"))) and version != str(_value(target, "ds_version")):
        return CheckResult(False, f"version {version}, wanted {_value(target, 'ds_version')}", "rerun the deploy")
    page = target.get_fact(DsHttp, url=f"{url}/example/")
    if example_on:
        if page["status"] != 200:
            cause, line = ("node unreachable", "") if page["status"] == 0 else classify_502(target.get_fact(DsNginxErrors), True)
            return CheckResult(False, f"example on but /example/ answers {page['status']}, {_cause_text(cause, line)}",
                               "rerun the deploy (it starts ds:example)")
        example_part = "example on: /example/ 200"
    else:
        if page["status"] == 200:
            return CheckResult(False, "example answers 200 although ds_example_enabled is false", "rerun the deploy (it stops ds:example)")
        cause, line = classify_502(target.get_fact(DsNginxErrors), False) if page["status"] == 502 else ("example off", "")
        example_part = example_text(page["status"], cause, line)
    edition = "" if _value(target, "ds_edition") != "community" or len(inventory.get_group("docs")) < 2 else \
        " (community: editing state not shared across nodes, each document stays on one node)"
    heal_part = heal_text(target, heal)
    if heal_part.startswith("FAIL "):
        return CheckResult(False, heal_part[5:], "rerun the deploy (it installs and starts ooha-ds-heal.timer)")
    by = f"; release by rollout {release['rollout_id']}" if release.get("ref") == wanted and release.get("rollout_id") else ""
    return CheckResult(True, f"{wanted.rsplit('/', 1)[-1]} running, healthcheck true, version {version}{edition}, "
                             f"db {node_database(target.name)}, vhost {node_vhost(target.name)}; {heal_part}; {example_part}{by}",
                       facts={"version": version})


def heal_text(target: Any, heal: dict[str, Any] | None) -> str:
    """The report's self-healing part ("FAIL ..." when the timer should run and does not)."""
    enabled = bool(_value(target, "ds_heal_enabled"))
    if heal is None:
        return "FAIL self-healing not installed" if enabled else "self-healing off"
    if not enabled:
        return "self-healing off"
    if not (heal["timer_enabled"] and heal["timer_active"]):
        return f"FAIL self-healing timer {HEAL_TIMER} not enabled and active"
    state = heal.get("state") or {}
    window = int(_value(target, "ds_heal_window_seconds"))
    now = time.time()
    recent = [t for t in state.get("restarts") or [] if now - float(t) < window]
    return (f"self-healing on: {len(recent)} restart(s) in the last {window // 60} min "
            f"({int(state.get('total_restarts') or 0)} since reset, gives up after {int(_value(target, 'ds_heal_max_restarts'))})")


def check_documentserver(target: Any) -> CheckResult:
    """The layer's report line, waiting a bounded time for a (re)started container to be healthy."""
    return poll(check_documentserver_once, target, float(_value(target, "ds_settle_seconds")), interval=2.0)
