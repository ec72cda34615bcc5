"""The services host (svc1): the region's registry, S3 endpoint, apt cache and NTP server.

Packages come with the image (lab/images/services); `up` only configures them over
docker exec, idempotently: a file is written and its service restarted only when the
wanted content differs from what is there.
"""
from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

import boto3
import docker
from botocore.config import Config
from botocore.exceptions import ClientError

from lab import aptrepo, ca, registry as reg, state
from lab.errors import LabError
from lab.hosts import exec_out
from lab.topology import Host, Topology

Say = Callable[[str], None]
TLS_DIR = "/etc/ooha/tls"
REGISTRY_PORT = 5000
S3_PORT = 9000
APT_PORT = 3142
S3_BUCKET = "ooha-backups"
S3_REGION = "us-east-1"

REGISTRY_CONFIG = f"""# Written by python -m lab up. Private registry of the lab: TLS with the lab CA's cert, htpasswd (bcrypt).
version: 0.1
log:
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :{REGISTRY_PORT}
  tls:
    certificate: {TLS_DIR}/server.crt
    key: {TLS_DIR}/server.key
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: ooha-lab
    path: /etc/docker/registry/htpasswd
"""


def nginx_s3(access_key: str) -> str:
    """nginx in front of moto: TLS with the lab cert, and only requests signed with the lab's access key."""
    return f"""# Written by python -m lab up. TLS for the S3 endpoint; moto listens on 127.0.0.1:9001.
# moto does not check signatures: this gate admits only requests made with the lab's access key.
map $http_authorization $ooha_s3_header_ok {{
    default 0;
    "~Credential={access_key}/" 1;
}}
map $arg_X-Amz-Credential $ooha_s3_query_ok {{
    default 0;
    "~^{access_key}/" 1;
}}
server {{
    listen {S3_PORT} ssl;
    ssl_certificate {TLS_DIR}/server.crt;
    ssl_certificate_key {TLS_DIR}/server.key;
    client_max_body_size 0;
    proxy_request_buffering off;
    location / {{
        set $ooha_s3_ok "$ooha_s3_header_ok$ooha_s3_query_ok";
        if ($ooha_s3_ok = "00") {{ return 403; }}
        proxy_pass http://127.0.0.1:9001;
        proxy_set_header Host $http_host;
        proxy_http_version 1.1;
        proxy_read_timeout 300s;
    }}
}}
"""


def _put(container: Any, path: str, content: bytes, mode: int) -> bool:
    """Write a file into the container (as root) unless it already has exactly this content."""
    current = container.exec_run(["cat", path], demux=True)
    if current.exit_code == 0 and (current.output[0] or b"") == content:
        return False
    directory, name = path.rsplit("/", 1)
    exec_out(container, ["mkdir", "-p", directory])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), mode, int(time.time())
        tar.addfile(info, io.BytesIO(content))
    if not container.put_archive(directory, buf.getvalue()):
        raise LabError(f"could not write {path} into {container.name}")
    return True


def _run(container: Any, cmd: list[str], what: str) -> str:
    """Run a command in the container; a failure names what was being done."""
    rc, out = exec_out(container, cmd)
    if rc != 0:
        raise LabError(f"{container.name}: {what} failed (rc={rc}): {out.strip()[-300:]}")
    return out


def _ensure_service(container: Any, unit: str, changed: bool) -> None:
    """Enable the unit, restart it when its config changed, start it if it is not running."""
    _run(container, ["systemctl", "enable", "--quiet", unit], f"enabling {unit}")
    action = "restart" if changed else "start"
    _run(container, ["systemctl", action, unit], f"{action} {unit}")


def _wait_port(container: Any, port: int, deadline_s: float = 30.0) -> None:
    """Poll until something listens on port inside the container."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        rc, out = exec_out(container, ["ss", "-Hltn", f"sport = :{port}"])
        if rc == 0 and out.strip():
            return
        time.sleep(0.3)
    raise LabError(f"{container.name}: nothing listens on :{port} after {deadline_s:.0f}s; "
                   f"see `docker exec {container.name} journalctl -b`")


def _tls(container: Any, host: Host) -> bool:
    """Install the lab-signed server certificate; True when it changed."""
    crt, key = ca.ensure_server_cert(host.name, host.address)
    changed = _put(container, f"{TLS_DIR}/server.crt", crt.read_bytes(), 0o644)
    changed |= _put(container, f"{TLS_DIR}/server.key", key.read_bytes(), 0o640)
    # The registry runs as docker-registry, nginx's master as root: the key is root:docker-registry 0640.
    _run(container, ["chown", "root:docker-registry", f"{TLS_DIR}/server.key"], "owning the TLS key")
    return changed


def _registry(container: Any, secrets: dict[str, str], tls_changed: bool) -> None:
    """docker-registry on :5000 with TLS and bcrypt htpasswd auth."""
    changed = _put(container, "/etc/docker/registry/config.yml", REGISTRY_CONFIG.encode(), 0o644) or tls_changed
    user, password = secrets["registry_username"], secrets["registry_password"]
    # Password through a 0600 file and stdin, never on a command line (visible in ps).
    _put(container, "/root/.ooha-registry-pw", password.encode(), 0o600)
    try:
        rc, _ = exec_out(container, ["sh", "-c", 'htpasswd -iv /etc/docker/registry/htpasswd "$1" '
                                                 '< /root/.ooha-registry-pw >/dev/null 2>&1', "sh", user])
        if rc != 0:
            _run(container, ["sh", "-c", 'htpasswd -iBc /etc/docker/registry/htpasswd "$1" '
                                         '< /root/.ooha-registry-pw', "sh", user], "writing the registry htpasswd")
            changed = True
    finally:
        exec_out(container, ["rm", "-f", "/root/.ooha-registry-pw"])
    _run(container, ["sh", "-c", "chown root:docker-registry /etc/docker/registry/htpasswd && "
                                 "chmod 0640 /etc/docker/registry/htpasswd"], "protecting the htpasswd")
    _ensure_service(container, "docker-registry.service", changed)
    _wait_port(container, REGISTRY_PORT)


def _engine_trusts_registry(cli: docker.DockerClient, registry: str, secrets: dict[str, str]) -> None:
    """This machine's engine trusts the lab CA for the registry and logs in (SDK)."""
    certs = Path("/etc/docker/certs.d") / registry
    certs.mkdir(parents=True, exist_ok=True)
    wanted = (state.ca_dir() / "ca.crt").read_bytes()
    if not (certs / "ca.crt").exists() or (certs / "ca.crt").read_bytes() != wanted:
        (certs / "ca.crt").write_bytes(wanted)
    end = time.monotonic() + 30
    while True:
        try:
            cli.login(username=secrets["registry_username"], password=secrets["registry_password"],
                      registry=registry, reauth=True)
            return
        except docker.errors.APIError as exc:
            if time.monotonic() > end:
                raise LabError(f"docker login to {registry} fails: {exc.explanation}; "
                               f"see `docker exec ooha-svc1 journalctl -u docker-registry`") from None
            time.sleep(0.5)


def _s3(container: Any, secrets: dict[str, str], tls_changed: bool) -> None:
    """moto server (in-memory S3) behind nginx TLS on :9000."""
    changed = _put(container, "/etc/nginx/conf.d/ooha-s3.conf", nginx_s3(secrets["s3_access_key"]).encode(), 0o644)
    _run(container, ["nginx", "-t", "-q"], "checking the nginx configuration")
    _ensure_service(container, "ooha-s3.service", False)
    _ensure_service(container, "nginx.service", changed or tls_changed)
    _wait_port(container, 9001)
    _wait_port(container, S3_PORT)


CHRONY_DROPIN = b"""# Written by python -m lab up. A container lacks CAP_SYS_TIME; chronyd runs with -x
# (/etc/default/chrony) and only serves the clock, so the unit's capability condition is reset.
[Unit]
ConditionCapability=
"""


def _ntp(container: Any) -> None:
    """chrony serving this machine's clock to the lab (config from the image, drop-in here)."""
    changed = _put(container, "/etc/systemd/system/chrony.service.d/ooha.conf", CHRONY_DROPIN, 0o644)
    if changed:
        _run(container, ["systemctl", "daemon-reload"], "reloading systemd")
    _ensure_service(container, "chrony.service", changed)
    end = time.monotonic() + 20
    while exec_out(container, ["systemctl", "is-active", "chrony.service"])[1].strip() != "active":
        if time.monotonic() > end:
            raise LabError(f"{container.name}: chrony does not run; see `docker exec {container.name} journalctl -u chrony`")
        time.sleep(0.3)


def s3_client(address: str, secrets: dict[str, str]) -> Any:
    """A boto3 S3 client for the lab endpoint, verifying TLS with the lab CA."""
    return boto3.client("s3", endpoint_url=f"https://{address}:{S3_PORT}", region_name=S3_REGION,
                        aws_access_key_id=secrets["s3_access_key"], aws_secret_access_key=secrets["s3_secret_key"],
                        verify=str(state.ca_dir() / "ca.crt"),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                      connect_timeout=5, read_timeout=30))


def _bucket(address: str, secrets: dict[str, str]) -> None:
    """Create the backups bucket unless it exists (moto keeps it until its service restarts)."""
    s3 = s3_client(address, secrets)
    try:
        s3.head_bucket(Bucket=S3_BUCKET)
    except ClientError:
        s3.create_bucket(Bucket=S3_BUCKET)


def configure(cli: docker.DockerClient, topo: Topology, host: Host, secrets: dict[str, str], say: Say) -> None:
    """Configure registry, S3, apt cache, the lab apt repository and NTP on the services host; all idempotent."""
    t0 = time.monotonic()
    container = cli.containers.get(host.container)
    tls_changed = _tls(container, host)
    _registry(container, secrets, tls_changed)
    _engine_trusts_registry(cli, f"{host.address}:{REGISTRY_PORT}", secrets)
    _s3(container, secrets, tls_changed)
    _bucket(host.address, secrets)
    _ensure_service(container, "apt-cacher-ng.service", False)
    _wait_port(container, APT_PORT)
    aptrepo.publish(container, say)
    _ntp(container)
    say(f"services on {host.name} ({host.address}): registry :{REGISTRY_PORT}, S3 :{S3_PORT}, "
        f"apt cache :{APT_PORT}, lab apt repository :{aptrepo.REPO_PORT}/{aptrepo.URL_PATH}/, NTP "
        f"({time.monotonic() - t0:.1f}s)")


def push_standins(cli: docker.DockerClient, host: Host, secrets: dict[str, str], say: Say) -> None:
    """Build the Document Server stand-in versions (the deliberately broken one too) and push those the registry lacks."""
    registry = f"{host.address}:{REGISTRY_PORT}"
    have = reg.registry_tags(registry, secrets)
    missing = [(v, d) for v, d in reg.DS_VERSIONS if v not in have]
    if not missing:
        return
    try:
        from lab.standin import build_standin
    except ImportError as exc:
        say(f"skipping the Document Server stand-in: lab.standin is not importable ({exc})")
        return
    auth = {"username": secrets["registry_username"], "password": secrets["registry_password"]}
    for version, release_date in missing:
        t0 = time.monotonic()
        local = build_standin(cli, version, release_date, defect=reg.DS_BROKEN.get(version, ""))
        target = f"{registry}/{reg.DS_REPOSITORY}"
        cli.images.get(local).tag(target, tag=version)
        for line in cli.api.push(target, tag=version, auth_config=auth, stream=True, decode=True):
            if "error" in line:
                raise LabError(f"pushing {target}:{version} failed: {line['error']}")
        say(f"pushed {target}:{version} ({time.monotonic() - t0:.1f}s)")
