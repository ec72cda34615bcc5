"""Validate an inventory before any host is touched.

Every rule is a pure function over plain data (``HostSpec``) so each one has its own
unit test.  The rules collect every problem instead of stopping at the first, so a
user fixes an inventory in one pass; ``raise_for_problems`` then raises one
``InventoryError`` with one line per problem naming the host, the field and the fix.

Two entry points feed the rules:

* ``check_inventory_groups(namespace)``: called at the bottom of an inventory file
  (lab.py, example.py) on its own module-level groups, so a broken inventory stops
  the run while pyinfra is still loading it, before it connects to any host;
* ``check_pyinfra_inventory(inventory)``: called first thing in ``deploys/ha.py`` on
  pyinfra's ``Inventory`` (which also holds group_data/ and --data), as a second
  line of defence for inventories that do not call the first.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.exceptions import DeployError

from ooha.stack import GROUPS as STACK_GROUPS

REQUIRED_GROUPS: tuple[str, ...] = STACK_GROUPS
"""Every group the main job deploys to (from the layer table); each must exist and hold hosts."""

REQUIRED_SECRETS: tuple[str, ...] = (
    "jwt_secret",
    "secure_link_secret",
    "postgres_superuser_password",
    "postgres_replication_password",
    "postgres_ds_password",
    "redis_password",
    "rabbitmq_password",
    "rabbitmq_erlang_cookie",
    "patroni_rest_password",
    "redis_sentinel_password",
)
"""Secrets the main job needs (docs/architecture.md, "Secrets")."""

MIN_AZS_PER_TIER = 2
"""A tier confined to one AZ dies with that AZ: that is the failure this project exists for."""

QUORUM_GROUPS: tuple[str, ...] = ("etcd", "redis", "rabbitmq")
"""Groups whose members vote: etcd (Raft), redis (Sentinel's failover needs a majority of the
Sentinels) and rabbitmq (``pause_minority`` pauses a node that sees half or fewer of the
nodes).  The postgres group is not here: Patroni's consensus is etcd's, and any single
surviving PostgreSQL member can take the leader key."""

INSECURE_HOST_KEY_CHECKING = {"no", "off", "false", "0"}
ADDRESS_FIELDS: tuple[str, ...] = ("ssh_hostname", "private_address")

ALL = "all"
"""Pseudo host name for problems that are not about one host (missing group, secrets)."""


class InventoryError(DeployError):
    """The inventory is invalid; the message lists every problem found."""


@dataclass(frozen=True)
class HostSpec:
    """One inventory host as plain data: its name, its groups and its merged data."""

    name: str
    groups: frozenset[str]
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, with what to do about it."""

    host: str
    field: str
    problem: str
    fix: str

    def line(self) -> str:
        """Render as the single line printed to the user."""
        return f"{self.host}: {self.field}: {self.problem}; fix: {self.fix}"


# --- rules ---------------------------------------------------------------------------


def check_azs(hosts: Sequence[HostSpec]) -> list[Problem]:
    """Every host names its availability zone: tier placement is checked against it."""
    problems = []
    for spec in hosts:
        az = spec.data.get("az")
        if az is None or az == "":
            problems.append(
                Problem(spec.name, "az", "missing", f"set host data az='<zone>' for {spec.name}")
            )
        elif not isinstance(az, str):
            problems.append(
                Problem(
                    spec.name,
                    "az",
                    f"must be a string, got {type(az).__name__}",
                    "quote the zone name, e.g. az='eu-west-1a'",
                )
            )
    return problems


def check_groups(
    hosts: Sequence[HostSpec], required: Iterable[str] = REQUIRED_GROUPS
) -> list[Problem]:
    """Every role the main job deploys has at least one host."""
    present = {group for spec in hosts for group in spec.groups}
    return [
        Problem(
            ALL,
            f"group {group}",
            "missing or empty",
            f"add a module-level list `{group} = [...]` of hosts to the inventory",
        )
        for group in required
        if group not in present
    ]


def check_tiers_span_azs(
    hosts: Sequence[HostSpec],
    tiers: Iterable[str] = REQUIRED_GROUPS,
    minimum: int = MIN_AZS_PER_TIER,
) -> list[Problem]:
    """Each tier has hosts in at least ``minimum`` distinct AZs.

    Hosts without a valid ``az`` are left to ``check_azs`` and empty tiers to
    ``check_groups``, so one mistake is not reported three times.
    """
    problems = []
    for tier in tiers:
        members = [spec for spec in hosts if tier in spec.groups]
        if not members:
            continue
        azs = {spec.data.get("az") for spec in members}
        azs = {az for az in azs if isinstance(az, str) and az}
        if len(azs) < minimum:
            names = ", ".join(spec.name for spec in members)
            problems.append(
                Problem(
                    ALL,
                    f"group {tier}",
                    f"spans {len(azs)} AZ(s) ({', '.join(sorted(azs)) or 'none'}) "
                    f"with hosts {names}",
                    f"place {tier} hosts in at least {minimum} availability zones",
                )
            )
    return problems


def check_quorum_survives_az_loss(
    hosts: Sequence[HostSpec],
    groups: Iterable[str] = QUORUM_GROUPS,
    minimum: int = MIN_AZS_PER_TIER,
) -> list[Problem]:
    """Losing any one AZ leaves a strict majority of each quorum group's members.

    An AZ holding half or more of a group's voters takes the quorum down with it: with
    etcd 2+1+1 over three AZs, losing the AZ with 2 leaves 2 of 4, no majority, and
    Patroni demotes its leader; RabbitMQ's pause_minority pauses every node.  A tier
    spanning fewer than ``minimum`` AZs is left to ``check_tiers_span_azs``, and hosts
    without a valid ``az`` to ``check_azs``, so one mistake is reported once.
    """
    problems = []
    for group in groups:
        members = [spec for spec in hosts if group in spec.groups]
        by_az: dict[str, list[str]] = defaultdict(list)
        for spec in members:
            az = spec.data.get("az")
            if isinstance(az, str) and az:
                by_az[az].append(spec.name)
        if len(by_az) < minimum:
            continue
        total = sum(len(names) for names in by_az.values())
        for az in sorted(by_az):
            held = len(by_az[az])
            if 2 * held >= total:
                problems.append(
                    Problem(
                        ALL,
                        f"group {group}",
                        f"{az} holds {held} of {total} members ({', '.join(by_az[az])}); "
                        f"losing {az} loses quorum",
                        "spread members so no AZ holds half or more "
                        "(3 AZs with 1 each is the reference)",
                    )
                )
    return problems


def check_unique_addresses(hosts: Sequence[HostSpec]) -> list[Problem]:
    """No two hosts share an address: a copy-pasted address deploys one host twice.

    A host may use the same address for SSH and for its peers (the lab does).
    """
    owners: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for spec in hosts:
        seen_here = set()
        for key in ADDRESS_FIELDS:
            value = spec.data.get(key)
            if isinstance(value, str) and value and value not in seen_here:
                seen_here.add(value)
                owners[value].append((spec.name, key))
    problems = []
    for address, users in owners.items():
        if len(users) < 2:
            continue
        first_host = users[0][0]
        for name, key in users[1:]:
            problems.append(
                Problem(
                    name,
                    key,
                    f"address {address} is also used by {first_host}",
                    f"give {name} its own address",
                )
            )
    return problems


def check_secrets(
    secrets: Any, required: Iterable[str] = REQUIRED_SECRETS, source: str = "the secrets file"
) -> list[Problem]:
    """Every required secret is present and a non-empty string (values never shown)."""
    if not isinstance(secrets, Mapping):
        return [
            Problem(
                ALL,
                "secrets",
                "not loaded",
                "load them in the inventory with ooha.secrets "
                "(never write secrets in the inventory)",
            )
        ]
    problems = []
    for key in required:
        value = secrets.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(
                Problem(ALL, f"secrets.{key}", "missing or empty", f"add {key}: <value> to {source}")
            )
        elif not isinstance(value, str):
            problems.append(
                Problem(
                    ALL,
                    f"secrets.{key}",
                    f"must be a string, got {type(value).__name__}",
                    f"quote the value of {key} in {source}",
                )
            )
    return problems


def check_host_key_checking(hosts: Sequence[HostSpec]) -> list[Problem]:
    """SSH host keys are verified: turning that off lets anyone on the path take the deploy."""
    problems = []
    for spec in hosts:
        value = spec.data.get("ssh_strict_host_key_checking")
        if value is False or (isinstance(value, str) and value.lower() in INSECURE_HOST_KEY_CHECKING):
            problems.append(
                Problem(
                    spec.name,
                    "ssh_strict_host_key_checking",
                    f"is {value!r}: host keys would not be checked",
                    "set it to 'yes' and list the host keys in ssh_known_hosts_file",
                )
            )
    return problems


def is_ip_address(value: str) -> bool:
    """True for an IPv4/IPv6 literal (service configs need addresses, not names)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return bool(value) and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and not label.startswith("-")
        for label in labels
    )


def check_types(hosts: Sequence[HostSpec]) -> list[Problem]:
    """Data keys the base layer reads have the types it expects."""
    problems: list[Problem] = []

    def bad(name: str, key: str, problem: str, fix: str) -> None:
        problems.append(Problem(name, key, problem, fix))

    for spec in hosts:
        data = spec.data
        for key in ADDRESS_FIELDS:
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not (is_ip_address(value) or _is_hostname(value)):
                bad(spec.name, key, f"{value!r} is not an IP address or host name", f"set {key} to the host's address")
        if "private_address" in data and data["private_address"] is not None:
            if isinstance(data["private_address"], str) and not is_ip_address(data["private_address"]):
                bad(
                    spec.name,
                    "private_address",
                    f"{data['private_address']!r} is not an IP address",
                    "set private_address to the IP address peers use (it goes into service configs)",
                )
        proxy = data.get("apt_proxy")
        if proxy is not None and not (
            isinstance(proxy, str) and proxy.startswith(("http://", "https://"))
        ):
            bad(spec.name, "apt_proxy", f"{proxy!r} is not an http(s) URL", "use http://host:3142 or None")
        ntp = data.get("ntp_servers")
        if ntp is not None and not (
            isinstance(ntp, (list, tuple)) and all(isinstance(s, str) and s for s in ntp)
        ):
            bad(spec.name, "ntp_servers", "must be a list of host names or addresses", "e.g. ntp_servers=['ntp1.example.net']")
        clock = data.get("chrony_may_set_clock")
        if clock is not None and not isinstance(clock, bool):
            bad(spec.name, "chrony_may_set_clock", f"must be True or False, got {clock!r}", "use a bool")
        for key, prefixes in (("sysctl_baseline", ("net.",)), ("sysctl_host_baseline", ("vm.", "kernel.", "fs."))):
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                bad(spec.name, key, "must be a mapping of sysctl name to value", f"e.g. {key}={{'{prefixes[0]}...': 1}}")
                continue
            for name, setting in value.items():
                if not isinstance(name, str) or not name.startswith(prefixes):
                    bad(
                        spec.name,
                        f"{key}.{name}",
                        f"not a {'/'.join(prefixes)}* sysctl",
                        "namespaced net.* keys go in sysctl_baseline, kernel-wide ones in sysctl_host_baseline",
                    )
                elif not isinstance(setting, (int, str)) or isinstance(setting, bool):
                    bad(spec.name, f"{key}.{name}", f"value {setting!r} is not an int or string", "use e.g. 1 or '4096'")
    return problems


def check_layers(hosts: Sequence[HostSpec]) -> list[Problem]:
    """``layers`` (converge a subset) names only real layers, so a typo is not a silent no-op."""
    from ooha.stack import LAYER_NAMES, unknown_layers

    problems = []
    values = {repr(spec.data.get("layers")) for spec in hosts}
    for spec in hosts:
        value = spec.data.get("layers")
        # --data layers=... is every host's value: one problem for all of them.
        name = ALL if len(values) == 1 and len(hosts) > 1 else spec.name
        if name == ALL and spec is not hosts[0]:
            break
        try:
            unknown = unknown_layers(value)
        except TypeError as exc:
            problems.append(Problem(name, "layers", str(exc), "pass e.g. --data layers=redis,endpoints"))
            continue
        if unknown:
            problems.append(
                Problem(
                    name,
                    "layers",
                    f"unknown layer(s) {', '.join(unknown)}",
                    f"use names from {', '.join(LAYER_NAMES)}",
                )
            )
    return problems


RULES: tuple[Callable[[Sequence[HostSpec]], list[Problem]], ...] = (
    check_azs,
    check_groups,
    check_tiers_span_azs,
    check_quorum_survives_az_loss,
    check_unique_addresses,
    check_host_key_checking,
    check_types,
    check_layers,
)


def collect_problems(hosts: Sequence[HostSpec], secrets: Any) -> list[Problem]:
    """Run every rule and return all problems found, in rule order."""
    problems: list[Problem] = []
    if not hosts:
        return [Problem(ALL, "hosts", "the inventory has no hosts", "add hosts to the groups")]
    for rule in RULES:
        problems.extend(rule(hosts))
    problems.extend(check_secrets(secrets))
    return problems


def raise_for_problems(problems: Sequence[Problem], source: str = "inventory") -> None:
    """Raise one ``InventoryError`` listing every problem, or return if there is none."""
    if problems:
        lines = "\n".join(f"  - {p.line()}" for p in problems)
        raise InventoryError(
            f"{source} is invalid ({len(problems)} problem(s)), nothing was changed:\n{lines}"
        )


# --- adapters -------------------------------------------------------------------------


def _host_name_and_data(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, tuple):
        return str(item[0]), dict(item[1] or {})
    return str(item), {}


def hosts_from_groups(groups: Mapping[str, Any]) -> list[HostSpec]:
    """Plain host specs from inventory-style groups: ``{name: [hosts] | ([hosts], data)}``.

    Data precedence follows pyinfra: host data over group data over ``all`` data.
    Group order decides between groups, as pyinfra does for inventory files.
    """
    all_data: dict[str, Any] = {}
    membership: dict[str, set[str]] = defaultdict(set)
    group_data: dict[str, dict[str, Any]] = {}
    host_data: dict[str, dict[str, Any]] = defaultdict(dict)
    order: list[str] = []
    for group, value in groups.items():
        items, data = (value[0], value[1]) if isinstance(value, tuple) else (value, {})
        if group == ALL:
            all_data = dict(data or {})
        else:
            group_data[group] = dict(data or {})
        for item in items:
            name, data_for_host = _host_name_and_data(item)
            host_data[name].update(data_for_host)
            if group != ALL:
                membership[name].add(group)
            if name not in order:
                order.append(name)
    specs = []
    for name in order:
        merged = dict(all_data)
        for group, data in group_data.items():
            if group in membership[name]:
                merged.update(data)
        merged.update(host_data[name])
        specs.append(HostSpec(name, frozenset(membership[name]), merged))
    return specs


def _is_group(key: str, value: Any) -> bool:
    if key.startswith("_"):
        return False
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        value = value[0]
    return isinstance(value, list) and all(isinstance(item, (str, tuple)) for item in value)


def check_inventory_groups(namespace: Mapping[str, Any], source: str = "inventory") -> None:
    """Validate an inventory module's groups (pass ``globals()``); raise if invalid.

    Called at the end of an inventory file so that pyinfra stops while loading it,
    before it connects to any host.  Under the pyinfra CLI with config.py's hook
    installed, the full preflight runs a moment later on the final data (--data,
    group_data) and reports these problems with every other one, so this returns.
    """
    if hook_installed():
        return
    groups = {key: value for key, value in namespace.items() if _is_group(key, value)}
    hosts = hosts_from_groups(groups)
    secrets = hosts[0].data.get("secrets") if hosts else None
    raise_for_problems(collect_problems(hosts, secrets), source)


def hosts_from_pyinfra(inventory: Any) -> list[HostSpec]:
    """Plain host specs from a pyinfra ``Inventory`` (every host, --limit ignored)."""
    specs = []
    for host in inventory:
        data = host.data.dict()
        groups = frozenset(name for name in host.groups if name != ALL)
        specs.append(HostSpec(host.name, groups, data))
    return specs


def check_pyinfra_inventory(inventory: Any, source: str = "inventory") -> None:
    """Validate pyinfra's loaded inventory; raise ``InventoryError`` if invalid."""
    hosts = hosts_from_pyinfra(inventory)
    secrets = hosts[0].data.get("secrets") if hosts else None
    raise_for_problems(collect_problems(hosts, secrets), source)


# --- the full preflight: run by config.py when pyinfra has loaded the inventory ----------
#
# pyinfra's CLI (pyinfra_cli/cli.py ``_main``) execs config.py after it has created the
# State and before it loads the inventory; it then builds the Inventory (inventory file,
# group_data/ and --data merged), calls ``state.init(inventory, ...)`` and only then prints
# "--> Connecting to hosts..." and connects.  ``install_cli_hook`` (called from config.py)
# wraps that one ``state.init`` call, so the checks below see the final data of every host
# and run before anything is contacted.  Problems are printed one line each (host, field,
# problem, fix), all at once, without a traceback, and the run exits 1.

PREFLIGHT_ONLY_ENV = "OOHA_PREFLIGHT_ONLY"
"""Set to 1: stop after a passing preflight (prints "preflight: OK ...", exit 0, no connection)."""

CONTROLLER_FILES: tuple[str, ...] = ("ssh_key", "ssh_known_hosts_file")
"""Host data naming files on the machine running pyinfra (the layers check their own: TLS, CAs)."""

BACKUP_TYPES: tuple[str, ...] = ("full", "diff", "incr")
"""``--data backup_type=`` of deploys/backup.py."""

_HOOK_INSTALLED = [False]


def hook_installed() -> bool:
    """True once config.py has installed the full preflight in this pyinfra run."""
    return _HOOK_INSTALLED[0]


def check_controller_files(hosts: Sequence[HostSpec], keys: Iterable[str] = CONTROLLER_FILES) -> list[Problem]:
    """Files that host data names on this machine exist (SSH key, known_hosts), one problem each."""
    import os

    problems = []
    seen: set[tuple[str, str]] = set()
    for spec in hosts:
        for key in keys:
            value = spec.data.get(key)
            if value is None or value == "":
                continue
            path = os.path.expanduser(str(value))
            if (key, path) in seen:
                continue
            seen.add((key, path))
            if not os.path.isfile(path):
                problem = f"{path} is not a file on this machine"
                fix = f"create it or point {key} at the right file (it is read here, not on the hosts)"
            elif key == "ssh_key" and not _looks_like_private_key(path):
                problem = f"{path} is not a private key (PEM or OpenSSH)"
                fix = "point ssh_key at the private key, not the .pub file"
            else:
                continue
            owners = [s.name for s in hosts if s.data.get(key) == value]
            problems.append(Problem(", ".join(owners) if len(owners) < len(hosts) else ALL, key, problem, fix))
    return problems


def _looks_like_private_key(path: str) -> bool:
    """The file holds a PEM/OpenSSH private key block (its content is never shown)."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return "-----BEGIN" in head and "PRIVATE KEY-----" in head


def check_secret_lines(secrets: Any, source: str = "the secrets file") -> list[Problem]:
    """Every secret is one line: a line break breaks env files, configs and command lines."""
    if not isinstance(secrets, Mapping):
        return []
    return [
        Problem(ALL, f"secrets.{key}", "holds a line break", f"write {key} on one line in {source} (no | or > block)")
        for key, value in secrets.items()
        if isinstance(value, str) and ("\n" in value or "\r" in value)
    ]


def check_backup_job(hosts: Sequence[HostSpec]) -> list[Problem]:
    """deploys/backup.py: ``backup_type`` is full, diff or incr."""
    bad = sorted({str(s.data.get("backup_type")) for s in hosts if s.data.get("backup_type") not in (None, "", *BACKUP_TYPES)})
    return [
        Problem(ALL, "backup_type", f"{value!r} is not one of {', '.join(BACKUP_TYPES)}", "--data backup_type=full (or diff, incr)")
        for value in bad
    ]


def check_rollout_job(hosts: Sequence[HostSpec]) -> list[Problem]:
    """deploys/patch.py and rollback.py: the ``rollout_*`` keys (ooha/rollout/options.py)."""
    from ooha.rollout.options import option_problems

    problems = []
    for line in option_problems(hosts[0].data if hosts else {}):
        field, rest = line.split(": ", 1)
        problem, _, fix = rest.rpartition("; fix: ")
        problems.append(Problem(ALL, field, problem or rest, fix or "see docs/architecture.md (rollout keys)"))
    return problems


def check_scale_job(hosts: Sequence[HostSpec]) -> list[Problem]:
    """deploys/scale.py: ``ds_retire`` / ``ds_join`` (ooha/rollout/scale.py) and the rollout keys it
    shares with patch.py (drain bound, health timeout, lock)."""
    from ooha.rollout.scale import scale_problems

    docs = [spec.name for spec in hosts if "docs" in spec.groups]
    problems = check_rollout_job(hosts)
    for line in scale_problems(hosts[0].data if hosts else {}, docs):
        field, rest = line.split(": ", 1)
        problem, _, fix = rest.rpartition("; fix: ")
        problems.append(Problem(ALL, field, problem or rest, fix or "see the README's day-2 section (scale)"))
    return problems


def check_patch_hosts_job(hosts: Sequence[HostSpec]) -> list[Problem]:
    """deploys/patch_hosts.py: ``patch_packages`` / ``patch_reboot`` (ooha/rollout/hostplan.py) and the
    rollout keys it shares with patch.py (lock, health timeout, drain bound)."""
    from ooha.rollout.hostplan import patch_option_problems

    problems = check_rollout_job(hosts)
    for line in patch_option_problems(hosts[0].data if hosts else {}):
        field, rest = line.split(": ", 1)
        problem, _, fix = rest.rpartition("; fix: ")
        problems.append(Problem(ALL, field, problem or rest, fix or "see the README's day-2 section (host patching)"))
    return problems


def check_restore_files_job(hosts: Sequence[HostSpec], backup_groups: Iterable[str] = ("docs", "lb")) -> list[Problem]:
    """deploys/restore_files.py: restore_host, restore_snapshot and restore_paths (from --data)."""
    import re

    groups = tuple(backup_groups)
    candidates = [s.name for s in hosts if any(g in s.groups for g in groups)]
    data = hosts[0].data if hosts else {}
    problems = []
    target = str(data.get("restore_host") or "")
    if target not in candidates:
        problems.append(
            Problem(ALL, "restore_host", f"{target or 'missing'} is not a host with file backups",
                    f"--data restore_host=<one of {', '.join(candidates)}>")
        )
    snapshot = str(data.get("restore_snapshot") or "latest")
    if not re.fullmatch(r"latest|[0-9a-f]{8,64}", snapshot):
        problems.append(
            Problem(ALL, "restore_snapshot", f"{snapshot!r} is not 'latest' or a snapshot ID",
                    "list them with `sudo ooha-filebackup restic snapshots` on the host")
        )
    for path in [p.strip() for p in str(data.get("restore_paths") or "").split(",") if p.strip()]:
        if not re.fullmatch(r"/[A-Za-z0-9_./-]+", path):
            problems.append(Problem(ALL, "restore_paths", f"{path!r} is not an absolute path", "e.g. /etc/onlyoffice-ha"))
    return problems


def _split_line(line: str) -> tuple[str, str]:
    """(host, field) of a layer's "host: field: problem; fix: ..." line."""
    parts = line.split(": ", 2)
    return (parts[0], parts[1]) if len(parts) == 3 else ("", line)


def merge_problem_lines(
    problems: Sequence[Problem], layer_lines: Iterable[str], host_names: Sequence[str] = ()
) -> list[str]:
    """One line per problem: inventory problems first (as the rules wrote them), then the layers'.

    A layer line on a (host, field) already reported by an inventory rule is left out;
    a ``secrets.*`` field is reported once whatever the layer; identical lines once; the
    same layer problem on several hosts (a global setting) becomes one line naming the
    hosts, or ``all`` when that is every host in ``host_names``.
    """
    taken = {(p.host, p.field) for p in problems}
    secret_fields = {p.field for p in problems if p.field.startswith("secrets.")}
    kept: list[str] = []
    for line in layer_lines:
        host_name, field_name = _split_line(line)
        if (host_name, field_name) in taken or (ALL, field_name) in taken:
            continue
        if field_name.startswith("secrets."):
            if field_name in secret_fields:
                continue
            secret_fields.add(field_name)
        kept.append(line)
    by_rest: dict[str, list[str]] = {}
    for line in kept:
        host_name, _ = _split_line(line)
        rest = line[len(host_name) + 2:] if host_name else line
        owners = by_rest.setdefault(rest, [])
        if host_name not in owners:
            owners.append(host_name)
    lines = [p.line() for p in problems]
    for rest, owners in by_rest.items():
        if owners == [""]:
            lines.append(rest)
            continue
        if ALL in owners or (host_names and set(owners) >= set(host_names)):
            owners = [ALL]
        lines.append(f"{', '.join(owners)}: {rest}")
    return lines


def layer_input_lines(inventory: Any, layers: Iterable[Any]) -> list[str]:
    """Every selected layer's input rules on every host of its groups (data only, no facts)."""
    from pyinfra.context import ctx_host

    lines: list[str] = []
    for layer in layers:
        rules = layer.input_rules()
        if rules is None:
            continue
        for target in inventory:
            if not layer.applies(target):
                continue
            try:
                with ctx_host.use(target):
                    lines += list(rules(target))
            except Exception as exc:  # a rule that blows up on odd data is a problem, not a traceback
                lines.append(
                    f"{target.name}: {layer.name}: the layer's input rules failed on this data "
                    f"({type(exc).__name__}); fix: check the {layer.name} layer's keys"
                )
    return lines


JOB_LAYERS: dict[str, tuple[str, ...] | None] = {
    "ha.py": None,
    "validate.py": None,
    "backup.py": ("backup",),
    "restore.py": ("postgres", "backup"),
    "restore_files.py": ("filebackup",),
    "rebuild_site.py": None,
    "patch.py": ("documentserver",),
    "rollback.py": ("documentserver",),
    "scale.py": ("documentserver", "loadbalancer"),
    "patch_hosts.py": (),
}
"""Operator commands (deploys/) and the layers whose inputs they read (None: ``--data layers=``)."""


def jobs_in(argv: Sequence[str]) -> list[str]:
    """The operator commands named on pyinfra's command line (file names of deploys/)."""
    import os

    return [os.path.basename(arg) for arg in argv[1:] if arg.endswith(".py") and os.path.basename(arg) in JOB_LAYERS]


def preflight_lines(inventory: Any, jobs: Sequence[str], now: Any = None) -> list[str]:
    """Every problem with the loaded inventory (--data and group_data included) for ``jobs``."""
    import datetime as dt

    from ooha.stack import LAYERS, layer_named, selected_layers

    hosts = hosts_from_pyinfra(inventory)
    if not hosts:
        return [Problem(ALL, "hosts", "the inventory has no hosts", "add hosts to the groups").line()]
    secrets = hosts[0].data.get("secrets")
    problems = collect_problems(hosts, secrets)
    problems += check_secret_lines(secrets)
    problems += check_controller_files(hosts)
    layer_rows: list[Any] = []
    unknown = any(p.field == "layers" for p in problems)
    for job in jobs:
        wanted = JOB_LAYERS[job]
        if wanted is None:
            rows = LAYERS if unknown else selected_layers(hosts[0].data.get("layers"))
        else:
            rows = [layer_named(name) for name in wanted]
        layer_rows += [row for row in rows if row not in layer_rows]
        if job == "backup.py":
            problems += check_backup_job(hosts)
        if job == "restore_files.py":
            problems += check_restore_files_job(hosts, layer_named("filebackup").groups or ())
        if job in ("patch.py", "rollback.py"):
            problems += check_rollout_job(hosts)
        if job == "scale.py":
            problems += check_scale_job(hosts)
        if job == "patch_hosts.py":
            problems += check_patch_hosts_job(hosts)
    layer_rows = [row for row in LAYERS if row in layer_rows]
    lines = layer_input_lines(inventory, layer_rows)
    if any(p.field.startswith("group ") and p.problem == "missing or empty" for p in problems):
        # Layers that list a missing group's members fail on it: the group's line says it all.
        lines = [line for line in lines if "input rules failed" not in line]
    if "restore.py" in jobs or "rebuild_site.py" in jobs:
        from ooha.pgrestore import input_problems as restore_problems

        now = now or dt.datetime.now(dt.timezone.utc)
        members = [t.name for t in inventory.get_group("postgres")] if "postgres" in inventory.groups else []
        for target in inventory:
            if "postgres" in target.groups:
                lines += restore_problems(target, now, members)
    return merge_problem_lines(problems, lines, [spec.name for spec in hosts])


def run_preflight(inventory: Any, argv: Sequence[str], source: str = "inventory") -> None:
    """Print every problem, one line each, and exit 1; with $OOHA_PREFLIGHT_ONLY=1, exit 0 after."""
    import os
    import sys

    import click

    jobs = jobs_in(argv)
    lines = preflight_lines(inventory, jobs)
    if lines:
        # Printed here and ended with SystemExit: raised as a PyinfraError, the CLI would
        # prefix the message with this file's name and line number.
        click.echo(f"--> preflight: {source} is invalid ({len(lines)} problem(s)); "
                   "no host was contacted, nothing was changed:", err=True)
        for line in lines:
            click.echo(f"    - {line}", err=True)
        sys.exit(1)
    if os.environ.get(PREFLIGHT_ONLY_ENV) == "1":
        click.echo(f"preflight: OK ({len(list(inventory))} hosts, {', '.join(jobs) or 'inventory only'}); "
                   f"stopping before any connection (${PREFLIGHT_ONLY_ENV}=1)", err=True)
        sys.exit(0)


def install_cli_hook(argv: Sequence[str] | None = None) -> bool:
    """Run the full preflight inside pyinfra's ``state.init``, before it connects (see above).

    Call from config.py.  Returns False (and does nothing) outside the pyinfra CLI.
    """
    import sys

    from pyinfra.context import ctx_state

    if not ctx_state.isset():
        return False
    state = ctx_state.get()
    if getattr(state, "_ooha_preflight", False):
        return True
    real_init = state.init
    args = list(sys.argv if argv is None else argv)
    jobs = set(jobs_in(args))
    source = next((a for a in args[1:] if a.endswith(".py") and a.rsplit("/", 1)[-1] not in jobs), "inventory")

    def init(inventory: Any, config: Any, *rest: Any, **kwargs: Any) -> Any:
        if "debug-inventory" not in args:  # a tool to look at a broken inventory
            run_preflight(inventory, args, source)
        return real_init(inventory, config, *rest, **kwargs)

    state.init = init
    state._ooha_preflight = True
    _HOOK_INSTALLED[0] = True
    return True
