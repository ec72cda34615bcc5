"""Monitoring layer: the rendered Prometheus/Alertmanager/blackbox configs, alert rules and mtail
program, checked by the real tools (promtool 2.42, amtool 0.25, mtail 3.0, blackbox exporter 0.23
from Debian 12), the targets generated from the inventory, and the input rules.

The tools are REQUIRED here: `make gate` installs them (Makefile); a machine without them
fails these tests (a skipped check would let a broken rule through).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ooha.layers import monitoring as mon

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "monitoring"
RULE_TESTS = sorted((Path(__file__).resolve().parent / "monitoring").glob("*.test.yml"))
"""promtool unit tests of the rules; the backup-age ones apart (a 5-minute evaluation interval)."""
LEVELS = {"warning", "critical", "page"}
INSTALL = "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager mtail prometheus-blackbox-exporter (or `make gate`)"


def tool(name: str) -> str:
    """The tool's path; FAILS (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL}")
    return path


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=cwd)


def _target(name: str, groups: tuple[str, ...], az: str, address: str, **data: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, groups=groups, data={"az": az, "private_address": address, **data})


COMMON = {"lb_vip": "198.18.10.100/24", "monitoring_webhook_url": "http://198.18.20.10:9099/alerts",
          "monitoring_probe_ca_file": "/etc/ssl/certs/ooha-lab-ca.crt"}
DATA = ("postgres", "etcd", "redis", "rabbitmq")


def lab_like(**data: Any) -> list[SimpleNamespace]:
    """The lab's 8 hosts, with the LBs also in the monitoring group (the proposed lab placement)."""
    settings = {**COMMON, **data}
    return [
        _target("lb1", ("lb", "monitoring"), "az1", "198.18.1.11", **settings),
        _target("lb2", ("lb", "monitoring"), "az2", "198.18.2.11", **settings),
        *[_target(f"ds{i}", ("docs",), f"az{i}", f"198.18.{i}.21", **settings) for i in (1, 2, 3)],
        *[_target(f"data{i}", DATA, f"az{i}", f"198.18.{i}.31", **settings) for i in (1, 2, 3)],
    ]


def render(name: str, variables: dict[str, Any], rules: bool = False) -> str:
    kwargs = mon.RULES_JINJA if rules else {"trim_blocks": True, "lstrip_blocks": True}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, **kwargs)
    return env.from_string((TEMPLATES / name).read_text()).render(**variables)


def render_tree(directory: Path, hosts: list[SimpleNamespace], replica: str) -> Path:
    """The candidate tree the layer writes for ``replica``: prometheus.yml, rules/, file_sd/,
    alertmanager.yml, blackbox.yml.  Returns prometheus.yml's path."""
    target = next(h for h in hosts if h.name == replica)
    members = mon.members_of(hosts)
    (directory / "rules").mkdir(parents=True, exist_ok=True)
    (directory / mon.FILE_SD_DIR).mkdir(exist_ok=True)
    (directory / "prometheus.yml").write_text(render("prometheus.yml.j2", mon.prometheus_vars(target, members)))
    for job, entries in mon.scrape_jobs(target, members).items():
        (directory / mon.FILE_SD_DIR / f"{job}.json").write_text(render("file_sd.json.j2", {"entries": entries}))
    (directory / mon.RULES_FILE).write_text(render("ooha-rules.yml.j2", mon.rules_vars(target), rules=True))
    (directory / "alertmanager.yml").write_text(render("alertmanager.yml.j2", mon.alertmanager_vars(target)))
    (directory / "blackbox.yml").write_text(render("blackbox.yml.j2", mon.blackbox_vars(target)))
    return directory / "prometheus.yml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return render_tree(tmp_path, lab_like(), "lb1").parent


# --- the real tools ------------------------------------------------------------------------


@pytest.mark.parametrize("replica", ["lb1", "lb2"])
def test_promtool_accepts_each_replicas_config_rules_and_targets(tmp_path: Path, replica: str) -> None:
    config = render_tree(tmp_path, lab_like(), replica)
    result = run(tool("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rule files found" in result.stdout


def test_promtool_check_rules(tree: Path) -> None:
    result = run(tool("promtool"), "check", "rules", str(tree / mon.RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_every_alert_pass(tree: Path) -> None:
    for path in RULE_TESTS:
        shutil.copy(path, tree / path.name)
    result = run(tool("promtool"), "test", "rules", *(path.name for path in RULE_TESTS), cwd=tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_refuses_a_broken_rule_and_a_broken_target_file(tree: Path) -> None:
    """The gate the layer puts before "live" can fail: a bad expression, a malformed file_sd file."""
    rules = tree / mon.RULES_FILE
    broken = rules.read_text().replace("expr: vector(1)", "expr: vector(1) == == 0", 1)
    assert broken != rules.read_text()
    rules.write_text(broken)
    assert run(tool("promtool"), "check", "rules", str(rules)).returncode != 0
    assert run(tool("promtool"), "check", "config", str(tree / "prometheus.yml")).returncode != 0
    rules.write_text(render("ooha-rules.yml.j2", mon.rules_vars(lab_like()[0]), rules=True))
    (tree / mon.FILE_SD_DIR / "node.json").write_text('[{"targets": "198.18.1.11:9100"}]')
    result = run(tool("promtool"), "check", "config", str(tree / "prometheus.yml"))
    assert result.returncode != 0 and "node.json" in result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config_and_routes_each_level(tree: Path) -> None:
    config = str(tree / "alertmanager.yml")
    result = run(tool("amtool"), "check-config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    for labels, receiver in ((["severity=page", "alertname=PatroniNoLeader"], "page"),
                             (["severity=critical", "alertname=DSNodeUnhealthy"], "critical"),
                             (["severity=warning", "alertname=TargetDown"], "warning"),
                             (["severity=none", "alertname=Watchdog"], "watchdog")):
        routed = run(tool("amtool"), "config", "routes", "test", f"--config.file={config}", *labels)
        assert routed.returncode == 0 and routed.stdout.strip() == receiver, (labels, routed.stdout, routed.stderr)


def test_amtool_accepts_email_receivers(tmp_path: Path) -> None:
    target = lab_like(monitoring_receiver_warning="email", monitoring_email_to="oncall@example.net",
                      monitoring_email_from="alerts@example.net", monitoring_smtp_smarthost="smtp.example.net:587")[0]
    assert mon.input_problems(target) == []
    (tmp_path / "am.yml").write_text(render("alertmanager.yml.j2", mon.alertmanager_vars(target)))
    result = run(tool("amtool"), "check-config", str(tmp_path / "am.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = {r["name"]: r for r in yaml.safe_load((tmp_path / "am.yml").read_text())["receivers"]}
    assert receivers["warning"]["email_configs"][0]["to"] == "oncall@example.net"
    assert receivers["page"]["webhook_configs"][0]["url"] == COMMON["monitoring_webhook_url"]


# --- the rules and their unit tests ----------------------------------------------------------


def _rules(tree: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((tree / mon.RULES_FILE).read_text())["groups"] for rule in group["rules"]]


def test_every_alert_has_a_level_and_at_least_25_alerts(tree: Path) -> None:
    rules = _rules(tree)
    names = {rule["alert"] for rule in rules}
    assert len(names) >= 25, sorted(names)
    for rule in rules:
        expected = {"none"} if rule["alert"] == "Watchdog" else LEVELS
        assert rule["labels"]["severity"] in expected, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    assert {rule["labels"]["severity"] for rule in rules} == LEVELS | {"none"}


def test_every_alert_is_unit_tested_firing_and_silent(tree: Path) -> None:
    """Each alert has a promtool case where it fires and one where it stays silent (the
    Watchdog excepted: it always fires)."""
    fires: dict[str, bool] = defaultdict(bool)
    silent: dict[str, bool] = defaultdict(bool)
    cases = [case for path in RULE_TESTS for case in yaml.safe_load(path.read_text())["tests"]]
    assert len(RULE_TESTS) == 2
    for case in cases:
        for check in case["alert_rule_test"]:
            if check["exp_alerts"]:
                fires[check["alertname"]] = True
            else:
                silent[check["alertname"]] = True
    names = {rule["alert"] for rule in _rules(tree)}
    assert sorted(n for n in names if not fires[n]) == []
    assert sorted(n for n in names - {"Watchdog"} if not silent[n]) == []
    assert set(fires) <= names, "a unit test names an alert that does not exist"


def test_rules_take_their_thresholds_from_the_settings(tmp_path: Path) -> None:
    target = lab_like(monitoring_cert_warning_days=30, monitoring_pgbackrest_max_age_hours=2)[0]
    text = render("ooha-rules.yml.j2", mon.rules_vars(target), rules=True)
    assert "/ 86400 < 30" in text
    assert "> 7200" in text
    assert "{{ $labels.instance }}" in text  # Prometheus' own templating left intact


def test_ds_node_state_textfile_is_what_the_rule_reads(tree: Path) -> None:
    """The node-state textfile (writer wired later) passes `promtool check metrics`, marks the
    current state 1 (absent or unknown = active, as the LBs read the hash), and carries exactly
    the metric names and freshness bound DSNodeUnhealthy's guard uses."""
    text = mon.ds_node_state_textfile({"ds2": "draining", "ds3": "out", "ds4": "typo"}, ["ds1", "ds2", "ds3", "ds4"],
                                      1_700_000_000.4)
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    current = {key for key, value in samples.items() if value == "1" and key.startswith("ooha_ds_node_state{")}
    assert current == {'ooha_ds_node_state{node="ds1",state="active"}', 'ooha_ds_node_state{node="ds2",state="draining"}',
                       'ooha_ds_node_state{node="ds3",state="out"}', 'ooha_ds_node_state{node="ds4",state="active"}'}
    assert samples["ooha_ds_node_state_written_timestamp_seconds"] == "1700000000"
    (rule,) = [r for r in _rules(tree) if r["alert"] == "DSNodeUnhealthy"]
    assert 'ooha_ds_node_state{state=~"draining|out"} == 1' in rule["expr"]
    assert f"time() - ooha_ds_node_state_written_timestamp_seconds < {mon.DS_NODE_STATE_MAX_AGE_SECONDS}" in rule["expr"]


def test_probe_alerts_carry_no_probe_az_and_alertmanager_does_not_group_by_it(tree: Path) -> None:
    """Both replicas' copies of a probe alert must have equal labels (one alert in the cluster)."""
    for rule in _rules(tree):
        if "probe_" in rule["expr"] and rule["alert"] != "DSAllNodesUnhealthy":
            assert "min without (probe_az)" in rule["expr"], rule["alert"]
    route = yaml.safe_load((tree / "alertmanager.yml").read_text())["route"]
    assert "probe_az" not in route["group_by"]


# --- Prometheus config and targets -----------------------------------------------------------


def test_replicas_differ_only_by_their_identity_and_alerts_leave_without_it(tmp_path: Path) -> None:
    hosts = lab_like()
    one = yaml.safe_load(render_tree(tmp_path / "1", hosts, "lb1").read_text())
    two = yaml.safe_load(render_tree(tmp_path / "2", hosts, "lb2").read_text())
    assert one["global"]["external_labels"] == {"cluster": "onlyoffice-ha", "replica": "lb1"}
    assert two["global"]["external_labels"]["replica"] == "lb2"
    for config in (one, two):
        assert config["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "replica"}]
        assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["198.18.1.11:9093", "198.18.2.11:9093"]
    probes = {c["job_name"]: c for c in two["scrape_configs"] if c.get("metrics_path") == "/probe"}
    assert set(probes) == {"probe_ds_health", "probe_front_door"}
    relabel = probes["probe_front_door"]["relabel_configs"]
    assert {"target_label": "__address__", "replacement": "198.18.2.11:9115"} in relabel
    assert {"target_label": "probe_az", "replacement": "az2"} in relabel


def test_targets_follow_the_inventory_groups() -> None:
    hosts = lab_like()
    jobs = mon.scrape_jobs(hosts[0], mon.members_of(hosts))

    def addresses(job: str) -> list[str]:
        return [t for entry in jobs[job] for t in entry["targets"]]

    assert len(addresses("node")) == 8
    assert addresses("postgres") == [f"198.18.{i}.31:9187" for i in (1, 2, 3)]
    assert addresses("patroni") == [f"198.18.{i}.31:8008" for i in (1, 2, 3)]
    assert addresses("etcd") == [f"198.18.{i}.31:2381" for i in (1, 2, 3)]
    assert addresses("sentinel") == [f"198.18.{i}.31:9122" for i in (1, 2, 3)]
    assert addresses("rabbitmq") == [f"198.18.{i}.31:15692" for i in (1, 2, 3)]
    assert len(addresses("haproxy")) == 5  # DS hosts and LBs: the client-side endpoints
    assert addresses("mtail") == ["198.18.1.11:3903", "198.18.2.11:3903"]
    assert addresses("prometheus") == ["198.18.1.11:9090", "198.18.2.11:9090"]
    assert addresses("probe_ds_health") == [f"http://198.18.{i}.21:80/healthcheck" for i in (1, 2, 3)]
    assert addresses("probe_front_door") == ["https://198.18.10.100/healthcheck"]
    assert jobs["node"][2]["labels"] == {"host": "ds1", "az": "az1"}
    assert jobs["probe_ds_health"][1]["labels"]["node"] == "ds2"


def test_an_added_host_is_a_new_target_and_empty_groups_no_job() -> None:
    hosts = lab_like() + [_target("data4", ("redis",), "az1", "198.18.1.34", **COMMON)]
    jobs = mon.scrape_jobs(hosts[0], mon.members_of(hosts))
    assert "198.18.1.34:9121" in [t for entry in jobs["redis"] for t in entry["targets"]]
    only_lbs = lab_like()[:2]
    assert "postgres" not in mon.scrape_jobs(only_lbs[0], mon.members_of(only_lbs))


def test_blackbox_modules_demand_body_true_and_verify_tls(tmp_path: Path) -> None:
    config = yaml.safe_load(render("blackbox.yml.j2", mon.blackbox_vars(lab_like()[0])))["modules"]
    assert config["ds_healthcheck"]["http"]["fail_if_body_not_matches_regexp"] == ["^true\\s*$"]
    assert config["front_door"]["http"]["fail_if_not_ssl"] is True
    assert config["front_door"]["http"]["tls_config"] == {"ca_file": "/etc/ssl/certs/ooha-lab-ca.crt"}
    assert "tls_config" not in yaml.safe_load(render("blackbox.yml.j2", {"ca_file": None}))["modules"]["front_door"]["http"]


def test_daemon_arguments_peer_with_the_other_host_only() -> None:
    hosts = lab_like(monitoring_retention="30d")
    members = mon.members_of(hosts)
    args = mon.alertmanager_args(hosts[0], members)
    assert "--cluster.peer=198.18.2.11:9094" in args and "--cluster.peer=198.18.1.11" not in args
    assert "--web.listen-address=198.18.1.11:9093" in args
    assert mon.prometheus_args(hosts[1], members) == (
        "--web.listen-address=198.18.2.11:9090 --storage.tsdb.retention.time=30d")
    assert render("alertmanager.default.j2", {"args": args}).splitlines()[-1] == f'ARGS="{args}"'


# --- inputs ----------------------------------------------------------------------------------


def test_lab_like_inputs_and_group_are_valid() -> None:
    hosts = lab_like()
    assert [mon.input_problems(h) for h in hosts] == [[]] * len(hosts)
    assert mon.group_problems(mon.members_of(hosts)) == []


@pytest.mark.parametrize("field, value, expected", [
    ("monitoring_retention", "15 days", "monitoring_retention: '15 days' is not a Prometheus duration; fix: e.g. '15d'"),
    ("monitoring_scrape_interval", "0s", "monitoring_scrape_interval: '0s'"),
    ("monitoring_alertmanager_port", 70000, "monitoring_alertmanager_port: 70000; fix: a TCP port"),
    ("monitoring_disk_free_warning", 20, "monitoring_disk_free_warning: 20; fix: a share between 0 and 1"),
    ("monitoring_disk_free_critical", 0.5, "monitoring_disk_free_warning: 0.2 must be above monitoring_disk_free_critical"),
    ("monitoring_cert_critical_days", 30, "monitoring_cert_warning_days: 21 must be above monitoring_cert_critical_days"),
    ("monitoring_replication_lag_warning_bytes", -1, "monitoring_replication_lag_warning_bytes: -1; fix: a positive number"),
    ("monitoring_receiver_page", "sms", "monitoring_receiver_page: 'sms'; fix: one of webhook, email"),
    ("monitoring_webhook_url", None, "monitoring_webhook_url: missing; fix:"),
    ("monitoring_webhook_url", "198.18.20.10:9099", "monitoring_webhook_url: '198.18.20.10:9099' is not an http(s) URL"),
    ("monitoring_cluster_name", "my cluster", "monitoring_cluster_name: 'my cluster'; fix:"),
    ("monitoring_probe_ca_file", "ca.crt", "monitoring_probe_ca_file: 'ca.crt'; fix: an absolute path"),
    ("lb_vip", None, "monitoring_front_door_url: missing and no lb_vip"),
])
def test_bad_input_is_one_line_naming_host_field_and_fix(field: str, value: Any, expected: str) -> None:
    target = lab_like(**{field: value})[0]
    problems = mon.input_problems(target)
    assert len(problems) == 1, problems
    assert problems[0].startswith("lb1: ") and expected in problems[0] and "fix:" in problems[0]


def test_email_level_needs_the_mail_settings() -> None:
    problems = mon.input_problems(lab_like(monitoring_receiver_critical="email")[0])
    assert [p.split(":")[1].strip() for p in problems] == [
        "monitoring_email_to", "monitoring_email_from", "monitoring_smtp_smarthost"]


def test_the_monitoring_group_is_two_hosts_in_two_azs() -> None:
    hosts = lab_like()
    one = [h for h in hosts if h.name != "lb2"]
    assert mon.group_problems(mon.members_of(one))[0].startswith("monitoring: hosts: 1 (lb1); fix:")
    same_az = [_target("m1", ("monitoring",), "az1", "198.18.1.41"), _target("m2", ("monitoring",), "az1", "198.18.1.42")]
    assert mon.group_problems(mon.members_of(same_az)) == [
        "m2: az: 'az1' is also m1's AZ; fix: put the two monitoring hosts in two AZs (losing one AZ must not lose alerting)"]


# --- mtail: the LBs' nginx access log as metrics ---------------------------------------------

ACCESS_LOG = """\
198.18.0.1 [2026-12-05T16:00:00+00:00] "GET /healthcheck HTTP/1.1" 200 4 shard="" node= upstream="198.18.1.21:80" ustatus="200" rt=0.003 urt="0.002" uct="0.000"
198.18.0.1 [2026-12-05T16:00:01+00:00] "GET /doc/abc/c/?EIO=4 HTTP/1.1" 200 10 shard="abc" node=ds2 upstream="198.18.2.21:80" ustatus="200" rt=0.300 urt="0.300" uct="0.001"
198.18.0.1 [2026-12-05T16:00:02+00:00] "GET /cache/files/x HTTP/1.1" 200 10 shard="abc" node=ds2 upstream="198.18.1.21:80, 198.18.2.21:80" ustatus="502, 200" rt=1.200 urt="0.001, 1.150" uct="0.001, 0.001"
198.18.0.1 [2026-12-05T16:00:03+00:00] "GET /x HTTP/1.1" 502 150 shard="" node= upstream="198.18.1.21:80, 198.18.2.21:80, 198.18.3.21:80" ustatus="502, 502, 502" rt=0.010 urt="0.001, 0.001, 0.002" uct="-, -, -"
198.18.0.1 [2026-12-05T16:00:04+00:00] "GET /internal/x HTTP/1.1" 403 150 shard="" node= upstream="" ustatus="" rt=0.000 urt="" uct=""
"""


def test_mtail_program_counts_status_retries_and_latency_per_upstream(tmp_path: Path) -> None:
    """The program parses the LB layer's `log_format ooha` (templates/loadbalancer/lb-nginx.conf.j2):
    the final upstream of a retried request gets the status, retries are counted, latency is the
    final upstream's."""
    nginx_conf = (TEMPLATES.parent / "loadbalancer" / "lb-nginx.conf.j2").read_text()
    assert "upstream=\"$upstream_addr\" '" in nginx_conf and "urt=\"$upstream_response_time\"" in nginx_conf
    progs = tmp_path / "progs"
    progs.mkdir()
    shutil.copy(TEMPLATES / "ooha-nginx.mtail", progs / "ooha-nginx.mtail")
    (tmp_path / "access.log").write_text(ACCESS_LOG)
    result = run(tool("mtail"), "--one_shot", "--one_shot_format", "prometheus", "--progs", str(progs),
                 "--logs", str(tmp_path / "access.log"))
    assert result.returncode == 0, result.stderr
    samples = {line.rsplit(" ", 1)[0].replace('prog="ooha-nginx.mtail",', ""): float(line.rsplit(" ", 1)[1])
               for line in result.stdout.splitlines() if line and not line.startswith("#")}
    assert samples['ooha_nginx_requests_total{status="200",upstream="198.18.2.21:80"}'] == 2
    assert samples['ooha_nginx_requests_total{status="502",upstream="198.18.3.21:80"}'] == 1
    assert samples['ooha_nginx_requests_total{status="403",upstream=""}'] == 1
    assert samples['ooha_nginx_retried_requests_total{upstream="198.18.2.21:80"}'] == 1
    assert 'ooha_nginx_retried_requests_total{upstream="198.18.1.21:80"}' not in samples
    assert samples['ooha_nginx_upstream_seconds_count{upstream="198.18.2.21:80"}'] == 2
    assert samples['ooha_nginx_upstream_seconds_sum{upstream="198.18.2.21:80"}'] == pytest.approx(1.45)
    assert samples['ooha_nginx_upstream_seconds_bucket{upstream="198.18.2.21:80",le="0.5"}'] == 1


# --- blackbox: the probe modules against real HTTP answers -------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_blackbox_config_check_accepts_the_modules_and_refuses_a_broken_one(tmp_path: Path) -> None:
    good = tmp_path / "blackbox.yml"
    good.write_text(render("blackbox.yml.j2", mon.blackbox_vars(lab_like()[0])))
    exporter = tool("prometheus-blackbox-exporter")
    assert run(exporter, "--config.check", f"--config.file={good}").returncode == 0
    bad = tmp_path / "bad.yml"
    bad.write_text(good.read_text().replace('"^true\\\\s*$"', '"(("', 1))
    assert bad.read_text() != good.read_text()
    assert run(exporter, "--config.check", f"--config.file={bad}").returncode != 0


ANSWERS = {"/true": (200, b"true"), "/true-nl": (200, b"true\n"), "/false": (200, b"false"),
           "/empty": (200, b""), "/down": (503, b"true")}


@contextlib.contextmanager
def http_server(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A local server answering ANSWERS; yields its base URL (https when ``tls``)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body = ANSWERS[self.path]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def blackbox(config: Path) -> Iterator[Callable[[str, str], dict[str, float]]]:
    """The real blackbox exporter on ``config``; yields ``probe(module, target) -> {metric: value}``."""
    port = _free_port()
    exporter = subprocess.Popen([tool("prometheus-blackbox-exporter"), f"--config.file={config}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def probe(module: str, target: str) -> dict[str, float]:
        url = f"http://127.0.0.1:{port}/probe?module={module}&target={urllib.parse.quote(target, safe='')}"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        # unlabelled series by name (labelled ones may hold spaces; the last of a name wins)
        return {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1])
                for line in lines if line and not line.startswith("#")}

    try:
        deadline = time.monotonic() + 15
        while True:  # up once it answers /metrics
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or exporter.poll() is not None:
                    raise
                time.sleep(0.1)
        yield probe
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)


def test_ds_healthcheck_probe_passes_only_on_body_true(tmp_path: Path) -> None:
    """The blackbox exporter itself probes a local HTTP server: `true` (with or without a newline)
    passes; `false`, an empty body and a 503 fail."""
    config = tmp_path / "blackbox.yml"
    config.write_text(render("blackbox.yml.j2", mon.blackbox_vars(lab_like()[0])))
    with http_server() as base, blackbox(config) as probe:
        results = {path: probe("ds_healthcheck", base + path)["probe_success"] for path in ANSWERS}
    assert results == {"/true": 1, "/true-nl": 1, "/false": 0, "/empty": 0, "/down": 0}


def _tls_files(directory: Path) -> tuple[Path, Path, Path, dt.datetime]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key, not_after)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ooha test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    not_after = (now + dt.timedelta(days=10)).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "front")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.crt", directory / "front.crt", directory / "front.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return (*paths, not_after)


def test_front_door_probe_verifies_tls_and_reports_the_certificate_expiry(tmp_path: Path) -> None:
    """With the CA: success and probe_ssl_earliest_cert_expiry = the certificate's notAfter (what
    CertificateExpiring reads); without it (unknown authority) or over plain HTTP: failure."""
    ca, crt, key, not_after = _tls_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(crt, key)
    with_ca, without_ca = tmp_path / "with-ca.yml", tmp_path / "without-ca.yml"
    with_ca.write_text(render("blackbox.yml.j2", mon.blackbox_vars(lab_like(monitoring_probe_ca_file=str(ca))[0])))
    without_ca.write_text(render("blackbox.yml.j2", {"ca_file": None}))
    with http_server(tls) as base, blackbox(with_ca) as probe:
        good = probe("front_door", base + "/true")
        assert good["probe_success"] == 1
        assert good["probe_ssl_earliest_cert_expiry"] == not_after.timestamp()
        assert probe("front_door", base + "/false")["probe_success"] == 0
    with http_server(tls) as base, blackbox(without_ca) as probe:
        assert probe("front_door", base + "/true")["probe_success"] == 0
    with http_server() as base, blackbox(with_ca) as probe:
        assert probe("front_door", base + "/true")["probe_success"] == 0


# --- the HA path end to end: two Prometheus replicas, two clustered Alertmanagers, one webhook ---


@contextlib.contextmanager
def webhook_recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver; yields (url, the JSON bodies posted to it)."""
    import json

    posts: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", posts
    finally:
        server.shutdown()
        server.server_close()


def _firing(prometheus_url: str, alertname: str) -> list[dict[str, str]]:
    """The labels of ``alertname``'s firing alerts on one Prometheus (its /api/v1/alerts)."""
    import json

    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=5) as response:
        alerts = json.load(response)["data"]["alerts"]
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def test_two_replicas_and_two_clustered_alertmanagers_notify_once(tmp_path: Path) -> None:
    """The design's claim, with the real daemons on loopback addresses (mon1 127.0.0.1, mon2
    127.0.0.2): both Prometheus replicas evaluate the Watchdog and send it to both Alertmanagers;
    the replica label is dropped, so the webhook gets ONE notification holding ONE alert, and the
    second Alertmanager (it waits a peer timeout, then reads the gossiped log) sends nothing.

    The same for a PROBE alert: each replica probes the front door (a local HTTPS server whose
    certificate expires in 10 days) through its OWN blackbox exporter, so each fires
    CertificateExpiring (checked on both); without `probe_az` in the alert it is one alert, one
    notification (with the label, as before the fix, it arrived twice: two groups)."""
    prometheus, alertmanager = tool("prometheus"), tool("prometheus-alertmanager")
    exporter = tool("prometheus-blackbox-exporter")
    ports = {key: _free_port() for key in ("prometheus", "alertmanager", "cluster", "blackbox")}
    ca, crt, key, _not_after = _tls_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(crt, key)
    with webhook_recorder() as (url, posts), http_server(tls) as front_door:
        settings = {"monitoring_webhook_url": url, "monitoring_scrape_interval": "1s", "monitoring_scrape_timeout": "1s",
                    "monitoring_evaluation_interval": "1s", "monitoring_prometheus_port": ports["prometheus"],
                    "monitoring_alertmanager_port": ports["alertmanager"],
                    "monitoring_alertmanager_cluster_port": ports["cluster"],
                    "monitoring_blackbox_port": ports["blackbox"], "monitoring_probe_ca_file": str(ca),
                    "monitoring_front_door_url": f"{front_door}/true"}
        hosts = [_target("mon1", ("monitoring",), "az1", "127.0.0.1", **{**COMMON, **settings}),
                 _target("mon2", ("monitoring",), "az2", "127.0.0.2", **{**COMMON, **settings})]
        members = mon.members_of(hosts)
        replicas = [f"http://{h.data['private_address']}:{ports['prometheus']}" for h in hosts]
        processes: list[subprocess.Popen[bytes]] = []

        def received(receiver: str) -> list[dict[str, Any]]:
            return [p for p in posts if p["receiver"] == receiver]

        try:
            for host in hosts:
                home = tmp_path / host.name
                config = render_tree(home, hosts, host.name)
                processes.append(subprocess.Popen(
                    [exporter, f"--config.file={home / 'blackbox.yml'}",
                     f"--web.listen-address={host.data['private_address']}:{ports['blackbox']}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                processes.append(subprocess.Popen(
                    [alertmanager, f"--config.file={home / 'alertmanager.yml'}", f"--storage.path={home / 'am'}",
                     "--cluster.peer-timeout=2s", "--cluster.gossip-interval=50ms", *mon.alertmanager_args(host, members).split()],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                processes.append(subprocess.Popen(
                    # resend-delay 1s: an alert sent before the Alertmanagers are discovered is
                    # dropped and (by default) sent again only a minute later.
                    [prometheus, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                     "--rules.alert.resend-delay=1s", *mon.prometheus_args(host, members).split()],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 60
            both_fired = False
            while not (received("watchdog") and received("warning") and both_fired):
                assert time.monotonic() < deadline, ("not every notification within 60 s", posts)
                assert all(p.poll() is None for p in processes), "a daemon exited"
                with contextlib.suppress(OSError):
                    both_fired = all(_firing(replica, "CertificateExpiring") for replica in replicas)
                time.sleep(0.2)
            time.sleep(5)  # > 2 x the peer timeout: the second Alertmanager would have sent by now
        finally:
            for process in processes:  # killed: a graceful Alertmanager waits 10 s to leave the mesh
                process.kill()
            for process in processes:
                process.wait(timeout=15)
    assert len(received("watchdog")) == 1, [p.get("groupLabels") for p in posts]
    (notification,) = received("watchdog")
    assert [alert["labels"] for alert in notification["alerts"]] == [
        {"alertname": "Watchdog", "severity": "none", "cluster": "onlyoffice-ha"}]
    assert len(received("warning")) == 1, [p.get("groupLabels") for p in posts]
    (notification,) = received("warning")
    assert [alert["labels"] for alert in notification["alerts"]] == [
        {"alertname": "CertificateExpiring", "severity": "warning", "cluster": "onlyoffice-ha",
         "job": "probe_front_door", "instance": f"{settings['monitoring_front_door_url']}",
         "host": "front-door", "az": "all"}]
    assert {p["receiver"] for p in posts} == {"watchdog", "warning"}, [p.get("groupLabels") for p in posts]


# --- the deploy's file lists: what validated_config would write and check ------------------------


def _write_candidates(root: Path, files: list[Any]) -> Path:
    """Render each ConfigFile to its candidate path under ``root`` as files.template would; return
    the first file's candidate (the path the check runs on)."""
    for config_file in files:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, **dict(config_file.jinja_env_kwargs or {}))
        path = root / config_file.candidate.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.from_string(Path(config_file.src).read_text()).render(**config_file.data))
    return root / files[0].candidate.lstrip("/")


def test_the_deploys_candidate_trees_pass_their_checks(tmp_path: Path) -> None:
    hosts = lab_like()
    target, members = hosts[1], mon.members_of(hosts)
    prometheus = mon.prometheus_files(target, members)
    assert prometheus[0].dest == "/etc/prometheus/prometheus.yml"
    assert {f.candidate.rsplit("/", 1)[0] for f in prometheus} <= {
        mon.CANDIDATE_DIR, f"{mon.CANDIDATE_DIR}/rules", f"{mon.CANDIDATE_DIR}/file_sd"}
    assert all(f.candidate.replace(mon.CANDIDATE_DIR, mon.PROMETHEUS_DIR) == f.dest for f in prometheus)
    for files, check in ((prometheus, mon.PROMETHEUS_CHECK), (mon.alertmanager_files(target), mon.ALERTMANAGER_CHECK),
                         (mon.blackbox_files(target), mon.BLACKBOX_CHECK)):
        candidate = _write_candidates(tmp_path, files)
        argv = check.format(path=candidate).split()
        result = run(tool(argv[0]), *argv[1:])
        assert result.returncode == 0, (check, result.stdout, result.stderr)
    assert mon.alertmanager_files(target)[0].private
