"""Monitoring layer (issue 13): two Prometheus servers and an Alertmanager cluster, from the inventory.

Group ``monitoring``: two hosts in two AZs.  Each runs Debian 12's ``prometheus`` (2.42),
``prometheus-alertmanager`` (0.25) and ``prometheus-blackbox-exporter`` (0.23), and each
Prometheus scrapes EVERY target on its own, so losing one AZ loses no metric and no alert.

What is rendered (pure functions, unit-tested with the real ``promtool``/``amtool``):

* ``prometheus.yml`` per replica (``prometheus_vars``): ``external_labels`` ``cluster`` and
  ``replica`` (the host) tell the two replicas' series apart; ``alert_relabel_configs`` drop
  ``replica`` before alerts leave, so both replicas send the SAME alert to both Alertmanagers
  and the Alertmanager cluster (gossip on ``monitoring_alertmanager_cluster_port``) sends each
  notification once.  Scrape targets come from ``file_sd/<job>.json`` files (``scrape_jobs``),
  one per job, generated from the inventory's hosts and groups: a host added to a group is
  scraped after the next run, with no change to prometheus.yml.  Paths inside prometheus.yml
  are relative (``rules/``, ``file_sd/``): Prometheus resolves them against the file's own
  directory, so a candidate tree is checked by ``promtool check config`` exactly as it will run.
* the blackbox probes: each DS node's ``/healthcheck`` must answer 200 with body ``true``
  (module ``ds_healthcheck``), the front door (``https://<VIP>/healthcheck``, TLS verified
  against ``monitoring_probe_ca_file``) from each replica's AZ (label ``probe_az``), whose
  ``probe_ssl_earliest_cert_expiry`` drives the certificate alerts.
* ``rules/ooha.yml`` (templates/monitoring/ooha-rules.yml.j2, thresholds from this layer's keys):
  three levels, ``severity`` = ``warning`` | ``critical`` | ``page``, plus ``Watchdog`` (always
  firing, ``severity=none``: a dead-man's switch for the whole path).
* ``alertmanager.yml`` (``alertmanager_vars``): routes per severity to configurable receivers
  (webhook or e-mail), inhibit rules (DS alerts are muted while the data tier's own outage
  alert fires), and ``/etc/default/prometheus-alertmanager`` with the cluster flags (peers are
  command-line flags in 0.25, not config).
* ``ooha-nginx.mtail``: the LBs' nginx access log (``log_format ooha`` of the loadbalancer
  layer) as ``ooha_nginx_requests_total{upstream,status}``, ``ooha_nginx_retried_requests_total``
  and the ``ooha_nginx_upstream_seconds`` histogram (``upstream`` = the address that answered
  last); tested with ``mtail --one_shot`` on sample lines.

Metric names this layer's rules rely on that are NOT an exporter's own (the writers are left
to wire; docs/architecture.md "Monitoring"): the node exporter's textfile collector files
``ooha_keepalived_vip_held`` (1 on the LB holding the VIP, else 0),
``ooha_backup_last_success_timestamp_seconds{tool="pgbackrest"|"restic"}``,
``ooha_rabbitmq_partitions`` (``rabbitmq-diagnostics`` partitions count), and the DS node
states ``ooha_ds_node_state{node,state}`` + ``ooha_ds_node_state_written_timestamp_seconds``
(``ds_node_state_textfile``: what mutes DSNodeUnhealthy for a node the rollout or scale driver
is draining or took out; the writer, a timer on the ``redis`` hosts reading the LBs' hash
``ooha:nodestate``, is a later wiring step).

Probe alerts carry no ``probe_az`` (the rules aggregate it away): each replica probes through its
own blackbox exporter, and with the label the two replicas' copies of one fault would be two
alerts, two notifications.  The AZs whose probe fails are in the ``probed_from`` annotation.

What the deploy will write, each as a checked candidate (``validated_config``):
``prometheus_files`` (+ ``PROMETHEUS_CHECK``), ``alertmanager_files`` (+ ``ALERTMANAGER_CHECK``),
``blackbox_files`` (+ ``BLACKBOX_CHECK``); the gate runs each check on these candidates.

Not in ooha/stack.py yet, and no ``@deploy``/``check_monitoring`` yet: the exporters on the other
hosts, the etcd metrics listener and the HAProxy exporter frontend (other layers' files) and the
lab's monitoring group come first (docs/architecture.md "Monitoring", "Left to wire").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ooha.contract import CONTRACT_DEFAULTS, contract_defaults, peer_address
from ooha.rollout import drain
from ooha.ops.candidate import ConfigFile
from ooha.settings import Settings
from ooha.templating import JINJA, TEMPLATES

GROUP = "monitoring"
PROMETHEUS_DIR = "/etc/prometheus"
CANDIDATE_DIR = "/etc/prometheus/ooha-candidate"
"""The whole tree (prometheus.yml, rules/, file_sd/) is written and checked here first."""
RULES_FILE = "rules/ooha.yml"
MTAIL_PROGRAM = "/etc/mtail/ooha-nginx.mtail"
"""On each LB (Debian's mtail reads /etc/mtail/*.mtail)."""
FILE_SD_DIR = "file_sd"
ALERTMANAGER_CONF = "/etc/prometheus/alertmanager.yml"
ALERTMANAGER_DEFAULT = "/etc/default/prometheus-alertmanager"
PROMETHEUS_DEFAULT = "/etc/default/prometheus"
BLACKBOX_CONF = "/etc/prometheus/blackbox.yml"

RULES_JINJA = {"trim_blocks": True, "lstrip_blocks": True,
               "variable_start_string": "[[", "variable_end_string": "]]"}
"""The rules template keeps Prometheus' own ``{{ $labels.x }}``: its Jinja variables are ``[[ x ]]``."""

MONITORING_DEFAULTS: dict[str, Any] = {
    # Packages on the monitoring hosts (Debian 12: Prometheus 2.42 with promtool, Alertmanager
    # 0.25 with amtool, blackbox exporter 0.23).
    "monitoring_packages": ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"],
    # Names this deployment in every alert (external label ``cluster``).
    "monitoring_cluster_name": "onlyoffice-ha",
    # How long Prometheus keeps samples (its --storage.tsdb.retention.time).
    "monitoring_retention": "15d",
    # Scrape and rule evaluation interval: with 15 s and the rules' `for:` every fault is
    # seen within ~60 s (two failed scrapes plus `for`).
    "monitoring_scrape_interval": "15s",
    "monitoring_evaluation_interval": "15s",
    "monitoring_scrape_timeout": "10s",
    # Ports on the monitoring hosts.
    "monitoring_prometheus_port": 9090,
    "monitoring_alertmanager_port": 9093,
    "monitoring_alertmanager_cluster_port": 9094,
    "monitoring_blackbox_port": 9115,
    # Exporter ports on the other hosts (Debian packages' defaults, except the second
    # redis_exporter instance pointed at the local Sentinel, and the HAProxy exporter
    # frontend the endpoints layer must add: `http-request use-service prometheus-exporter`).
    "monitoring_node_exporter_port": 9100,
    "monitoring_postgres_exporter_port": 9187,
    "monitoring_redis_exporter_port": 9121,
    "monitoring_sentinel_exporter_port": 9122,
    "monitoring_rabbitmq_prometheus_port": 15692,
    "monitoring_haproxy_metrics_port": 8405,
    "monitoring_mtail_port": 3903,
    # etcd's plain-HTTP metrics listener (ETCD_LISTEN_METRICS_URLS; clients stay on TLS).
    "monitoring_etcd_metrics_port": 2381,
    # The front door the probes fetch; None: https://<lb_vip address>/healthcheck.
    "monitoring_front_door_url": None,
    # CA bundle ON THE MONITORING HOSTS that verifies the front door's certificate; None: the
    # system's trust store.
    "monitoring_probe_ca_file": None,
    # Receivers: where each level goes, "webhook" or "email".
    "monitoring_receiver_page": "webhook",
    "monitoring_receiver_critical": "webhook",
    "monitoring_receiver_warning": "webhook",
    # The webhook every "webhook" level posts to (required when one uses it); the lab's
    # recorder on the services host.  The Watchdog goes to monitoring_watchdog_url (None: here).
    "monitoring_webhook_url": None,
    "monitoring_watchdog_url": None,
    # E-mail (required when a level uses "email"): smarthost host:port, from and to.
    "monitoring_email_to": None,
    "monitoring_email_from": None,
    "monitoring_smtp_smarthost": None,
    # Re-send a still-firing alert after this long (per level).
    "monitoring_repeat_page": "1h",
    "monitoring_repeat_critical": "4h",
    "monitoring_repeat_warning": "24h",
    # --- thresholds of the alert rules ---
    # Share of requests answered 5xx per upstream at the LBs (over 5 min / 2 min).
    "monitoring_5xx_ratio_warning": 0.01,
    "monitoring_5xx_ratio_critical": 0.05,
    # 502 responses per second over all LBs that count as a surge.
    "monitoring_502_per_second": 1.0,
    # 95th percentile of upstream response time (s) at the LBs.
    "monitoring_latency_p95_seconds": 2.0,
    # Replica lag behind the leader's WAL position (bytes): warning / critical.
    "monitoring_replication_lag_warning_bytes": 16 * 1024 * 1024,
    "monitoring_replication_lag_critical_bytes": 256 * 1024 * 1024,
    # Newest successful backup older than this (hours): pgBackRest, restic.
    "monitoring_pgbackrest_max_age_hours": 26,
    "monitoring_restic_max_age_hours": 26,
    # Certificate days left: warning / critical.
    "monitoring_cert_warning_days": 21,
    "monitoring_cert_critical_days": 7,
    # Free share of a filesystem: warning / critical.
    "monitoring_disk_free_warning": 0.20,
    "monitoring_disk_free_critical": 0.10,
    # Available share of memory (warning).
    "monitoring_memory_available_warning": 0.10,
    # Read by this layer, owned by others (defaults in ooha/contract.py).
    **contract_defaults("patroni_rest_port", "ds_http_port", "redis_master_name"),
}

setting = Settings(MONITORING_DEFAULTS, CONTRACT_DEFAULTS)
"""A data key with this layer's default (the report and tests run outside the deploy)."""

RECEIVER_KINDS = ("webhook", "email")
LEVELS = ("page", "critical", "warning")
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
_PORT_KEYS = tuple(key for key in MONITORING_DEFAULTS if key.endswith("_port") and key.startswith("monitoring_"))
_RATIO_KEYS = ("monitoring_5xx_ratio_warning", "monitoring_5xx_ratio_critical", "monitoring_disk_free_warning",
               "monitoring_disk_free_critical", "monitoring_memory_available_warning")
_POSITIVE_KEYS = ("monitoring_502_per_second", "monitoring_latency_p95_seconds",
                  "monitoring_replication_lag_warning_bytes", "monitoring_replication_lag_critical_bytes",
                  "monitoring_pgbackrest_max_age_hours", "monitoring_restic_max_age_hours",
                  "monitoring_cert_warning_days", "monitoring_cert_critical_days")
_DURATION_KEYS = ("monitoring_retention", "monitoring_scrape_interval", "monitoring_evaluation_interval",
                  "monitoring_scrape_timeout", "monitoring_repeat_page", "monitoring_repeat_critical",
                  "monitoring_repeat_warning")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")


# --- the inventory as monitoring sees it ------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One inventory host: name, AZ, groups and the address the monitoring hosts scrape."""

    name: str
    az: str
    groups: tuple[str, ...]
    address: str


def members_of(hosts: Any) -> list[Member]:
    """``Member`` per pyinfra host (or fake with ``name``, ``groups``, ``data``), in the given order."""
    return [Member(name=str(target.name), az=str(target.data.get("az") or ""),
                   groups=tuple(str(g) for g in (target.groups or ())), address=peer_address(target))
            for target in hosts]


def inventory_members() -> list[Member]:
    """Every host of the pyinfra inventory (--limit notwithstanding), inventory order."""
    from pyinfra import inventory

    return members_of(iter(inventory))


def _in(members: list[Member], *groups: str) -> list[Member]:
    return [m for m in members if any(g in m.groups for g in groups)]


def _host_port(address: str, port: int) -> str:
    """``address:port`` with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]:{port}"
    except ValueError:
        pass
    return f"{address}:{port}"


def _targets(members: list[Member], port: int, **labels: str) -> list[dict[str, Any]]:
    """One file_sd entry per member: its address:port and labels ``host``, ``az``."""
    return [{"targets": [_host_port(m.address, port)], "labels": {"host": m.name, "az": m.az, **labels}}
            for m in members]


def front_door_url(target: Any) -> str | None:
    """``monitoring_front_door_url``, else ``https://<lb_vip address>/healthcheck`` (None: no VIP)."""
    url = setting(target, "monitoring_front_door_url")
    if url:
        return str(url)
    vip = target.data.get("lb_vip")
    if not vip:
        return None
    return f"https://{_host_port(str(ipaddress.ip_interface(str(vip)).ip), 443).rsplit(':', 1)[0]}/healthcheck"


def scrape_jobs(target: Any, members: list[Member]) -> dict[str, list[dict[str, Any]]]:
    """The file_sd content of every job: ``{job: [{"targets": [...], "labels": {...}}]}``.

    Which hosts each job scrapes follows the groups: node exporter on every host; PostgreSQL
    exporter and Patroni on ``postgres``; etcd on ``etcd``; Redis and Sentinel on ``redis``;
    RabbitMQ on ``rabbitmq``; HAProxy on ``docs`` and ``lb`` (the client-side endpoints); mtail
    on ``lb``; Prometheus, Alertmanager and blackbox on ``monitoring``.  Probe jobs list URLs:
    each DS node's /healthcheck and the front door.  A job whose group is empty is left out.
    """
    def port(key: str) -> int:
        return int(setting(target, key))

    jobs: dict[str, list[dict[str, Any]]] = {
        "node": _targets(members, port("monitoring_node_exporter_port")),
        "postgres": _targets(_in(members, "postgres"), port("monitoring_postgres_exporter_port")),
        "patroni": _targets(_in(members, "postgres"), port("patroni_rest_port")),
        "etcd": _targets(_in(members, "etcd"), port("monitoring_etcd_metrics_port")),
        "redis": _targets(_in(members, "redis"), port("monitoring_redis_exporter_port")),
        "sentinel": _targets(_in(members, "redis"), port("monitoring_sentinel_exporter_port")),
        "rabbitmq": _targets(_in(members, "rabbitmq"), port("monitoring_rabbitmq_prometheus_port")),
        "haproxy": _targets(_in(members, "docs", "lb"), port("monitoring_haproxy_metrics_port")),
        "mtail": _targets(_in(members, "lb"), port("monitoring_mtail_port")),
        "prometheus": _targets(_in(members, GROUP), port("monitoring_prometheus_port")),
        "alertmanager": _targets(_in(members, GROUP), port("monitoring_alertmanager_port")),
        "blackbox": _targets(_in(members, GROUP), port("monitoring_blackbox_port")),
        "probe_ds_health": [
            {"targets": [f"http://{_host_port(m.address, port('ds_http_port'))}/healthcheck"],
             "labels": {"host": m.name, "az": m.az, "node": m.name}}
            for m in _in(members, "docs")
        ],
    }
    url = front_door_url(target)
    if url:
        jobs["probe_front_door"] = [{"targets": [url], "labels": {"host": "front-door", "az": "all"}}]
    return {job: entries for job, entries in jobs.items() if entries}


DS_NODE_STATE_TEXTFILE = "ooha_ds_node_state.prom"
"""The node exporter textfile (in its textfile directory) the node-state writer replaces (tmp + mv)."""
DS_NODE_STATE_MAX_AGE_SECONDS = 600
"""DSNodeUnhealthy honours a writer's states only this long after its last write (the rules
template's literal 600): a writer that stopped never mutes a node for good."""


def ds_node_state_textfile(raw: dict[str, str], nodes: list[str], now: float) -> str:
    """The textfile a writer on a ``redis`` host renders from HGETALL of ``lb_node_state_key``.

    One ``ooha_ds_node_state{node,state}`` per node and state, 1 for the node's current state
    (read as the LBs read it: absent or unknown = active, so a stray value never mutes an
    alert), and ``ooha_ds_node_state_written_timestamp_seconds`` = ``now``.  The rule
    DSNodeUnhealthy stays silent for a ``draining`` or ``out`` node (a rollout wave replacing it,
    deploys/scale.py retiring it) and fires for an ``active`` one.
    """
    lines = ["# HELP ooha_ds_node_state 1 for the Document Server node's current state in the LBs' hash.",
             "# TYPE ooha_ds_node_state gauge"]
    for node, state in drain.parse_states(raw, nodes).items():
        lines += [f'ooha_ds_node_state{{node="{node}",state="{s}"}} {int(s == state)}' for s in drain.STATES]
    lines += ["# HELP ooha_ds_node_state_written_timestamp_seconds When the node states were last written.",
              "# TYPE ooha_ds_node_state_written_timestamp_seconds gauge",
              f"ooha_ds_node_state_written_timestamp_seconds {now:.0f}"]
    return "\n".join(lines) + "\n"


PROBE_MODULES = {"probe_ds_health": "ds_healthcheck", "probe_front_door": "front_door"}
"""Blackbox module of each probe job (templates/monitoring/blackbox.yml.j2)."""


def prometheus_vars(target: Any, members: list[Member]) -> dict[str, Any]:
    """Variables of templates/monitoring/prometheus.yml.j2 for the replica on ``target``."""
    monitors = _in(members, GROUP)
    me = next((m for m in monitors if m.name == target.name), None)
    jobs = scrape_jobs(target, members)
    return {
        "cluster": setting(target, "monitoring_cluster_name"),
        "replica": target.name,
        "az": me.az if me else str(target.data.get("az") or ""),
        "scrape_interval": setting(target, "monitoring_scrape_interval"),
        "scrape_timeout": setting(target, "monitoring_scrape_timeout"),
        "evaluation_interval": setting(target, "monitoring_evaluation_interval"),
        "alertmanagers": [_host_port(m.address, int(setting(target, "monitoring_alertmanager_port"))) for m in monitors],
        # Each replica probes through its OWN blackbox exporter: the probe is "from its AZ".
        "blackbox": _host_port(me.address if me else "127.0.0.1", int(setting(target, "monitoring_blackbox_port"))),
        "rules_file": RULES_FILE,
        "jobs": [{"name": job, "file": f"{FILE_SD_DIR}/{job}.json", "module": PROBE_MODULES.get(job)}
                 for job in jobs],
    }


_RULE_VARIABLE = {"5xx_ratio_warning": "ratio_5xx_warning", "5xx_ratio_critical": "ratio_5xx_critical",
                  "502_per_second": "rate_502_per_second"}
"""Jinja names cannot start with a digit: these keys are renamed in the rules template."""


def _rule_variable(key: str) -> str:
    name = key.removeprefix("monitoring_")
    return _RULE_VARIABLE.get(name, name)


def rules_vars(target: Any) -> dict[str, Any]:
    """Variables of templates/monitoring/ooha-rules.yml.j2: the thresholds."""
    keys = ("monitoring_5xx_ratio_warning", "monitoring_5xx_ratio_critical", "monitoring_502_per_second",
            "monitoring_latency_p95_seconds", "monitoring_replication_lag_warning_bytes",
            "monitoring_replication_lag_critical_bytes", "monitoring_cert_warning_days",
            "monitoring_cert_critical_days", "monitoring_disk_free_warning", "monitoring_disk_free_critical",
            "monitoring_memory_available_warning", "redis_master_name")
    variables = {_rule_variable(key): setting(target, key) for key in keys}
    variables["pgbackrest_max_age_seconds"] = int(float(setting(target, "monitoring_pgbackrest_max_age_hours")) * 3600)
    variables["restic_max_age_seconds"] = int(float(setting(target, "monitoring_restic_max_age_hours")) * 3600)
    return variables


def alertmanager_vars(target: Any) -> dict[str, Any]:
    """Variables of templates/monitoring/alertmanager.yml.j2: one receiver per level."""
    webhook = setting(target, "monitoring_webhook_url")
    return {
        "levels": [{"severity": level, "kind": setting(target, f"monitoring_receiver_{level}"),
                    "repeat": setting(target, f"monitoring_repeat_{level}")} for level in LEVELS],
        "webhook_url": webhook,
        "watchdog_url": setting(target, "monitoring_watchdog_url") or webhook,
        "email_to": setting(target, "monitoring_email_to"),
        "email_from": setting(target, "monitoring_email_from"),
        "smtp_smarthost": setting(target, "monitoring_smtp_smarthost"),
    }


def alertmanager_args(target: Any, members: list[Member]) -> str:
    """ARGS of /etc/default/prometheus-alertmanager: listen on the peer address, gossip with the others."""
    me = next((m for m in members if m.name == target.name), None)
    address = me.address if me else peer_address(target)
    web, cluster = int(setting(target, "monitoring_alertmanager_port")), int(setting(target, "monitoring_alertmanager_cluster_port"))
    args = [f"--web.listen-address={_host_port(address, web)}",
            f"--cluster.listen-address={_host_port(address, cluster)}",
            f"--cluster.advertise-address={_host_port(address, cluster)}"]
    args += [f"--cluster.peer={_host_port(m.address, cluster)}" for m in _in(members, GROUP) if m.name != target.name]
    return " ".join(args)


def prometheus_args(target: Any, members: list[Member]) -> str:
    """ARGS of /etc/default/prometheus: listen on the peer address, the retention."""
    me = next((m for m in members if m.name == target.name), None)
    address = me.address if me else peer_address(target)
    return " ".join([f"--web.listen-address={_host_port(address, int(setting(target, 'monitoring_prometheus_port')))}",
                     f"--storage.tsdb.retention.time={setting(target, 'monitoring_retention')}"])


def blackbox_vars(target: Any) -> dict[str, Any]:
    """Variables of templates/monitoring/blackbox.yml.j2."""
    return {"ca_file": setting(target, "monitoring_probe_ca_file")}


# --- inputs ------------------------------------------------------------------------------------


def _url_problem(value: Any) -> bool:
    parsed = urlparse(str(value))
    return parsed.scheme not in ("http", "https") or not parsed.netloc


def input_problems(target: Any) -> list[str]:
    """Everything wrong with this layer's inputs, one line each: host, field, fix (data only, no facts)."""
    name = target.name
    problems: list[str] = []
    for key in _DURATION_KEYS:
        value = setting(target, key)
        if not isinstance(value, str) or not _DURATION.match(value):
            problems.append(f"{name}: {key}: {value!r} is not a Prometheus duration; fix: e.g. {setting.default(key)!r}")
    for key in _PORT_KEYS + ("patroni_rest_port", "ds_http_port"):
        value = setting(target, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            problems.append(f"{name}: {key}: {value!r}; fix: a TCP port 1-65535, e.g. {setting.default(key)}")
    for key in _RATIO_KEYS:
        value = setting(target, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            problems.append(f"{name}: {key}: {value!r}; fix: a share between 0 and 1, e.g. {setting.default(key)}")
    for key in _POSITIVE_KEYS:
        value = setting(target, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            problems.append(f"{name}: {key}: {value!r}; fix: a positive number, e.g. {setting.default(key)}")
    pairs = (("monitoring_5xx_ratio_warning", "monitoring_5xx_ratio_critical", "below"),
             ("monitoring_replication_lag_warning_bytes", "monitoring_replication_lag_critical_bytes", "below"),
             ("monitoring_cert_warning_days", "monitoring_cert_critical_days", "above"),
             ("monitoring_disk_free_warning", "monitoring_disk_free_critical", "above"))
    for warning, critical, relation in pairs:
        w, c = setting(target, warning), setting(target, critical)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (w, c)):
            if (relation == "below" and not w < c) or (relation == "above" and not w > c):
                problems.append(f"{name}: {warning}: {w!r} must be {relation} {critical} ({c!r}); "
                                f"fix: make the warning fire before the critical one")
    cluster = setting(target, "monitoring_cluster_name")
    if not isinstance(cluster, str) or not _LABEL_VALUE.match(cluster):
        problems.append(f"{name}: monitoring_cluster_name: {cluster!r}; fix: letters, digits and _.:- only, e.g. \"onlyoffice-ha\"")
    kinds = set()
    for level in LEVELS:
        key = f"monitoring_receiver_{level}"
        kind = setting(target, key)
        if kind not in RECEIVER_KINDS:
            problems.append(f"{name}: {key}: {kind!r}; fix: one of {', '.join(RECEIVER_KINDS)}")
        kinds.add(kind)
    webhook = setting(target, "monitoring_webhook_url")
    if "webhook" in kinds and not webhook:
        problems.append(f"{name}: monitoring_webhook_url: missing; fix: the URL the alerts are posted to "
                        "(e.g. your paging bridge), or send every level by email")
    for key in ("monitoring_webhook_url", "monitoring_watchdog_url", "monitoring_front_door_url"):
        value = setting(target, key)
        if value and _url_problem(value):
            problems.append(f"{name}: {key}: {value!r} is not an http(s) URL; fix: e.g. \"https://hooks.example.net/alerts\"")
    if "email" in kinds:
        for key, example in (("monitoring_email_to", "oncall@example.net"), ("monitoring_email_from", "alerts@example.net"),
                             ("monitoring_smtp_smarthost", "smtp.example.net:587")):
            if not setting(target, key):
                problems.append(f"{name}: {key}: missing (a level is sent by email); fix: e.g. \"{example}\"")
        smarthost = setting(target, "monitoring_smtp_smarthost")
        if smarthost and not re.match(r"^[^\s:]+:[0-9]+$", str(smarthost)):
            problems.append(f"{name}: monitoring_smtp_smarthost: {smarthost!r}; fix: host:port, e.g. \"smtp.example.net:587\"")
    if not front_door_url(target):
        problems.append(f"{name}: monitoring_front_door_url: missing and no lb_vip to derive it from; "
                        "fix: set lb_vip or monitoring_front_door_url")
    ca = setting(target, "monitoring_probe_ca_file")
    if ca is not None and (not isinstance(ca, str) or not ca.startswith("/")):
        problems.append(f"{name}: monitoring_probe_ca_file: {ca!r}; fix: an absolute path on the monitoring hosts, or None")
    return problems


def group_problems(members: list[Member]) -> list[str]:
    """The monitoring group's shape: exactly two hosts, in two different AZs (one per AZ)."""
    monitors = _in(members, GROUP)
    if len(monitors) != 2:
        names = ", ".join(m.name for m in monitors) or "none"
        return [f"{GROUP}: hosts: {len(monitors)} ({names}); fix: put exactly two hosts in the monitoring group, "
                "in two AZs (two Prometheus replicas and a two-member Alertmanager cluster)"]
    if monitors[0].az == monitors[1].az:
        return [f"{monitors[1].name}: az: {monitors[1].az!r} is also {monitors[0].name}'s AZ; fix: put the two "
                "monitoring hosts in two AZs (losing one AZ must not lose alerting)"]
    return []


# --- the files the deploy writes, each checked as a candidate first (ooha/ops/candidate.py) ---------

PROMETHEUS_CHECK = "promtool check config {path}"
"""Checks prometheus.yml AND the rule files and file_sd files it names (relative paths)."""
ALERTMANAGER_CHECK = "amtool check-config {path}"
BLACKBOX_CHECK = "prometheus-blackbox-exporter --config.check --config.file={path}"


def prometheus_files(target: Any, members: list[Member]) -> list[ConfigFile]:
    """The Prometheus tree for ``validated_config(validate=PROMETHEUS_CHECK, service="prometheus.service")``:
    prometheus.yml first, then rules/ooha.yml and one file_sd/<job>.json per job, each written under
    CANDIDATE_DIR and checked there before it goes to PROMETHEUS_DIR (its relative paths resolve in
    either tree).  Debian's unit reloads Prometheus with SIGHUP: no restart.  The deploy must create
    the rules/ and file_sd/ directories in both trees first."""
    def tree_file(src: str, relative: str, data: dict[str, Any], jinja: dict[str, Any]) -> ConfigFile:
        return ConfigFile(src=str(TEMPLATES / "monitoring" / src), dest=f"{PROMETHEUS_DIR}/{relative}",
                          candidate=f"{CANDIDATE_DIR}/{relative}", mode="644", data=data, jinja_env_kwargs=jinja)

    files = [tree_file("prometheus.yml.j2", "prometheus.yml", prometheus_vars(target, members), dict(JINJA)),
             tree_file("ooha-rules.yml.j2", RULES_FILE, rules_vars(target), dict(RULES_JINJA))]
    files += [tree_file("file_sd.json.j2", f"{FILE_SD_DIR}/{job}.json", {"entries": entries}, dict(JINJA))
              for job, entries in scrape_jobs(target, members).items()]
    return files


def alertmanager_files(target: Any) -> list[ConfigFile]:
    """alertmanager.yml for ``validated_config(validate=ALERTMANAGER_CHECK,
    service="prometheus-alertmanager.service")``; private (a webhook URL may carry a token)."""
    return [ConfigFile(src=str(TEMPLATES / "monitoring/alertmanager.yml.j2"), dest=ALERTMANAGER_CONF,
                       candidate=f"{ALERTMANAGER_CONF}.candidate", group="prometheus", mode="640", private=True,
                       data=alertmanager_vars(target), jinja_env_kwargs=dict(JINJA))]


def blackbox_files(target: Any) -> list[ConfigFile]:
    """blackbox.yml (Debian's path) for ``validated_config(validate=BLACKBOX_CHECK,
    service="prometheus-blackbox-exporter.service")``."""
    return [ConfigFile(src=str(TEMPLATES / "monitoring/blackbox.yml.j2"), dest=BLACKBOX_CONF,
                       candidate=f"{BLACKBOX_CONF}.candidate", mode="644", data=blackbox_vars(target),
                       jinja_env_kwargs=dict(JINJA))]
