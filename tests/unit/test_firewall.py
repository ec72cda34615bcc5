"""Firewall layer core (issue 14, deliverable 1): the matrix, the nftables rulesets, the docs table.

Every rendered ruleset of the lab's and the example inventory's hosts is checked by the real
``nft -c`` (nftables 1.0.6 from Debian) inside a throwaway network namespace (``unshare -rn``:
no privilege needed, nothing on this machine changes).  nft is REQUIRED: `make gate` installs
it (Makefile ``tools``); a machine without it FAILS these tests, never skips them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
import yaml

from inventories.labstate import lab_groups
from ooha import contract
from ooha.layers import endpoints
from ooha.layers import firewall as fw
from ooha.layers.etcd import ETCD_DEFAULTS
from ooha.layers.monitoring import MONITORING_DEFAULTS, Member, members_of
from ooha.preflight import REQUIRED_SECRETS

REPO = Path(__file__).resolve().parents[2]
SECRETS = {key: f"s3cr3t-{key}" for key in REQUIRED_SECRETS}
INSTALL = "apt-get install -y --no-install-recommends nftables (or `make gate`)"
LAB_ADMIN = ["198.18.1.1", "198.18.2.1", "198.18.3.1"]
"""The outer machine as the lab hosts see it (each AZ bridge's gateway): where the deploy connects from."""
OUTSIDER = "198.18.20.10"
"""The lab's services host: in no tier (the issue's scan came from such an address)."""
C = contract.CONTRACT_DEFAULTS


# --- tools ------------------------------------------------------------------------------------------


def nft_path() -> str:
    """nft's path (/usr/sbin is not on every PATH); FAILS (never skips) when nftables is missing."""
    path = shutil.which("nft") or ("/usr/sbin/nft" if os.access("/usr/sbin/nft", os.X_OK) else None)
    if path is None:
        pytest.fail(f"nft is not installed: {INSTALL}")
    return path


def in_netns(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a new user + network namespace: nft sees an empty ruleset of its own.

    ``unshare -rn`` maps this user to root in a fresh namespace, so nft can talk to its own
    netfilter without any privilege here; a machine that forbids user namespaces fails the test
    with unshare's message (run the gate as root there: plain ``unshare -n`` is tried then).
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is missing")
    path = f"{Path(nft_path()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    full_env = {**os.environ, "PATH": path, **(env or {})}
    result = subprocess.run([unshare, "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=60, env=full_env)
    if result.returncode != 0 and "unshare failed" in result.stderr and os.geteuid() == 0:
        result = subprocess.run([unshare, "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60, env=full_env)
    if "unshare failed" in result.stderr:
        pytest.fail(f"cannot make a network namespace for nft -c: {result.stderr.strip()}")
    return result


def nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    return in_netns(f"nft -c -f '{path}'")


# --- the two inventories as fake pyinfra hosts ------------------------------------------------------


def _hosts_from(all_group: tuple[list[tuple[str, dict]], dict], groups: dict[str, list[str]],
                **extra: Any) -> list[SimpleNamespace]:
    host_list, global_data = all_group
    return [SimpleNamespace(name=name, groups=tuple(g for g, names in groups.items() if name in names),
                            data={**global_data, **data, **extra})
            for name, data in host_list]


def example_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> list[SimpleNamespace]:
    """inventories/example.py, loaded for real (with a complete secrets file), plus ``extra`` data."""
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump(SECRETS))
    os.chmod(secrets, 0o600)
    monkeypatch.setenv("OOHA_SECRETS_FILE", str(secrets))
    namespace = runpy.run_path(str(REPO / "inventories/example.py"))
    groups = {g: namespace[g] for g in ("lb", "docs", "postgres", "etcd", "redis", "rabbitmq")}
    return _hosts_from(namespace["all"], groups, **extra)


def lab_state(tmp_path: Path) -> dict[str, Any]:
    """The lab's state in its documented format (docs/architecture.md), with the front segment."""
    layout = [("lb1", "az1", "198.18.1.11", ["lb"]), ("lb2", "az2", "198.18.2.11", ["lb"]),
              *[(f"ds{i}", f"az{i}", f"198.18.{i}.21", ["docs"]) for i in (1, 2, 3)],
              *[(f"data{i}", f"az{i}", f"198.18.{i}.31", ["postgres", "etcd", "redis", "rabbitmq"]) for i in (1, 2, 3)],
              ("svc1", "region", OUTSIDER, ["services"])]
    hosts = []
    for name, az, address, roles in layout:
        addresses = {az: address, **({"front": f"198.18.10.{10 + int(name[-1])}"} if "lb" in roles else {})}
        hosts.append({"name": name, "container": f"ooha-{name}", "az": az, "address": address, "addresses": addresses,
                      "roles": roles, "ssh_user": "admin", "ssh_key": str(tmp_path / "id"), "state": "running"})
    return {"name": "ooha", "state_dir": str(tmp_path), "ca_cert": str(tmp_path / "ca.crt"), "ssh_key": str(tmp_path / "id"),
            "known_hosts": str(tmp_path / "known_hosts"), "secrets_file": str(tmp_path / "secrets.yml"),
            "services": {"apt_proxy": "http://198.18.20.10:3142", "ntp_server": OUTSIDER},
            "front": {"vip": "198.18.10.100/24", "tls_certificate": "/x/front.crt", "tls_key": "/x/front.key"},
            "hosts": hosts}


def lab_hosts(tmp_path: Path, monitoring: tuple[str, ...] = (), **extra: Any) -> list[SimpleNamespace]:
    """The lab inventory (inventories/labstate.py's translation) with admin_networks, and
    ``monitoring`` hosts added to a monitoring group (the LBs in issue 13's proposed placement)."""
    groups = lab_groups(lab_state(tmp_path), SECRETS)
    names = {g: list(v) for g, v in groups.items() if g != "all"}
    names["monitoring"] = list(monitoring)
    return _hosts_from(groups["all"], names, **{"admin_networks": LAB_ADMIN, **extra})


def member(members: list[Member], name: str) -> Member:
    return next(m for m in members if m.name == name)


@pytest.fixture
def lab(tmp_path: Path) -> SimpleNamespace:
    """The lab with a monitoring group on the LBs: hosts, members and the matrix's ``allows``."""
    hosts = lab_hosts(tmp_path, monitoring=("lb1", "lb2"))
    members = members_of(hosts)

    def allows(source: str, dest: str, port: int | None, proto: str = "tcp") -> bool:
        return fw.allows(hosts[0], members, member(members, dest), source, proto, port, hosts)

    return SimpleNamespace(hosts=hosts, members=members, allows=allows,
                           address={m.name: m.address for m in members})


# --- nft -c on every host's ruleset -------------------------------------------------------------------


def _rulesets(hosts: list[SimpleNamespace]) -> dict[str, str]:
    members = members_of(hosts)
    return {m.name: fw.render_ruleset(hosts[0], members, m, hosts) for m in members}


@pytest.mark.parametrize("inventory", ["lab", "lab+monitoring", "example", "example+ipv6-admin"])
def test_every_hosts_ruleset_passes_nft_check(inventory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if inventory.startswith("lab"):
        hosts = lab_hosts(tmp_path, monitoring=("lb1", "lb2") if "monitoring" in inventory else ())
    else:
        admin = ["192.0.2.0/28", "2001:db8:aa::/64"] if "ipv6" in inventory else ["192.0.2.0/28"]
        hosts = example_hosts(tmp_path, monkeypatch, admin_networks=admin)
    rulesets = _rulesets(hosts)
    assert len(rulesets) == 8
    for name, text in rulesets.items():
        path = tmp_path / f"{name}.nft"
        path.write_text(text)
        result = nft_check(path)
        assert result.returncode == 0, f"{name}: nft -c refused its ruleset:\n{result.stderr}\n{text}"


def test_nft_check_refuses_a_broken_ruleset(tmp_path: Path) -> None:
    """The check above can fail: a ruleset naming a set it does not define is refused."""
    members = members_of(lab_hosts(tmp_path))
    hosts = lab_hosts(tmp_path)
    text = fw.render_ruleset(hosts[0], members, member(members, "data1"), hosts)
    path = tmp_path / "broken.nft"
    path.write_text(text.replace("@etcd_v4", "@no_such_set_v4"))
    result = nft_check(path)
    assert result.returncode != 0 and "no_such_set_v4" in result.stderr


def test_ruleset_replaces_only_its_own_table_and_drops_inbound_by_default(lab: SimpleNamespace) -> None:
    text = fw.render_ruleset(lab.hosts[0], lab.members, member(lab.members, "ds1"), lab.hosts)
    assert re.findall(r"^(?:table|delete table|flush)\b.*$", text, re.M) == [
        "table inet ooha_filter", "delete table inet ooha_filter", "table inet ooha_filter {"]
    assert "flush ruleset" not in text
    assert "type filter hook input priority filter; policy drop;" in text
    assert "ct state established,related accept" in text and 'iif "lo" accept' in text
    assert "packet-too-big" in text and "destination-unreachable" in text  # PMTU discovery, v6 and v4
    assert "nd-neighbor-solicit" in text
    assert "hook output" not in text  # egress unrestricted (module docstring says why)
    # Named sets per tier keep the rules readable: no address literal in any rule line.
    rule_lines = [line for line in text.splitlines() if "accept comment" in line]
    assert rule_lines and not any(re.search(r"\d+\.\d+\.\d+\.\d+", line) for line in rule_lines)


def test_only_docs_hosts_get_a_forward_chain_for_the_docker_published_port(lab: SimpleNamespace) -> None:
    for name in ("lb1", "ds1", "data1"):
        text = fw.render_ruleset(lab.hosts[0], lab.members, member(lab.members, name), lab.hosts)
        assert ("hook forward" in text) == (name == "ds1"), name
    text = fw.render_ruleset(lab.hosts[0], lab.members, member(lab.members, "ds1"), lab.hosts)
    forward = text.split("chain forward", 1)[1]
    port = C["ds_http_port"]
    assert f"ct original proto-dst {port} ip saddr @lb_v4 accept" in forward
    assert forward.index("@lb_v4 accept") < forward.index(f"proto-dst {port} drop")
    assert "policy accept" in forward  # Docker's container traffic is not ours to filter


# --- the matrix answers the issue's questions -------------------------------------------------------------


P = {**C, "etcd_peer_port": ETCD_DEFAULTS["etcd_peer_port"], **MONITORING_DEFAULTS,
     "epmd": fw.FIREWALL_DEFAULTS["firewall_rabbitmq_epmd_port"], "dist": C["rabbitmq_amqp_port"] + 20000}

CASES = [
    # (source host or address, destination host, port key, allowed?)
    ("ds1", "data1", "postgres_port", True),
    ("ds3", "data2", "patroni_rest_port", True),
    ("lb1", "data1", "postgres_port", False),
    ("data2", "data1", "postgres_port", True),  # replication, pg_rewind
    ("data2", "data1", "etcd_client_port", True),  # Patroni on the postgres hosts
    ("ds1", "data1", "etcd_client_port", False),
    ("lb1", "data1", "etcd_client_port", False),
    ("data3", "data1", "etcd_peer_port", True),
    ("ds1", "data1", "etcd_peer_port", False),
    ("ds2", "data1", "redis_port", True),
    ("lb2", "data1", "redis_port", True),  # the shard table through the LB's HAProxy
    ("data2", "data1", "redis_port", True),  # replication
    ("ds2", "data1", "redis_sentinel_port", True),  # ioredis asks the Sentinels directly
    ("lb1", "data1", "redis_sentinel_port", False),
    ("ds1", "data1", "rabbitmq_amqp_port", True),
    ("lb1", "data1", "rabbitmq_amqp_port", False),
    ("data2", "data1", "epmd", True),
    ("data2", "data1", "dist", True),
    ("ds1", "data1", "epmd", False),
    ("ds1", "data1", "dist", False),
    ("lb1", "ds1", "ds_http_port", True),
    ("lb2", "ds3", "ds_http_port", True),
    ("ds2", "ds1", "ds_http_port", False),
    ("data1", "ds1", "ds_http_port", False),
    (OUTSIDER, "ds1", "ds_http_port", False),
    (OUTSIDER, "lb1", "front_443", True),
    (OUTSIDER, "lb2", "front_80", True),
    ("203.0.113.9", "lb1", "front_443", True),
    (OUTSIDER, "data1", "postgres_port", False),
    (OUTSIDER, "data1", "redis_port", False),
    (OUTSIDER, "data1", "patroni_rest_port", False),
    ("ds1", "lb1", "front_443", True),
    ("198.19.0.2", "ds1", "endpoint_pg_primary_port", True),  # the DS container via the bridge
    ("198.19.0.2", "ds1", "endpoint_redis_port", True),
    ("198.19.0.2", "ds1", "endpoint_amqp_port", True),
    ("lb1", "ds1", "endpoint_pg_primary_port", False),
    (OUTSIDER, "ds1", "endpoint_redis_port", False),
    # Monitoring (on the LBs here): exporters from the monitoring hosts only.
    ("lb1", "data1", "monitoring_node_exporter_port", True),
    ("ds1", "data1", "monitoring_node_exporter_port", False),
    ("lb2", "data3", "monitoring_postgres_exporter_port", True),
    ("lb1", "ds2", "monitoring_haproxy_metrics_port", True),
    ("ds1", "lb1", "monitoring_mtail_port", False),
    ("lb2", "lb1", "monitoring_alertmanager_cluster_port", True),
    (OUTSIDER, "lb1", "monitoring_prometheus_port", False),
    ("198.18.1.1", "lb1", "monitoring_prometheus_port", True),  # admin networks see the UI
    ("lb1", "data1", "patroni_rest_port", True),  # Prometheus scrapes Patroni (lb1 is monitoring here;
    # without a monitoring group an LB cannot: test_without_a_monitoring_group_...)
]


def _port_of(key: str) -> int:
    if key.startswith("front_"):
        return int(key.removeprefix("front_"))
    return int(P[key])


@pytest.mark.parametrize(("source", "dest", "key", "allowed"), CASES,
                         ids=[f"{s}->{d}:{k}" for s, d, k, _ in CASES])
def test_matrix_answers_the_issues_questions(lab: SimpleNamespace, source: str, dest: str, key: str,
                                             allowed: bool) -> None:
    address = lab.address.get(source, source)
    assert lab.allows(address, dest, _port_of(key)) is allowed


def test_without_a_monitoring_group_no_exporter_port_opens_and_lbs_lose_patroni(tmp_path: Path) -> None:
    hosts = lab_hosts(tmp_path)
    members = members_of(hosts)
    ports = {r.port for r in fw.matrix(hosts[0], members)}
    exporter_ports = {v for k, v in MONITORING_DEFAULTS.items() if k.startswith("monitoring_") and k.endswith("_port")}
    assert not ports & exporter_ports
    assert not fw.allows(hosts[0], members, member(members, "data1"), "198.18.1.11", "tcp", C["patroni_rest_port"], hosts)


def test_ssh_only_from_admin_networks_on_every_host(lab: SimpleNamespace) -> None:
    port = fw.FIREWALL_DEFAULTS["ssh_port"]
    for dest in lab.address:
        for source in [*lab.address.values(), OUTSIDER, "198.18.10.100", "198.19.0.2"]:
            assert not lab.allows(source, dest, port), f"{source} -> {dest}:22"
        for source in LAB_ADMIN:
            assert lab.allows(source, dest, port), f"{source} -> {dest}:22"


def test_vrrp_only_between_the_lbs_front_addresses(lab: SimpleNamespace) -> None:
    assert lab.allows("198.18.10.12", "lb1", None, proto="vrrp")
    assert lab.allows("198.18.10.11", "lb2", None, proto="vrrp")
    for source in ("198.18.1.21", "198.18.1.31", OUTSIDER):
        assert not lab.allows(source, "lb1", None, proto="vrrp")
    for dest in ("ds1", "data1"):
        assert not lab.allows("198.18.10.12", dest, None, proto="vrrp")


def test_an_outsider_reaches_the_front_door_and_nothing_else(lab: SimpleNamespace) -> None:
    """The issue's scan: from an address in no tier, only 443 and 80 on the LBs (none of the ports it listed)."""
    for dest in lab.address:
        for port in (*range(1, 1024), 2379, 2380, 4369, 5432, 5433, 5672, 6379, 8008, 25672, 26379,
                     *(v for k, v in P.items() if k.endswith("_port"))):
            expected = dest.startswith("lb") and port in fw.FRONT_DOOR_PORTS
            assert lab.allows(OUTSIDER, dest, int(port)) is expected, f"{dest}:{port}"


def test_every_haproxy_endpoint_server_is_reachable_from_the_ds_hosts(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """The DS host's own HAProxy (the real template, endpoints.template_vars) reaches every server
    port and health-check port it names; the LB's HAProxy reaches its Redis servers (the shard table)
    and NOTHING else (no monitoring group here: its PostgreSQL/AMQP proxies stay down, see docs)."""
    hosts = lab_hosts(tmp_path)
    members = members_of(hosts)
    lab = SimpleNamespace(hosts=hosts, members=members, address={m.name: m.address for m in members},
                          allows=lambda source, dest, port: fw.allows(hosts[0], members, member(members, dest),
                                                                      source, "tcp", port, hosts))
    by_group = {g: [h for h in lab.hosts if g in h.groups] for g in ("postgres", "redis", "rabbitmq")}
    monkeypatch.setattr(endpoints, "inventory", SimpleNamespace(get_group=lambda group: by_group.get(group, [])))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string((REPO / "templates/endpoints/haproxy.cfg.j2").read_text())
    by_address = {m.address: m.name for m in lab.members}
    for client in ("ds1", "ds2", "lb1"):
        target = next(h for h in lab.hosts if h.name == client)
        text = template.render(**endpoints.template_vars(target))
        sections = dict(re.findall(r"^listen (\S+)\n(.*?)(?=^listen |\Z)", text, re.S | re.M))
        checked = 0
        for proxy, body in sections.items():
            for address, port, check in re.findall(r"^\s*server \S+ ([0-9.]+):(\d+)(?: check(?: port (\d+))?)?", body, re.M):
                wanted = client.startswith("ds") or proxy == endpoints.REDIS_PRIMARY
                for p in {int(port), int(check or port)}:
                    assert lab.allows(lab.address[client], by_address[address], p) is wanted, f"{client} {proxy} {address}:{p}"
                    checked += 1
        assert checked >= 12


# --- one owner per value -------------------------------------------------------------------------------------


def test_ports_follow_their_owners_keys(tmp_path: Path) -> None:
    """Moving a port in the inventory moves the rule: the matrix reads the owners' keys."""
    hosts = lab_hosts(tmp_path, postgres_port=6432, redis_sentinel_port=26380, etcd_peer_port=2480,
                      rabbitmq_amqp_port=5673, ds_http_port=8080)
    members = members_of(hosts)
    rows = {(r.dest, r.port, r.proto) for r in fw.matrix(hosts[0], members)}
    for row in (("postgres", 6432, "tcp"), ("redis", 26380, "tcp"), ("etcd", 2480, "tcp"), ("rabbitmq", 5673, "tcp"),
                ("rabbitmq", 25673, "tcp"), ("docs", 8080, "tcp")):
        assert row in rows
    assert ("postgres", 5432, "tcp") not in rows and ("redis", 26379, "tcp") not in rows


def test_the_module_copies_no_port_number() -> None:
    """Ports live with their owners (ooha/contract.py, etcd, monitoring): none is written here."""
    source = (REPO / "ooha/layers/firewall.py").read_text()
    owned = {C[k] for k in C if k.endswith("_port")} | {ETCD_DEFAULTS["etcd_peer_port"]} | {
        v for k, v in MONITORING_DEFAULTS.items() if k.endswith("_port")} | {25672}
    owned -= {80}  # ds_http_port is 80, like the front door's own (FRONT_DOOR_PORTS)
    for port in sorted(owned):
        assert not re.search(rf"(?<![\d.]){port}(?![\d.])", source), f"port {port} is written in firewall.py"


def test_front_door_ports_are_the_lb_nginx_listen_ports() -> None:
    template = (REPO / "templates/loadbalancer/lb-nginx.conf.j2").read_text()
    listens = {int(p) for p in re.findall(r"^\s*listen (\d+)\b", template, re.M)}
    assert listens == set(fw.FRONT_DOOR_PORTS)


# --- the docs table ------------------------------------------------------------------------------------------


DOC_BEGIN = "<!-- firewall-matrix:begin"
DOC_END = "<!-- firewall-matrix:end -->"


def reference_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The docs' table: inventories/example.py with a monitoring group (on the LBs)."""
    hosts = example_hosts(tmp_path, monkeypatch, admin_networks=["192.0.2.0/28"])
    for h in hosts:
        if "lb" in h.groups:
            h.groups = (*h.groups, "monitoring")
    return fw.matrix_table(fw.matrix(hosts[0], members_of(hosts)))


def test_docs_table_equals_the_rendered_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs/architecture.md").read_text()
    assert DOC_BEGIN in text and DOC_END in text, "docs/architecture.md lost the firewall matrix markers"
    documented = text.split(DOC_BEGIN, 1)[1].split("-->", 1)[1].split(DOC_END, 1)[0].strip() + "\n"
    assert documented == reference_table(tmp_path, monkeypatch), (
        "docs/architecture.md's firewall matrix is stale; paste the output of "
        "tests/unit/test_firewall.py::reference_table")


# --- inputs ----------------------------------------------------------------------------------------------------


def _target(**data: Any) -> SimpleNamespace:
    return SimpleNamespace(name="ds1", groups=("docs",), data={"private_address": "198.18.1.21", **data})


@pytest.mark.parametrize(("data", "fragment"), [
    ({}, "admin_networks: missing or empty"),
    ({"admin_networks": []}, "admin_networks: missing or empty"),
    ({"admin_networks": "192.0.2.0/28"}, "is not a list"),
    ({"admin_networks": ["192.0.2.0/28", "bastion"]}, "'bastion' is not an address or network"),
    ({"admin_networks": ["0.0.0.0/0"]}, "whole Internet"),
    ({"admin_networks": ["::/0"]}, "whole Internet"),
    ({"admin_networks": ["192.0.2.1"], "firewall_confirm_timeout": 5}, "firewall_confirm_timeout: 5"),
    ({"admin_networks": ["192.0.2.1"], "postgres_port": 70000}, "postgres_port: 70000"),
    ({"admin_networks": ["192.0.2.1"], "rabbitmq_amqp_port": 50000}, "distribution port"),
    ({"admin_networks": ["192.0.2.1"], "front_address": "lb-front"}, "front_address: 'lb-front'"),
])
def test_input_problems_one_line_each_with_host_field_fix(data: dict[str, Any], fragment: str) -> None:
    problems = fw.input_problems(_target(**data))
    assert len(problems) == 1 and fragment in problems[0], problems
    assert problems[0].startswith("ds1: ") and "; fix: " in problems[0]


def test_valid_inputs_have_no_problem() -> None:
    assert fw.input_problems(_target(admin_networks=["192.0.2.0/28", "2001:db8::1"], front_address="198.18.10.11")) == []


def test_the_inventories_are_refused_until_admin_networks_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither inventory sets admin_networks yet: wiring the layer must add it (docs: "Left to wire")."""
    for hosts in (example_hosts(tmp_path, monkeypatch), lab_hosts(tmp_path, admin_networks=None)):
        assert all(any("admin_networks: missing" in p for p in fw.input_problems(h)) for h in hosts)


def test_source_sets_are_normalised_networks(lab: SimpleNamespace) -> None:
    tiers = fw.source_addresses(lab.hosts[0], lab.members, lab.hosts)
    assert tiers["lb_front"] == ["198.18.10.11", "198.18.10.12"]
    assert tiers["docker_bridge"] == ["198.19.0.0/24"]
    assert tiers["etcd"] == ["198.18.1.31", "198.18.2.31", "198.18.3.31"]
    for values in tiers.values():
        for value in values:
            ipaddress.ip_network(value)


def test_an_admin_network_holding_an_inventory_host_is_refused(tmp_path: Path) -> None:
    """198.18.1.0/24 holds lb1, ds1 and data1: each could reach every host's SSH."""
    hosts = lab_hosts(tmp_path, admin_networks=["198.18.1.0/24", "198.18.2.1"])
    problems = fw.fleet_problems(hosts[0], members_of(hosts))
    assert problems == ["lb1: admin_networks: '198.18.1.0/24' holds lb1, ds1, data1; fix: list the admin hosts "
                        "themselves or a network that holds no inventory host"]
    assert fw.fleet_problems(lab_hosts(tmp_path)[0], members_of(lab_hosts(tmp_path))) == []


EXTRA = [{"group": "postgres", "port": 6432, "sources": ["192.0.2.40"], "service": "pgbouncer"},
         {"group": "redis", "port": C["redis_sentinel_port"], "sources": ["198.18.1.1", "2001:db8::7"]}]


def test_extra_rows_open_a_port_to_their_sources_only(tmp_path: Path) -> None:
    hosts = lab_hosts(tmp_path, firewall_extra_allow=EXTRA)
    members = members_of(hosts)
    data1 = member(members, "data1")
    assert fw.allows(hosts[0], members, data1, "192.0.2.40", "tcp", 6432, hosts)
    assert not fw.allows(hosts[0], members, data1, "192.0.2.41", "tcp", 6432, hosts)
    assert fw.allows(hosts[0], members, data1, "198.18.1.1", "tcp", C["redis_sentinel_port"], hosts)
    assert fw.allows(hosts[0], members, data1, "2001:db8::7", "tcp", C["redis_sentinel_port"], hosts)
    assert not fw.allows(hosts[0], members, member(members, "ds1"), "192.0.2.40", "tcp", 6432, hosts)
    assert "| postgres | 6432/tcp | pgbouncer | extra0 |" in fw.matrix_table(fw.matrix(hosts[0], members))
    path = tmp_path / "data1.nft"
    path.write_text(fw.render_ruleset(hosts[0], members, data1, hosts))
    result = nft_check(path)
    assert result.returncode == 0, result.stderr
    assert fw.input_problems(hosts[0]) == [] and fw.fleet_problems(hosts[0], members) == []


@pytest.mark.parametrize(("extra", "fragment"), [
    ("redis", "firewall_extra_allow: 'redis' is not a list"),
    ([{"group": "redis", "port": 1}], "needs group, port and sources"),
    ([{"group": "redis", "port": 0, "sources": ["192.0.2.1"]}], "firewall_extra_allow[0].port: 0"),
    ([{"group": "redis", "port": 1, "proto": "sctp", "sources": ["192.0.2.1"]}], ".proto: 'sctp'"),
    ([{"group": "redis", "port": 1, "sources": []}], ".sources: []"),
    ([{"group": "redis", "port": 1, "sources": ["nope"]}], "'nope' is not an address"),
    ([{"group": "redis", "port": 1, "sources": ["0.0.0.0/0"]}], "is everyone"),
])
def test_extra_rows_are_checked(extra: Any, fragment: str) -> None:
    problems = fw.input_problems(_target(admin_networks=["192.0.2.1"], firewall_extra_allow=extra))
    assert len(problems) == 1 and fragment in problems[0] and "; fix: " in problems[0], problems


def test_an_extra_row_for_a_group_without_hosts_is_refused(tmp_path: Path) -> None:
    hosts = lab_hosts(tmp_path, firewall_extra_allow=[{"group": "postgress", "port": 6432, "sources": ["192.0.2.40"]}])
    problems = fw.fleet_problems(hosts[0], members_of(hosts))
    assert len(problems) == 1 and "firewall_extra_allow[0].group: 'postgress' has no host" in problems[0]
