"""The firewall as the kernel enforces it: the port-scan drill in miniature, without the lab.

A throwaway user + network namespace plays one host (data1 or lb1): the host's rendered ruleset is
loaded there with the real ``nft -f``, a listener answers on every probed TCP port, and a second
namespace behind a veth pair plays the rest of the network, holding one address per tier (a DS
host, an LB, another data host, an admin address, an outsider).  From each address the probe
connects to each port; the open/closed answer must equal the matrix's ``allows`` — every allowed
port open, every other one silently dropped (a timeout, never a refusal: something listens on
every port, so only the firewall can close it).  nft, unshare, nsenter and ip are REQUIRED.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import sys
from pathlib import Path

import pytest

from ooha.layers import firewall as fw
from ooha.layers.monitoring import members_of
from tests.unit.test_firewall import LAB_ADMIN, OUTSIDER, in_netns, lab_hosts, member

LISTEN = r"""
import socket, sys, threading
ports = [int(p) for p in sys.argv[2:]]
socks = []
for port in ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); socks.append(s)
def serve(s):
    while True:
        c, _ = s.accept(); c.close()
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
open(sys.argv[1], "w").write("ready")
threading.Event().wait()
"""

PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
dest, sources, ports = sys.argv[1], sys.argv[2].split(","), [int(p) for p in sys.argv[3].split(",")]
def probe(pair):
    source, port = pair
    s = socket.socket(); s.settimeout(1.0); s.bind((source, 0))
    try:
        s.connect((dest, port)); return source, port, "open"
    except socket.timeout:
        return source, port, "dropped"
    except ConnectionRefusedError:
        return source, port, "refused"
    finally:
        s.close()
with ThreadPoolExecutor(64) as pool:
    results = list(pool.map(probe, [(s, p) for s in sources for p in ports]))
print(json.dumps([list(r) for r in results]))
"""

SETUP = r"""
set -e
nft -f "$RULESET"
ip link set lo up
ip link add v0 type veth peer name v1
unshare -n sleep 120 >/dev/null 2>&1 &
NET=$!
trap 'kill $NET $LISTENER 2>/dev/null || true' EXIT
LISTENER=
# The peer namespace exists once the child has unshared (poll with a deadline).
i=0; while [ "$(readlink /proc/$NET/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do
  i=$((i+1)); [ $i -lt 100 ] || { echo "peer namespace never appeared" >&2; exit 1; }; sleep 0.05; done
ip link set v1 netns $NET
ip addr add "$DEST/32" dev v0
ip link set v0 up
ip route add default dev v0
nsenter -t $NET -n sh -c 'ip link set lo up; ip link set v1 up;
  for a in $(echo "$SOURCES" | tr , " "); do ip addr add "$a/32" dev v1; done;
  ip route add "$DEST/32" dev v1; ip route add default dev v1 src "${SOURCES%%,*}"'
"$PY" "$LISTEN" "$READY" $(echo "$PORTS" | tr , " ") >/dev/null 2>&1 &
LISTENER=$!
i=0; while [ ! -f "$READY" ]; do i=$((i+1)); [ $i -lt 200 ] || { echo "listener never ready" >&2; exit 1; }; sleep 0.05; done
nsenter -t $NET -n "$PY" "$PROBE" "$DEST" "$SOURCES" "$PORTS"
"""


def tool(name: str) -> None:
    if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
        pytest.fail(f"{name} is missing (nftables, iproute2, util-linux)")


@pytest.mark.parametrize("dest", ["data1", "lb1"])
def test_the_kernel_opens_exactly_the_matrix(dest: str, tmp_path: Path) -> None:
    for name in ("nft", "ip", "nsenter", "unshare"):
        tool(name)
    hosts = lab_hosts(tmp_path)
    members = members_of(hosts)
    target = member(members, dest)
    sources = {name: member(members, name).address for name in ("ds1", "lb2", "data2")}
    sources |= {"admin": LAB_ADMIN[0], "outsider": OUTSIDER}
    rule_ports = {r.port for r in fw.host_rules(fw.matrix(hosts[0], members), target) if r.proto == "tcp"}
    # Every port the scan found, the matrix's own, and some nobody may reach.
    ports = sorted(rule_ports | {22, 80, 443, 2379, 2380, 4369, 5432, 5672, 6379, 8008, 15672, 25672, 26379, 9100})
    ruleset = tmp_path / f"{dest}.nft"
    ruleset.write_text(fw.render_ruleset(hosts[0], members, target, hosts))
    (tmp_path / "listen.py").write_text(LISTEN)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"RULESET": str(ruleset), "DEST": target.address, "SOURCES": ",".join(sources.values()),
           "PORTS": ",".join(map(str, ports)), "PY": sys.executable, "LISTEN": str(tmp_path / "listen.py"),
           "PROBE": str(tmp_path / "probe.py"), "READY": str(tmp_path / "ready")}
    result = in_netns(SETUP, env=env)
    assert result.returncode == 0, result.stderr
    seen = {(source, port): state for source, port, state in json.loads(result.stdout.strip().splitlines()[-1])}
    assert len(seen) == len(sources) * len(ports)
    assert "refused" not in seen.values()  # something listens on every port: only the firewall closes one
    wrong = []
    for name, address in sources.items():
        for port in ports:
            expected = "open" if fw.allows(hosts[0], members, target, address, "tcp", port, hosts) else "dropped"
            if seen[(address, port)] != expected:
                wrong.append(f"{name} ({address}) -> {dest}:{port}: {seen[(address, port)]}, matrix says {expected}")
    assert not wrong, "\n".join(wrong)
    opened = {(a, p) for (a, p), state in seen.items() if state == "open"}
    assert (sources["admin"], 22) in opened and (sources["outsider"], 22) not in opened
    if dest == "data1":
        assert (sources["ds1"], 5432) in opened and (sources["lb2"], 5432) not in opened
        assert (sources["data2"], 2380) in opened and (sources["ds1"], 2380) not in opened
    else:
        assert (sources["outsider"], 443) in opened and (sources["outsider"], 80) in opened


DS_SETUP = r"""
set -e
nft -f "$RULESET"
# Docker's publishing of the DS container's port 80 on the private address (its DNAT rule).
nft -f - <<NFT
table ip fake_docker_nat {
  chain prerouting { type nat hook prerouting priority dstnat; ip daddr $DEST tcp dport $DS_PORT dnat to $CONTAINER:80; }
}
NFT
echo 1 >/proc/sys/net/ipv4/ip_forward
ip link set lo up
unshare -n sleep 120 >/dev/null 2>&1 & NET=$!
unshare -n sleep 120 >/dev/null 2>&1 & BOX=$!
trap 'kill $NET $BOX $L1 $L2 2>/dev/null || true' EXIT
L1=; L2=
for pid in $NET $BOX; do
  i=0; while [ "$(readlink /proc/$pid/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "namespace never appeared" >&2; exit 1; }; sleep 0.05; done
done
# The network (other hosts) behind v0, the container behind the bridge b0.
ip link add v0 type veth peer name v1; ip link set v1 netns $NET
ip addr add "$DEST/32" dev v0; ip link set v0 up; ip route add default dev v0
nsenter -t $NET -n sh -c 'ip link set lo up; ip link set v1 up;
  for a in $(echo "$SOURCES" | tr , " "); do ip addr add "$a/32" dev v1; done;
  ip route add "$DEST/32" dev v1; ip route add default dev v1 src "${SOURCES%%,*}"'
ip link add b0 type veth peer name b1; ip link set b1 netns $BOX
ip addr add "$GATEWAY/24" dev b0; ip link set b0 up
nsenter -t $BOX -n sh -c 'ip link set lo up; ip link set b1 up; ip addr add "$CONTAINER/24" dev b1;
  ip route add default via "$GATEWAY"'
"$PY" "$LISTEN" "$READY.host" $(echo "$PORTS" | tr , " ") >/dev/null 2>&1 & L1=$!
nsenter -t $BOX -n "$PY" "$LISTEN" "$READY.box" 80 >/dev/null 2>&1 & L2=$!
i=0; while [ ! -f "$READY.host" ] || [ ! -f "$READY.box" ]; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "listeners never ready" >&2; exit 1; }; sleep 0.05; done
echo "network=$(nsenter -t $NET -n "$PY" "$PROBE" "$DEST" "$SOURCES" "$PORTS")"
echo "container=$(nsenter -t $BOX -n "$PY" "$PROBE" "$GATEWAY" "$CONTAINER" "$PORTS")"
"""


def test_ds_http_only_from_the_lbs_through_dockers_dnat_and_the_container_reaches_its_endpoints(tmp_path: Path) -> None:
    """ds1: Docker publishes the DS port by DNAT (forward hook, which the input chain never sees):
    only the LBs get through; the container (on the bridge) reaches its HAProxy's endpoint ports at
    the bridge gateway and nothing else of its host."""
    for name in ("nft", "ip", "nsenter", "unshare"):
        tool(name)
    hosts = lab_hosts(tmp_path)
    members = members_of(hosts)
    target = member(members, "ds1")
    sources = {"lb1": member(members, "lb1").address, "lb2": member(members, "lb2").address,
               "ds2": member(members, "ds2").address, "data1": member(members, "data1").address,
               "admin": LAB_ADMIN[0], "outsider": OUTSIDER}
    ds_port = int(fw.setting(hosts[0], "ds_http_port"))
    endpoint_ports = {int(fw.setting(hosts[0], k)) for k in ("endpoint_pg_primary_port", "endpoint_pg_replicas_port",
                                                          "endpoint_redis_port", "endpoint_amqp_port")}
    ports = sorted(endpoint_ports | {22, ds_port, 8404, 9100})
    bridge = fw.source_addresses(hosts[0], members, hosts)["docker_bridge"][0]
    first, second = list(ipaddress.ip_network(bridge).hosts())[:2]
    gateway, container = str(first), str(second)  # docker_bip's gateway, the DS container
    ruleset = tmp_path / "ds1.nft"
    ruleset.write_text(fw.render_ruleset(hosts[0], members, target, hosts))
    (tmp_path / "listen.py").write_text(LISTEN)
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"RULESET": str(ruleset), "DEST": target.address, "SOURCES": ",".join(sources.values()),
           "PORTS": ",".join(map(str, ports)), "PY": sys.executable, "LISTEN": str(tmp_path / "listen.py"),
           "PROBE": str(tmp_path / "probe.py"), "READY": str(tmp_path / "ready"), "DS_PORT": str(ds_port),
           "GATEWAY": gateway, "CONTAINER": container}
    result = in_netns(DS_SETUP, env=env)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    network = {(s, p): state for s, p, state in json.loads(lines["network"])}
    box = {p: state for _, p, state in json.loads(lines["container"])}
    assert "refused" not in network.values() and "refused" not in box.values()
    wrong = [f"{name} ({address}) -> ds1:{port}: {network[(address, port)]}"
             for name, address in sources.items() for port in ports
             if network[(address, port)] != ("open" if fw.allows(hosts[0], members, target, address, "tcp", port, hosts)
                                             else "dropped")]
    assert not wrong, "\n".join(wrong)
    assert {n for n, a in sources.items() if network[(a, ds_port)] == "open"} == {"lb1", "lb2"}
    assert network[(sources["admin"], 22)] == "open"
    assert {p for p, state in box.items() if state == "open"} == endpoint_ports
