"""The preflight through the real pyinfra CLI: every bad input is refused before any connection.

Each case starts from a copy of inventories/example.py whose hosts point at unroutable
addresses (198.19.254.0/23 only), a generated 0600 secrets file and temporary SSH key,
known_hosts and TLS files; it then makes ONE mistake and runs
``pyinfra INVENTORY deploys/<job>.py --dry`` from the repository root (so config.py and
its preflight hook load).  Every case must exit non-zero with one line naming the field
(and host) with a fix, print no traceback and no secret, and never say it is connecting.
The cases run in parallel threads: each is a separate pyinfra process of about a second.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets as pysecrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")

SECRET_KEYS = (
    "jwt_secret", "secure_link_secret", "postgres_superuser_password", "postgres_replication_password",
    "postgres_ds_password", "redis_password", "rabbitmq_password", "patroni_rest_password",
    "redis_sentinel_password", "s3_access_key", "s3_secret_key", "pgbackrest_cipher_pass", "restic_password",
)

# Example addresses (RFC 5737) -> unroutable benchmarking addresses (RFC 2544, 198.18.0.0/15).
ADDRESS_MAP = {"192.0.2.": "198.19.255.", "198.51.100.": "198.19.253.", "203.0.113.": "198.19.254."}


@dataclass(frozen=True)
class Case:
    """One mistake: inventory code appended, CLI args, secrets changed, files removed."""

    id: str
    field: str
    host: str = ""
    append: str = ""
    args: tuple[str, ...] = ()
    job: str = "ha.py"
    secrets: dict = field(default_factory=dict)
    drop_secrets: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    mode: int = 0o600
    group_data: str = ""
    """Written to group_data/docs.py next to the inventory (pyinfra merges it over the inventory's)."""


def _make_tls(directory: Path, name: str, days: int = 365) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "front.example.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _ssh_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())


SSH_KEY = _ssh_key()


def _inventory_text(files: dict[str, Path]) -> str:
    text = (REPO / "inventories" / "example.py").read_text(encoding="utf-8")
    for old, new in ADDRESS_MAP.items():
        text = text.replace(old, new)
    text = text.replace("~/.ssh/onlyoffice_ha_ed25519", str(files["key"]))
    text = text.replace("~/.ssh/known_hosts", str(files["known_hosts"]))
    text = text.replace("/etc/onlyoffice-ha/tls/front.crt", str(files["cert"]))
    text = text.replace("/etc/onlyoffice-ha/tls/front.key", str(files["tls_key"]))
    assert not re.search(r"\b(192\.0\.2|198\.51\.100|203\.0\.113)\.", text)
    return text


def _setup(base: Path, case: Case) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Write one case's files under ``base``; return (argv, env, secret values)."""
    base.mkdir(parents=True)
    files = {"key": base / "id_ed25519", "known_hosts": base / "known_hosts", "secrets": base / "secrets.yml",
             "s3_ca": base / "s3-ca.crt"}
    files["key"].write_bytes(SSH_KEY)
    files["key"].chmod(0o600)
    files["known_hosts"].write_text("")
    files["cert"], files["tls_key"] = _make_tls(base, "front")
    files["other_cert"], files["other_key"] = _make_tls(base, "other")
    files["s3_ca"].write_bytes(files["cert"].read_bytes())
    values = {key: f"S3CRET-{key}-{pysecrets.token_hex(8)}" for key in SECRET_KEYS}
    values["rabbitmq_erlang_cookie"] = "COOKIE" + pysecrets.token_hex(16)
    values.update(case.secrets)
    for key in case.drop_secrets:
        values.pop(key)
    files["secrets"].write_text(yaml.safe_dump(values))
    files["secrets"].chmod(case.mode)
    inventory = base / "inventory.py"
    append = case.append.format(**{k: str(v) for k, v in files.items()})
    inventory.write_text(_inventory_text(files) + "\n# --- the case's mistake ---\n" + append + "\n")
    if case.group_data:
        (base / "group_data").mkdir()
        (base / "group_data" / "docs.py").write_text(case.group_data + "\n")
    for name in case.remove:
        files[name].unlink()
    argv = [str(PYINFRA), "-y", "--dry", str(inventory), f"deploys/{case.job}", *case.args]
    env = {**os.environ, "OOHA_SECRETS_FILE": str(files["secrets"]), "OOHA_PREFLIGHT_ONLY": "1",
           "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"}
    return argv, env, values


D = "_GLOBAL_DATA"
H = "dict(_HOSTS)"  # host name -> its data dict (the same dicts the inventory uses)
RESTORE = ("--data", "restore_host=data1")

CASES: list[Case] = [
    Case("vip-without-prefix", "lb_vip", append=f'{D}["lb_vip"] = "198.19.254.100"'),
    Case("vip-not-an-address", "lb_vip", args=("--data", "lb_vip=front-door/24")),
    Case("docker-bip-inside-pools", "docker_address_pools[0]", "ds1", append=f'{D}["docker_bip"] = "10.201.7.1/24"'),
    Case("docker-bip-network-address", "docker_bip", "ds1", append=f'{D}["docker_bip"] = "10.200.0.0/24"'),
    Case("docker-source-unknown", "docker_source", "ds2", args=("--data", "docker_source=snap")),
    Case("ds-version-latest", "ds_version", "ds1", args=("--data", "ds_version=latest")),
    Case("ds-version-latest-in-group-data", "ds_version", "ds2", group_data='ds_version = "latest"'),
    Case("ds-edition-unknown", "ds_edition", "ds3", args=("--data", "ds_edition=enterprise")),
    Case("ds-digest-malformed", "ds_image_digest", "ds1", args=("--data", "ds_image_digest=sha256:abc")),
    Case("ds-memory-not-a-size", "ds_memory_limit", "ds1", args=("--data", "ds_memory_limit=lots")),
    Case("tls-certificate-missing", "lb_tls_certificate", remove=("cert",)),
    Case("tls-key-does-not-match", "lb_tls_key", append=f'{D}["lb_tls_key"] = "{{other_key}}"'),
    Case("ssh-key-missing", "ssh_key", remove=("key",)),
    Case("ssh-key-is-the-public-key", "ssh_key", append='for _d in ' + H + '.values(): _d["ssh_key"] = "{known_hosts}"'),
    Case("known-hosts-missing", "ssh_known_hosts_file", remove=("known_hosts",)),
    Case("host-keys-unchecked", "ssh_strict_host_key_checking", "lb1",
         append=f'{H}["lb1"]["ssh_strict_host_key_checking"] = "no"'),
    Case("unknown-layer", "layers", args=("--data", "layers=redis,reddis")),
    Case("secret-missing", "secrets.jwt_secret", drop_secrets=("jwt_secret",)),
    Case("secret-with-newline", "secrets.postgres_ds_password", secrets={"postgres_ds_password": "first\nsecond"}),
    Case("backup-secret-missing", "secrets.pgbackrest_cipher_pass", drop_secrets=("pgbackrest_cipher_pass",)),
    Case("erlang-cookie-too-short", "secrets.rabbitmq_erlang_cookie", secrets={"rabbitmq_erlang_cookie": "Tiny7"}),
    Case("registry-without-credentials", "secrets.registry_username", append=f'{D}["docker_registry"] = "registry.example.test:5000"'),
    Case("secrets-file-readable-by-others", "secrets file", mode=0o644),
    Case("duplicate-address", "ssh_hostname", "ds2",
         append=f'{H}["ds2"].update(ssh_hostname="198.19.255.21", private_address="198.19.255.21")'),
    Case("tier-in-one-az", "group docs", append='for _n in ("ds1", "ds2", "ds3"): ' + H + '[_n]["az"] = "eu-west-1a"'),
    Case("quorum-lost-with-one-az", "group etcd", append=f'{H}["data3"]["az"] = "eu-west-1a"'),
    Case("az-missing", "az", "data2", append=f'del {H}["data2"]["az"]'),
    Case("group-missing", "group rabbitmq", append="rabbitmq = []"),
    Case("private-address-not-ip", "private_address", "data1", append=f'{H}["data1"]["private_address"] = "data1.internal"'),
    Case("apt-proxy-not-a-url", "apt_proxy", args=("--data", "apt_proxy=cache.example.test:3142")),
    Case("ntp-servers-not-a-list", "ntp_servers", append=f'{D}["ntp_servers"] = "pool.ntp.org"'),
    Case("front-address-outside-vip-network", "front_address", "lb2", append=f'{H}["lb2"]["front_address"] = "198.19.200.12"'),
    Case("vrrp-router-id-out-of-range", "lb_vrrp_router_id", append=f'{D}["lb_vrrp_router_id"] = 300'),
    Case("endpoint-bind-not-ip", "endpoint_bind_addresses", append=f'{D}["endpoint_bind_addresses"] = ["localhost"]'),
    Case("s3-endpoint-not-https", "pgbackrest_s3_endpoint", "data1", args=("--data", "pgbackrest_s3_endpoint=ftp://s3.example.test")),
    Case("s3-uri-style-unknown", "pgbackrest_s3_uri_style", "data1", args=("--data", "pgbackrest_s3_uri_style=virtual")),
    Case("s3-ca-missing", "pgbackrest_s3_ca_cert", "data1",
         append=f'{D}["pgbackrest_s3_ca_cert"] = "{{s3_ca}}"', remove=("s3_ca",)),
    Case("filebackup-prefix-malformed", "filebackup_repository_prefix", "lb1",
         args=("--data", "filebackup_repository_prefix=https://s3.example.test/bucket")),
    Case("restore-time-not-iso", "restore_target_time", "data1", job="restore.py",
         args=(*RESTORE, "--data", "restore_target_time=yesterday")),
    Case("restore-time-without-zone", "restore_target_time", "data2", job="restore.py",
         args=("--data", "restore_target_time=2025-01-02T03:04:05")),
    Case("restore-force-not-bool", "restore_force", "data1", job="restore.py", args=("--data", "restore_force=maybe")),
    Case("restore-host-not-postgres", "restore_host", "data1", job="restore.py", args=("--data", "restore_host=ds1")),
    Case("backup-type-unknown", "backup_type", job="backup.py", args=("--data", "backup_type=weekly")),
    Case("restore-files-host-without-backups", "restore_host", job="restore_files.py", args=("--data", "restore_host=data1")),
    Case("restore-files-snapshot-malformed", "restore_snapshot", job="restore_files.py",
         args=("--data", "restore_host=ds1", "--data", "restore_snapshot=last-tuesday")),
    Case("patch-soak-not-a-number", "rollout_soak_seconds", job="patch.py",
         args=("--data", "ds_version=9.3.1.2", "--data", "rollout_soak_seconds=soon")),
    Case("patch-version-not-a-tag", "ds_version", "ds1", job="patch.py", args=("--data", "ds_version=:9.3.1.2")),
    Case("rollback-stale-bound-under-three-heartbeats", "rollout_lock_stale_seconds", job="rollback.py",
         args=("--data", "rollout_lock_stale_seconds=60")),
    Case("scale-without-a-node", "ds_retire/ds_join", job="scale.py"),
    Case("scale-retire-not-a-ds-host", "ds_retire", job="scale.py", args=("--data", "ds_retire=data1")),
    Case("scale-drain-bound-not-a-number", "ds_drain_seconds", job="scale.py",
         args=("--data", "ds_join=ds2", "--data", "ds_drain_seconds=long")),
]

VALID = [
    Case("valid-ha", ""),
    Case("valid-ha-subset", "", args=("--data", "layers=redis,endpoints")),
    Case("valid-restore", "", job="restore.py", args=RESTORE),
    Case("valid-backup", "", job="backup.py", args=("--data", "backup_type=diff")),
    Case("valid-restore-files", "", job="restore_files.py", args=("--data", "restore_host=lb2")),
    Case("valid-validate", "", job="validate.py"),
    Case("valid-patch", "", job="patch.py", args=("--data", "ds_version=9.3.1.2", "--data", "rollout_soak_seconds=30")),
    Case("valid-rollback", "", job="rollback.py"),
]


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    secrets: dict
    seconds: float


def _run(base: Path, case: Case) -> Outcome:
    import time

    argv, env, values = _setup(base / case.id, case)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return Outcome(done.returncode, done.stdout + done.stderr, values, time.monotonic() - started)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("preflight")
    everything = CASES + VALID
    with ThreadPoolExecutor(max_workers=max(4, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(lambda case: _run(base, case), everything))
    return {case.id: result for case, result in zip(everything, results)}


def _never_connected_nor_leaked(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.output, outcome.output
    assert "Connecting to hosts" not in outcome.output and "Connected" not in outcome.output, outcome.output
    for key, value in outcome.secrets.items():
        for part in str(value).splitlines():
            if len(part) >= 5:
                assert part not in outcome.output, f"secret {key} printed"


def test_there_are_at_least_30_distinct_bad_inputs() -> None:
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)
    assert len({(case.field, case.append, case.args, tuple(case.secrets), case.drop_secrets, case.remove, case.mode)
                for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_before_connecting(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.id]
    assert outcome.code != 0, outcome.output
    _never_connected_nor_leaked(outcome)
    lines = [line for line in outcome.output.splitlines() if f"{case.field}:" in line or f"{case.field} " in line]
    assert lines, f"no line names {case.field}:\n{outcome.output}"
    line = next((line for line in lines if "fix:" in line), "")
    assert line, f"the line naming {case.field} has no fix:\n{outcome.output}"
    if case.host:
        assert re.search(rf"(^|[\s,]){re.escape(case.host)}[,:]", line), f"{case.host} not named in: {line}"


@pytest.mark.parametrize("case", VALID, ids=[case.id for case in VALID])
def test_the_example_inventory_passes_the_preflight(outcomes: dict[str, Outcome], case: Case) -> None:
    outcome = outcomes[case.id]
    assert outcome.code == 0, outcome.output
    assert "preflight: OK" in outcome.output
    _never_connected_nor_leaked(outcome)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    case = Case("several", "", append=f'{D}["lb_vip"] = "198.19.254.100"', args=("--data", "ds_version=latest"),
                drop_secrets=("jwt_secret",), remove=("key",))
    outcome = _run(tmp_path, case)
    assert outcome.code != 0
    _never_connected_nor_leaked(outcome)
    for name in ("lb_vip:", "ds_version:", "secrets.jwt_secret:", "ssh_key:"):
        assert sum(name in line and "fix:" in line for line in outcome.output.splitlines()) == 1, (name, outcome.output)
