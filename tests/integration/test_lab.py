"""The lab itself, through real SSH, real iptables and the real services on svc1."""
from __future__ import annotations

import os
import re
import socket
import stat
import struct
import time
from pathlib import Path

import boto3
import botocore.exceptions
import paramiko
import pytest
import requests
import yaml

from ooha.preflight import REQUIRED_SECRETS as MAIN_JOB_SECRETS
from lab.client import (connect, explain, host_entry, lab_cli, lab_lock, lab_state, output_of, reaches,
                        run_pyinfra, ssh)

pytestmark = pytest.mark.lab

# Every secret the main job requires, plus the ones the lab's own services use.
REQUIRED_SECRETS = [*MAIN_JOB_SECRETS, "registry_username", "registry_password",
                    "s3_access_key", "s3_secret_key", "pgbackrest_cipher_pass"]


def _secrets(lab: dict) -> dict:
    return yaml.safe_load(Path(lab["secrets_file"]).read_text())


def test_status_lists_the_reference_topology(lab: dict) -> None:
    hosts = lab["hosts"]
    assert len(hosts) >= 9
    assert len({h["az"] for h in hosts if "services" not in h["roles"]}) >= 3
    assert all(h["state"] == "running" for h in hosts), [(h["name"], h["state"]) for h in hosts]
    roles = {r for h in hosts for r in h["roles"]}
    assert {"lb", "docs", "postgres", "etcd", "redis", "rabbitmq", "services"} <= roles
    assert Path(lab["ca_cert"]).is_file()
    assert Path(lab["state_dir"], "state.json").is_file()


def test_ssh_to_every_host_checks_its_host_key(lab: dict) -> None:
    for entry in lab["hosts"]:
        rc, out = ssh(lab, entry["name"], "hostname && sudo -n id -u")
        assert rc == 0 and out.split() == [entry["name"], "0"], (entry["name"], out)


def test_an_unknown_host_key_is_rejected(lab: dict, tmp_path: Path) -> None:
    # Same key, empty known_hosts: RejectPolicy must refuse, proving checking is on.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    client = paramiko.SSHClient()
    client.load_host_keys(str(empty))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(host_entry(lab, "ds1")["address"], username="admin", key_filename=lab["ssh_key"],
                       timeout=10, look_for_keys=False, allow_agent=False)


def test_root_login_is_refused(lab: dict) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        connect(lab, "ds1", user="root")


def test_state_files_are_private(lab: dict) -> None:
    for path in (lab["secrets_file"], lab["ssh_key"], str(Path(lab["ca_cert"]).with_name("ca.key"))):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    secrets = _secrets(lab)
    assert set(REQUIRED_SECRETS) <= set(secrets)
    cookie = secrets["rabbitmq_erlang_cookie"]
    assert len(cookie) == 32 and cookie.isalpha() and cookie.isupper()


def test_namespaced_sysctls_are_writable_kernel_wide_ones_are_not(lab: dict) -> None:
    rc, out = ssh(lab, "ds2", "sudo sysctl -w net.core.somaxconn=4096")
    assert rc == 0, out
    rc, out = ssh(lab, "ds2", "sudo sysctl -w vm.swappiness=1")
    assert rc != 0 and "permission denied" in out.lower(), out


def test_peers_see_real_source_addresses(lab: dict) -> None:
    # ds1 (az1) holds a TCP connection to data2 (az2); data2's sshd must see 198.18.1.21, not a gateway.
    ds1, data2 = host_entry(lab, "ds1")["address"], host_entry(lab, "data2")["address"]
    client = connect(lab, "ds1")
    try:
        client.exec_command(f"timeout 8 bash -c 'exec 3<>/dev/tcp/{data2}/22; sleep 7'")
        deadline, peers = time.monotonic() + 6, ""
        while time.monotonic() < deadline and ds1 not in peers:
            _, peers = ssh(lab, "data2", "ss -Htn state established '( sport = :22 )'")
            time.sleep(0.3)
        assert f"{ds1}:" in peers, peers
    finally:
        client.close()


def test_cut_isolates_an_az_and_heal_restores_it(lab: dict) -> None:
    addr = {h["name"]: h["address"] for h in lab["hosts"]}
    assert reaches(lab, "ds1", addr["data2"])
    cut = lab_cli("cut", "az1", timeout=60)
    assert cut.returncode == 0, cut.stderr
    try:
        assert not reaches(lab, "ds1", addr["data2"])       # across the cut
        assert not reaches(lab, "data2", addr["ds1"])       # both directions
        assert not reaches(lab, "lb2", host_entry(lab, "lb1")["addresses"]["front"])  # front too
        assert reaches(lab, "ds2", addr["data3"])           # other AZs untouched
        assert reaches(lab, "ds1", addr["data1"])           # inside the cut AZ
        assert reaches(lab, "ds1", addr["svc1"], 5000)      # regional services stay reachable
        assert "az1" in lab_cli("status", timeout=60).stdout.split("cut AZs:")[1].splitlines()[0]
    finally:
        heal = lab_cli("heal", "az1", timeout=60)
    assert heal.returncode == 0, heal.stderr
    assert reaches(lab, "ds1", addr["data2"])
    assert lab_cli("heal", timeout=60).stdout.strip() == "nothing was cut"


def test_stop_and_start_a_host(lab: dict) -> None:
    stop = lab_cli("stop", "ds3", timeout=120)
    try:
        assert stop.returncode == 0, stop.stderr
        assert not reaches(lab, "ds2", host_entry(lab, "ds3")["address"])
        status = lab_cli("status", "--json", timeout=60)
        assert '"state": "exited"' in status.stdout
    finally:
        start = lab_cli("start", "ds3", timeout=300)
    assert start.returncode == 0, start.stderr
    rc, out = ssh(lab, "ds3", "systemctl is-system-running")
    assert out.strip() in ("running", "degraded"), out


def test_bad_arguments_fail_with_one_clear_line(lab: dict) -> None:
    result = lab_cli("cut", "az9", timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "choose one of az1, az2, az3" in result.stderr


def test_registry_requires_auth_over_tls_and_holds_both_standins(lab: dict) -> None:
    secrets = _secrets(lab)
    base = f"https://{lab['services']['registry']}/v2/"
    assert requests.get(base, verify=lab["ca_cert"], timeout=10).status_code == 401
    auth = (secrets["registry_username"], secrets["registry_password"])
    assert requests.get(base, verify=lab["ca_cert"], auth=auth, timeout=10).status_code == 200
    repo = lab["images"]["documentserver"]["repository"].split("/", 1)[1]
    tags = requests.get(f"{base}{repo}/tags/list", verify=lab["ca_cert"], auth=auth, timeout=10).json()["tags"]
    assert {"9.3.0.1", "9.3.1.2"} <= set(tags)
    assert {"9.3.0.1", "9.3.1.2"} <= set(lab["images"]["documentserver"]["tags"])


def test_s3_put_get_over_tls(lab: dict) -> None:
    secrets, svc = _secrets(lab), lab["services"]

    def client(access_key: str, secret_key: str):
        return boto3.client("s3", endpoint_url=svc["s3_endpoint"], region_name=svc["s3_region"],
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key, verify=lab["ca_cert"])

    s3 = client(secrets["s3_access_key"], secrets["s3_secret_key"])
    key = f"lab-test/{time.time_ns()}"
    s3.put_object(Bucket=svc["s3_bucket"], Key=key, Body=b"lab s3 round trip")
    assert s3.get_object(Bucket=svc["s3_bucket"], Key=key)["Body"].read() == b"lab s3 round trip"
    s3.delete_object(Bucket=svc["s3_bucket"], Key=key)
    with pytest.raises(botocore.exceptions.ClientError):
        client("NOTTHELABKEY", "x").list_buckets()


def test_apt_proxy_serves_a_repeat_download_from_cache(lab: dict) -> None:
    proxy = f"-o Acquire::http::Proxy={lab['services']['apt_proxy']}"
    rc, out = ssh(lab, "ds3", f"sudo apt-get {proxy} update -qq", timeout=300)
    assert rc == 0, out

    def counts() -> tuple[int, int]:
        _, log = ssh(lab, "svc1", "sudo grep '/hello_' /var/log/apt-cacher-ng/apt-cacher.log || true")
        lines = log.splitlines()
        return sum("|I|" in l for l in lines), sum("|O|" in l for l in lines)

    download = f"cd $(mktemp -d) && apt-get {proxy} download hello"
    assert ssh(lab, "ds3", download, timeout=300)[0] == 0
    fetched_before, served_before = counts()
    assert ssh(lab, "ds3", download, timeout=300)[0] == 0
    fetched_after, served_after = counts()
    assert served_after == served_before + 1      # served again...
    assert fetched_after == fetched_before        # ...without fetching from the archive: a hit


def test_ntp_server_answers(lab: dict) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    try:
        sock.sendto(b"\x1b" + 47 * b"\0", (lab["services"]["ntp_server"], 123))
        data, _ = sock.recvfrom(512)
    finally:
        sock.close()
    stratum, transmit = data[1], struct.unpack("!I", data[40:44])[0] - 2208988800
    assert stratum == 8
    assert abs(transmit - time.time()) < 5


def test_a_lab_from_another_state_dir_is_recognised_as_foreign(lab, tmp_path, monkeypatch) -> None:
    """`up` replaces, never adopts, containers whose host keys another state dir recorded."""
    from lab import core, engine, topology

    topo, cli = topology.load(), engine.client()
    assert core.foreign_containers(cli, topo) == []
    monkeypatch.setenv("OOHA_LAB_DIR", str(tmp_path))
    assert sorted(core.foreign_containers(cli, topo)) == sorted(h["container"] for h in lab["hosts"])


def _recorded_key(lab: dict, host: str) -> str | None:
    """The key the lab's known_hosts holds for host's address (``type base64``), or None."""
    address = host_entry(lab, host)["address"]
    for line in Path(lab["known_hosts"]).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and address in parts[0].split(","):
            return f"{parts[1]} {parts[2]}"
    return None


@pytest.mark.timeout(1800)
def test_recreate_gives_a_blank_host_with_new_host_keys_that_the_main_job_rebuilds(lab: dict) -> None:
    """`python -m lab recreate lb2`: same name and address, a new host key read over docker exec
    into known_hosts, SSH with RejectPolicy, nothing deployed left on it.  The main job then
    rebuilds it (in a finally, so the lab is left converged); it must succeed."""
    from lab import engine, hosts, topology

    name = "lb2"
    with lab_lock():
        try:
            old_key = _recorded_key(lab, name)
            result = lab_cli("recreate", name, timeout=600)
            assert result.returncode == 0, result.stderr
            address = host_entry(lab, name)["address"]
            assert result.stdout.startswith(f"recreated {name} ({address}) blank:"), result.stdout
            new_key = _recorded_key(lab, name)
            assert old_key and new_key and new_key != old_key
            assert new_key == hosts.host_key(engine.client(), topology.load().host(name))
            rc, out = ssh(lab, name, "hostname; for p in nginx keepalived haproxy chrony; do "
                                     "dpkg -s $p >/dev/null 2>&1 && echo installed $p; done; "
                                     "test -e /etc/onlyoffice-ha && echo left /etc/onlyoffice-ha; true")
            assert rc == 0 and out.split() == [name], out
            assert host_entry(lab_state(), name)["state"] == "running"
        finally:
            rebuild = run_pyinfra("-y", "inventories/lab.py", "deploys/ha.py", timeout=1200)
        assert rebuild.returncode == 0, explain(rebuild)
        assert re.search(r"validation: (\d+)/\1 checks OK", output_of(rebuild)), explain(rebuild)
