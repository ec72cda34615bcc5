"""Load-balancer layer: templates, input validation, the node hash, the facts' parsers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ooha.layers.loadbalancer as lb
from ooha.facts.nginx import diagnose_502, parse_config_test, parse_ip_addr, parse_probe, parse_upstreams

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NODES = [("ds1", "198.18.1.21"), ("ds2", "198.18.2.21"), ("ds3", "198.18.3.21")]


def _target(name: str, groups: tuple[str, ...], **data) -> SimpleNamespace:
    return SimpleNamespace(name=name, groups=groups, data=dict(data))


class FakeInventory:
    def __init__(self, groups: dict[str, list[SimpleNamespace]]) -> None:
        self.groups = groups

    def get_group(self, name: str) -> list[SimpleNamespace]:
        return self.groups.get(name, [])


def _cert(tmp_path: Path, days: int = 30, other_key: bool = False) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "198.18.10.100")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("198.18.10.100"))]), critical=False)
            .sign(key, hashes.SHA256()))
    crt_path, key_path = tmp_path / "front.crt", tmp_path / "front.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    used = ec.generate_private_key(ec.SECP256R1()) if other_key else key
    key_path.write_bytes(used.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return crt_path, key_path


@pytest.fixture
def lab_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, SimpleNamespace]:
    crt, key = _cert(tmp_path)
    common = {"lb_vip": "198.18.10.100/24", "lb_tls_certificate": str(crt), "lb_tls_key": str(key),
              "secrets": {"redis_password": 'p"a]]s\\w\nrd'}}
    lb1 = _target("lb1", ("lb",), front_address="198.18.10.11", **common)
    lb2 = _target("lb2", ("lb",), front_address="198.18.10.12", **common)
    docs = [_target(n, ("docs",), private_address=a) for n, a in NODES]
    monkeypatch.setattr(lb, "inventory", FakeInventory({"lb": [lb1, lb2], "docs": docs}))
    return {"lb1": lb1, "lb2": lb2}


def render(name: str, variables: dict) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string((TEMPLATES / name).read_text()).render(**variables)


# --- node choice ------------------------------------------------------------------------


def test_ranking_is_every_node_once_led_by_the_hash() -> None:
    names = [n for n, _ in NODES]
    for key in ("a", "doc-1", "ключ"):
        ranking = lb.node_ranking(names, key)
        assert sorted(ranking) == names and ranking[0] == lb.hash_node(names, key)
        scores = [zlib.crc32(f"{n}\0{key}".encode()) for n in ranking]
        assert scores == sorted(scores, reverse=True)


def test_the_tables_node_is_always_tried_first_even_when_marked_down() -> None:
    names = [n for n, _ in NODES]
    for key in ("a", "doc-1", "ключ"):
        ranking = lb.node_ranking(names, key)
        for first in names:
            others = [n for n in ranking if n != first]
            assert lb.candidate_order(names, key, first) == [first] + others
            # the table's own node failed recently: still first (its editors' sockets are there)
            assert lb.candidate_order(names, key, first, {first}) == [first] + others
            # another node failed recently: only it moves, to the end
            assert lb.candidate_order(names, key, first, {others[0]}) == [first, others[1], others[0]]
            assert lb.candidate_order(names, key, first, set(names)) == [first] + others


def test_durations_in_seconds() -> None:
    assert lb.duration_seconds("10s") == 10 and lb.duration_seconds("500ms") == 0.5 and lb.duration_seconds("1m") == 60


def test_hash_is_crc32_rendezvous_and_moves_only_the_leaving_nodes_keys() -> None:
    names = [n for n, _ in NODES]
    keys = [f"doc-{i}" for i in range(300)]
    before = {k: lb.hash_node(names, k) for k in keys}
    assert before["doc-0"] == max(names, key=lambda n: zlib.crc32(f"{n}\0doc-0".encode()))
    assert set(before.values()) == set(names)  # every node gets documents
    after = {k: lb.hash_node(["ds1", "ds3"], k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "ds2" for k in moved)


def test_lua_string_escapes_everything_that_could_end_the_literal() -> None:
    text = lb.lua_string('p"a]]s\\w\nrd\x00é')
    assert text.startswith('"') and text.endswith('"')
    inner = text[1:-1]
    assert '"' not in inner and "\n" not in inner
    assert "\\034" in inner and "\\092" in inner and "\\010" in inner and "\\000" in inner


@pytest.mark.skipif(shutil.which("luajit") is None, reason="luajit not installed here (the lab compiles the Lua on the LBs)")
def test_lua_string_round_trips_through_lua(tmp_path: Path) -> None:
    value = 'p"a]]s\\w\nrd\x00'
    script = tmp_path / "t.lua"
    script.write_text(f"io.write({lb.lua_string(value)})")
    out = subprocess.run(["luajit", str(script)], capture_output=True, timeout=10).stdout
    assert out == value.encode()


def test_default_priorities_descend_in_inventory_order(lab_like) -> None:
    group = [lab_like["lb1"], lab_like["lb2"]]
    assert lb.default_priority(lab_like["lb1"], group) == 150
    assert lb.default_priority(lab_like["lb2"], group) == 140


# --- inputs ----------------------------------------------------------------------------


def test_lab_like_inputs_are_valid(lab_like) -> None:
    assert lb.input_problems(lab_like["lb1"]) == []


@pytest.mark.parametrize("field, value, expected", [
    ("lb_vip", "198.18.10.100", "lb_vip"),
    ("lb_vip", None, "lb_vip"),
    ("front_address", "198.18.1.11", "outside the VIP's network"),
    ("front_address", "nope", "front_address"),
    ("lb_vrrp_router_id", 300, "lb_vrrp_router_id"),
    ("lb_vrrp_advert_int", "fast", "lb_vrrp_advert_int"),
    ("lb_vrrp_priority", 255, "lb_vrrp_priority"),
    ("lb_read_timeout", "a minute", "lb_read_timeout"),
    ("lb_client_max_body_size", "100 MB", "lb_client_max_body_size"),
    ("lb_tls_certificate", "/nonexistent/front.crt", "lb_tls_certificate"),
])
def test_bad_input_is_refused_naming_host_field_and_fix(lab_like, field, value, expected) -> None:
    lab_like["lb1"].data[field] = value
    problems = lb.input_problems(lab_like["lb1"])
    assert any(expected in p and "fix:" in p for p in problems), problems


def test_a_key_that_does_not_match_the_certificate_is_refused(lab_like, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    crt, key = _cert(tmp_path / "x", other_key=True)
    lab_like["lb1"].data.update(lb_tls_certificate=str(crt), lb_tls_key=str(key))
    assert any("does not match" in p for p in lb.input_problems(lab_like["lb1"]))


def test_an_expired_certificate_is_refused(lab_like, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    crt, key = _cert(tmp_path / "old", days=-1)
    lab_like["lb1"].data.update(lb_tls_certificate=str(crt), lb_tls_key=str(key))
    assert any("expired" in p for p in lb.input_problems(lab_like["lb1"]))


def test_missing_redis_password_is_refused(lab_like) -> None:
    lab_like["lb1"].data["secrets"] = {}
    assert any("redis_password" in p for p in lb.input_problems(lab_like["lb1"]))


# --- templates -------------------------------------------------------------------------


def test_nginx_template_shard_and_all_upstreams_and_front_door_rules(lab_like) -> None:
    text = render("loadbalancer/lb-nginx.conf.j2", lb.nginx_vars(lab_like["lb1"], lb.CANDIDATE_DIR))
    shard = text.split("upstream ds_shard {")[1].split("\n  }")[0]
    assert "balancer_by_lua_block { ooha_shard.balance() }" in shard
    every = text.split("upstream ds_all {")[1].split("}")[0]
    assert "least_conn;" in every
    for _, address in NODES:
        assert f"server {address}:80 max_fails=1 fail_timeout=10s;" in every
    assert "lua_shared_dict ooha_down" in text
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in text
    assert not [line for line in text.splitlines() if "non_idempotent" in line and not line.strip().startswith("#")]
    assert "client_max_body_size 100m;" in text and "proxy_read_timeout 75s;" in text
    assert "location /internal/ { return 403; }" in text and "location /info/ { return 403; }" in text
    for header in ("X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "Upgrade"):
        assert f"proxy_set_header {header}" in text
    for field in ("$upstream_addr", "$upstream_status", "$request_time", "$upstream_response_time",
                  "$upstream_connect_time", "$shard_key"):
        assert field in text
    assert f"ssl_certificate {lb.CANDIDATE_DIR}/front.crt;" in text
    assert f'lua_package_path "{lb.CANDIDATE_DIR}/?.lua;;";' in text
    assert "return 301 https://" in text
    plain = text.split("listen 80 default_server;")[1].split("\n  server {")[0]
    head = plain.split("location")[0]  # server level: a 301 logs them without warnings
    assert 'set $shard_key "";' in head and 'set $shard_node "";' in head
    health = plain.split("location = /healthcheck {")[1].split("}")[0]
    assert "proxy_http_version 1.1;" in health and 'proxy_set_header Connection "";' in health
    assert "redis_password" not in text and "p\\034" not in text  # the password only in the Lua


def test_lua_template_holds_nodes_and_an_escaped_password(lab_like) -> None:
    text = render("loadbalancer/ooha_shard.lua.j2", lb.nginx_vars(lab_like["lb1"], lb.CONF_DIR))
    assert '{ name = "ds2", host = "198.18.2.21", port = 80 },' in text
    assert "local FAIL_TIMEOUT = 10.0" in text
    assert "local TIMEOUT_MS = 1500" in text  # a loaded machine's Redis must not look absent
    assert 'local REDIS_PASSWORD = "p\\034a]]s\\092w\\010rd"' in text
    assert "local TTL = 86400" in text and 'local PREFIX = "ooha:shard:"' in text


@pytest.mark.skipif(shutil.which("luajit") is None, reason="luajit not installed here (the lab compiles the Lua on the LBs)")
def test_lua_template_compiles(lab_like, tmp_path: Path) -> None:
    path = tmp_path / "ooha_shard.lua"
    path.write_text(render("loadbalancer/ooha_shard.lua.j2", lb.nginx_vars(lab_like["lb1"], lb.CONF_DIR)))
    assert subprocess.run(["luajit", "-bl", str(path)], capture_output=True, timeout=10).returncode == 0


def test_keepalived_template_unicast_peers_vip_and_track_script(lab_like) -> None:
    text = render("loadbalancer/keepalived.conf.j2", lb.keepalived_vars(lab_like["lb2"], "eth1"))
    assert "unicast_src_ip 198.18.10.12" in text
    assert "198.18.10.11" in text.split("unicast_peer {")[1].split("}")[0]
    assert "198.18.10.100/24 dev eth1" in text
    assert "priority 140" in text and "advert_int 0.5" in text and "version 3" in text
    assert "nopreempt" in text and "state BACKUP" in text and "chk_nginx" in text
    script = text.split("vrrp_script chk_nginx {")[1].split("}")[0]
    assert "--max-time 3 " in script and "interval 2\n" in script and "timeout 4\n" in script
    assert "fall 3\n" in script and "rise 2\n" in script  # slow handshakes must not move the VIP


# --- facts and the report --------------------------------------------------------------


def test_upstreams_parser_reads_servers_and_backups() -> None:
    lines = [
        "upstream ds_ds1 {", "  zone ds_ds1 64k;", "  server 198.18.1.21:80 max_fails=1 fail_timeout=10s;",
        "  server 198.18.2.21:80 backup max_fails=1;", "  keepalive 16;", "}",
        "upstream ds_all { # comment", "  least_conn;", "  server 198.18.3.21:80;", "}",
        "server {", "  listen 443 ssl;", "}",
    ]
    assert parse_upstreams(lines) == {
        "ds_ds1": [{"address": "198.18.1.21:80", "backup": False}, {"address": "198.18.2.21:80", "backup": True}],
        "ds_all": [{"address": "198.18.3.21:80", "backup": False}],
    }


def test_config_test_parser() -> None:
    assert parse_config_test(["nginx: configuration file /etc/nginx/nginx.conf test is successful", "rc=0"]) == {"ok": True, "message": ""}
    bad = parse_config_test(['nginx: [emerg] invalid value "TLSv9" in /etc/nginx/nginx.conf:80', "nginx: configuration file test failed", "rc=1"])
    assert not bad["ok"] and "TLSv9" in bad["message"]


def test_ip_addr_and_probe_parsers() -> None:
    addrs = parse_ip_addr(["23: eth1    inet 198.18.10.11/24 brd 198.18.10.255 scope global eth1\\",
                           "23: eth1    inet 198.18.10.100/24 scope global secondary eth1\\"])
    assert lb.interface_of(addrs, "198.18.10.11") == "eth1"
    assert any(a["address"] == "198.18.10.100/24" for a in addrs)
    assert parse_probe(["true", "code=200"]) == {"status": 200, "body": "true"}
    assert parse_probe(["code=000"]) == {"status": 0, "body": ""}


@pytest.mark.parametrize("error, cause", [
    ('connect() failed (111: Connection refused) while connecting to upstream, upstream: "http://198.18.1.21:80/healthcheck"', "upstream refused"),
    ("ds9.example could not be resolved (3: Host not found)", "name not resolved"),
    ("connect() failed (113: No route to host) while connecting to upstream", "node unreachable"),
    ("upstream timed out (110: Connection timed out) while connecting to upstream", "node unreachable"),
])
def test_502_diagnosis_names_the_cause_with_the_log_line(error: str, cause: str) -> None:
    text = diagnose_502(['1.2.3.4 [t] "GET /healthcheck HTTP/1.1" 502 150'], ["2026/12/02 [error] 1#1: *1 " + error])
    assert text.startswith(cause) and error in text


def test_502_on_the_example_is_the_example_being_off() -> None:
    access = ['1.2.3.4 [t] "GET /example/ HTTP/2.0" 502 150 shard="" route=ds_all upstream="198.18.1.21:80" ustatus="502"']
    assert diagnose_502(access, []).startswith("example off")


def test_front_door_line_names_the_vip_holder(lab_like, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lb, "_VIP_HOLDERS", {"lb1": False, "lb2": True})
    assert lb.front_door_line() == "front door: https://198.18.10.100/ (VIP on lb2)"
    monkeypatch.setattr(lb, "_VIP_HOLDERS", {"lb1": True, "lb2": True})
    assert "split brain" in lb.front_door_line()
