"""The lab's own apt repository on svc1: a package in two versions, so an upgrade is really available.

Host patching (issue 12) needs hosts with a pending upgrade that the lab controls (Debian's
archive moves on its own schedule): ``ooha-lab-canary`` 1.0 and 1.1, built here with
``dpkg-deb`` (no network), in a flat repository signed with the lab's own OpenPGP key and
served by svc1's nginx on port 80 at ``http://<svc1>/ooha-lab/``.  Port 80 on purpose: the
hosts' apt goes through the apt cache (apt-cacher-ng on :3142, which forwards only to port 80
by default), so the lab repository is fetched the way every other one is.

- 1.0 does nothing but exist (``/usr/share/ooha-lab-canary/version``);
- 1.1's postinst asks for a reboot the way Debian's hooks do: it creates
  ``/run/reboot-required`` and adds its name to ``/run/reboot-required.pkgs`` (read by
  ``ooha.rollout.hostgates.parse_reboot_required``); a reboot clears /run (a tmpfs), as on a VM.

A host gets the source with ``python -m lab canary HOST... [--version 1.0]`` (the key and a
sources entry, then the package at that version over the console) and loses it with
``--remove``; ``apt-get -s upgrade`` there then lists ``Inst ooha-lab-canary [1.0] (1.1 ...)``.

Built once per state dir (``.lab/apt/``: the signing key and the repository tree, rebuilt only
when the package definitions change) and copied to svc1 only when its InRelease differs: a warm
``up`` costs two ``cat``s over docker exec.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable

from lab import state
from lab.errors import LabError
from lab.hosts import exec_out

Say = Callable[[str], None]
PACKAGE = "ooha-lab-canary"
URL_PATH = "ooha-lab"
REPO_PORT = 80
SERVE_DIR = "/srv/ooha-apt"
KEY_NAME = "ooha-lab.asc"
SOURCE_FILE = "/etc/apt/sources.list.d/ooha-lab.list"
KEYRING = f"/etc/apt/keyrings/{KEY_NAME}"
NGINX_CONF_PATH = "/etc/nginx/conf.d/ooha-apt.conf"
NGINX_CONF = f"""# Written by python -m lab up: the lab's own apt repository (lab/aptrepo.py), plain HTTP on
# port {REPO_PORT} (signed Release; apt-cacher-ng forwards to port 80 only).
server {{
    listen {REPO_PORT};
    location /{URL_PATH}/ {{
        alias {SERVE_DIR}/;
        autoindex on;
    }}
}}
"""
REBOOT_POSTINST = f"""#!/bin/sh
# Asks for a reboot as Debian's packages do (a kernel, libc): the flag file and its name in .pkgs.
set -e
if [ "$1" = configure ]; then
    touch /run/reboot-required
    grep -qx {PACKAGE} /run/reboot-required.pkgs 2>/dev/null || echo {PACKAGE} >> /run/reboot-required.pkgs
fi
exit 0
"""
SOURCE_DATE_EPOCH = "1764547200"  # 2025-12-01: fixed file dates, so a rebuild makes the same .debs


@dataclass(frozen=True)
class Version:
    """One version of the canary package and whether its postinst asks for a reboot."""

    version: str
    reboot: bool
    what: str


VERSIONS = (Version("1.0", False, "the version a drill installs first"),
            Version("1.1", True, "the pending upgrade; its postinst asks for a reboot"))


def repo_dir() -> Path:
    return state.state_dir() / "apt" / "repo"


def gnupg_dir() -> Path:
    return state.state_dir() / "apt" / "gnupg"


def source_line(svc_address: str) -> str:
    """The sources.list entry of the lab repository (flat: ``./``), verified with the lab key."""
    return f"deb [signed-by={KEYRING}] http://{svc_address}/{URL_PATH}/ ./"


def control(v: Version) -> str:
    return (f"Package: {PACKAGE}\nVersion: {v.version}\nArchitecture: all\nMaintainer: ooha lab <lab@ooha.invalid>\n"
            f"Section: misc\nPriority: optional\nDescription: lab canary package, {v.what}\n"
            f" Built by python -m lab (lab/aptrepo.py) so that host patching has a real upgrade to apply.\n")


def spec() -> str:
    """What the repository is built from: a change rebuilds it."""
    return json.dumps({"control": [control(v) for v in VERSIONS], "postinst": REBOOT_POSTINST,
                       "reboot": [v.reboot for v in VERSIONS], "epoch": SOURCE_DATE_EPOCH})


def _run(cmd: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise LabError(f"{what} failed (`{' '.join(cmd[:3])} ...`): {(result.stderr or result.stdout).strip()[-300:]}")
    return result


def build_deb(v: Version, out_dir: Path) -> Path:
    """``dpkg-deb --build`` one version into out_dir; return the .deb's path."""
    with tempfile.TemporaryDirectory(prefix="ooha-canary-") as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(control(v))
        if v.reboot:
            (root / "DEBIAN" / "postinst").write_text(REBOOT_POSTINST)
            (root / "DEBIAN" / "postinst").chmod(0o755)
        doc = root / "usr" / "share" / PACKAGE
        doc.mkdir(parents=True)
        (doc / "version").write_text(v.version + "\n")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or path.name == "postinst" else 0o644)
        deb = out_dir / f"{PACKAGE}_{v.version}_all.deb"
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], f"building {deb.name}",
             env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    return deb


def packages_entry(deb: Path) -> str:
    """The deb's paragraph of a Packages index (its control fields, then where and what it is)."""
    fields = _run(["dpkg-deb", "-f", str(deb)], f"reading {deb.name}").stdout.rstrip("\n")
    data = deb.read_bytes()
    return (f"{fields}\nFilename: ./{deb.name}\nSize: {len(data)}\nMD5sum: {hashlib.md5(data).hexdigest()}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n")


def release(packages: bytes, date: str) -> str:
    """A flat repository's Release: who it is and the Packages index's hashes."""
    size = len(packages)
    return (f"Origin: ooha-lab\nLabel: ooha-lab\nSuite: ooha-lab\nCodename: ooha-lab\nDate: {date}\n"
            f"Description: the lab's own packages (lab/aptrepo.py)\n"
            f"MD5Sum:\n {hashlib.md5(packages).hexdigest()} {size} Packages\n"
            f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {size} Packages\n")


def _gpg(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run(["gpg", "--homedir", str(gnupg_dir()), "--batch", "--quiet", "--pinentry-mode", "loopback",
                 "--passphrase", "", *args], f"gpg {args[0]}", input=stdin)


def _ensure_gpg() -> None:
    """gpg on this machine (Debian's `gpg` package) signs the repository; install it when missing."""
    if shutil.which("gpg") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "gpg"], capture_output=True, check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which("gpg") is None:
        raise LabError("gpg is missing and could not be installed; run `apt-get install -y gpg`")


def _ensure_key() -> None:
    """The lab's repository signing key (ed25519, no passphrase: it signs a lab repository only)."""
    home = gnupg_dir()
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    if _gpg("--list-secret-keys", "--with-colons").stdout.strip():
        return
    _gpg("--quick-gen-key", "ooha lab apt repository <lab@ooha.invalid>", "ed25519", "sign", "never")


def build(say: Say = lambda _line: None) -> Path:
    """Build (or keep) the signed repository tree in .lab/apt/repo; return its path."""
    repo = repo_dir()
    marker = repo / ".spec"
    if marker.exists() and marker.read_text() == spec() and (repo / "InRelease").exists():
        return repo
    t0 = time.monotonic()
    _ensure_gpg()
    _ensure_key()
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    try:
        debs = [build_deb(v, repo) for v in VERSIONS]
        packages = "\n".join(packages_entry(deb) for deb in debs).encode()
        (repo / "Packages").write_bytes(packages)
        (repo / "Release").write_text(release(packages, formatdate(usegmt=True)))
        _gpg("--yes", "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release"))
        _gpg("--yes", "--armor", "--detach-sign", "-o", str(repo / "Release.gpg"), str(repo / "Release"))
        (repo / KEY_NAME).write_text(_gpg("--armor", "--export").stdout)
    finally:
        # gpg started an agent for this homedir: a lab process must not outlive the command.
        subprocess.run(["gpgconf", "--homedir", str(gnupg_dir()), "--kill", "gpg-agent"], capture_output=True, check=False)
    marker.write_text(spec())
    say(f"built the lab apt repository ({PACKAGE} {', '.join(v.version for v in VERSIONS)}) "
        f"({time.monotonic() - t0:.1f}s)")
    return repo


def _tar(repo: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(repo.iterdir()):
            if path.name.startswith("."):
                continue
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buf.getvalue()


def publish(container: Any, say: Say = lambda _line: None) -> bool:
    """Build if needed and serve the repository from svc1 (nginx on :80); True when svc1 changed."""
    repo = build(say)
    changed = False
    current = container.exec_run(["cat", f"{SERVE_DIR}/InRelease"], demux=True)
    if current.exit_code != 0 or (current.output[0] or b"") != (repo / "InRelease").read_bytes():
        exec_out(container, ["sh", "-c", f"rm -rf {SERVE_DIR} && mkdir -p {SERVE_DIR}"])
        if not container.put_archive(SERVE_DIR, _tar(repo)):
            raise LabError(f"could not copy the lab apt repository into {container.name}")
        changed = True
    wanted = NGINX_CONF.encode()
    conf = container.exec_run(["cat", NGINX_CONF_PATH], demux=True)
    if conf.exit_code != 0 or (conf.output[0] or b"") != wanted:
        _write(container, NGINX_CONF_PATH, wanted)
        _check(container, ["nginx", "-t", "-q"], "checking the nginx configuration")
        _check(container, ["systemctl", "reload-or-restart", "nginx.service"], "reloading nginx")
        changed = True
    _wait_http(container)
    return changed


def _write(container: Any, path: str, content: bytes) -> None:
    directory, name = path.rsplit("/", 1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(content))
    if not container.put_archive(directory, buf.getvalue()):
        raise LabError(f"could not write {path} into {container.name}")


def _check(container: Any, cmd: list[str], what: str) -> None:
    rc, out = exec_out(container, cmd)
    if rc != 0:
        raise LabError(f"{container.name}: {what} failed (rc={rc}): {out.strip()[-300:]}")


def _wait_http(container: Any, deadline_s: float = 20.0) -> None:
    """Poll until nginx serves the repository's InRelease on svc1 itself."""
    end = time.monotonic() + deadline_s
    url = f"http://127.0.0.1:{REPO_PORT}/{URL_PATH}/InRelease"
    while True:
        rc, out = exec_out(container, ["curl", "-fsS", "-o", "/dev/null", "-m", "3", url])
        if rc == 0:
            return
        if time.monotonic() > end:
            raise LabError(f"{container.name}: {url} does not answer ({out.strip()[-200:]}); "
                           f"see `docker exec {container.name} journalctl -u nginx`")
        time.sleep(0.3)


def enable_script(svc_address: str) -> str:
    """Shell (as root) that writes the sources entry (the key is in place already) and updates
    the lab source's index only (the other sources' lists are left as they are)."""
    line = source_line(svc_address)
    return (f"set -e; printf '%s\\n' {shlex.quote(line)} > {SOURCE_FILE}; "
            f"apt-get update -qq -o Dir::Etc::sourcelist={SOURCE_FILE} -o Dir::Etc::sourceparts=- "
            f"-o APT::Get::List-Cleanup=0")


def install_script(version: str) -> str:
    """Shell (as root) installing the canary at exactly ``version`` (a downgrade allowed)."""
    return (f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "
            f"{PACKAGE}={shlex.quote(version)}")


REMOVE_SCRIPT = (f"set -e; DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq {PACKAGE} >/dev/null 2>&1 || true; "
                 f"rm -f {SOURCE_FILE} {KEYRING}; "
                 f"rm -rf /var/lib/apt/lists/*ooha-lab* /var/cache/apt/archives/{PACKAGE}_*")
"""Shell (as root): the canary, the source and its key gone (the reboot flag, if any, stays: a
reboot the package asked for is still owed)."""


def check_version(version: str | None) -> None:
    """Refuse a version the repository does not have (before anything is touched)."""
    if version is not None and version not in {v.version for v in VERSIONS}:
        raise LabError(f"{PACKAGE} has versions {', '.join(v.version for v in VERSIONS)}, not {version!r}")


def services_host(topo: Any) -> Any:
    """The topology's services host (svc1), which serves the repository."""
    svc = next((h for h in topo.hosts.values() if "services" in h.roles), None)
    if svc is None:
        raise LabError("the topology has no services host to serve the lab apt repository")
    return svc


def canary(cli: Any, topo: Any, names: list[str], version: str | None, remove: bool) -> list[str]:
    """On each named host (over docker exec, the console): add the lab source and install the
    canary at ``version``, or with ``remove`` take both away; return one line per host."""
    from lab import hosts

    svc = services_host(topo)
    check_version(version)
    key = (build() / KEY_NAME).read_bytes()
    lines = []
    for name in names:
        host = topo.host(name)
        if host.name == svc.name:
            raise LabError(f"{name} serves the repository; name the lab hosts to patch")
        container = hosts.get_container(cli, host)
        if container is None or container.status != "running":
            raise LabError(f"{name} is not running; `python -m lab start {name}` first")
        if remove:
            _check(container, ["sh", "-c", REMOVE_SCRIPT], f"removing {PACKAGE} from {name}")
            lines.append(f"{name}: {PACKAGE} and the lab source removed")
            continue
        _check(container, ["install", "-d", "-m", "0755", "/etc/apt/keyrings"], f"making /etc/apt/keyrings on {name}")
        _write(container, KEYRING, key)
        _check(container, ["sh", "-c", enable_script(svc.address)], f"adding the lab source on {name}")
        if version is not None:
            _check(container, ["sh", "-c", install_script(version)], f"installing {PACKAGE}={version} on {name}")
        lines.append(f"{name}: lab source {source_line(svc.address)}"
                     + (f"; {PACKAGE} {version} installed" if version else ""))
    return lines
