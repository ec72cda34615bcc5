"""The lab's state directory (.lab/): SSH key, known_hosts, secrets, state.json.

Everything here is git-ignored and private (0600): it is what a newcomer's machine
keeps between runs, so secrets are generated once and never regenerated.
"""
from __future__ import annotations

import json
import os
import secrets
import string
import threading
from collections.abc import Iterable
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parent.parent
ALNUM = string.ascii_letters + string.digits


def state_dir() -> Path:
    """$OOHA_LAB_DIR, default <repo>/.lab (absolute)."""
    return Path(os.environ.get("OOHA_LAB_DIR") or REPO / ".lab").resolve()


def ensure_state_dir() -> Path:
    """Create the state directory, private to root."""
    path = state_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def ssh_key_path() -> Path:
    """Private key of the lab's deploy user."""
    return state_dir() / "id_ed25519"


def known_hosts_path() -> Path:
    """known_hosts written from each container's own host key (never trust on first use)."""
    return state_dir() / "known_hosts"


def secrets_path() -> Path:
    """Generated secrets (YAML mapping, 0600)."""
    return state_dir() / "secrets.yml"


def ca_dir() -> Path:
    """Lab CA: ca.crt, ca.key, and the services host's certificate."""
    return state_dir() / "ca"


def state_json_path() -> Path:
    """What `status --json` printed last."""
    return state_dir() / "state.json"


def destroyed_path() -> Path:
    """Hosts `python -m lab destroy` removed, one name a line (status shows them as destroyed)."""
    return state_dir() / "destroyed"


_DESTROYED_LOCK = threading.Lock()


def destroyed_hosts() -> set[str]:
    """Names of the hosts destroyed and not created again since."""
    path = destroyed_path()
    return set(path.read_text().split()) if path.exists() else set()


def set_destroyed(names: Iterable[str], destroyed: bool = True) -> None:
    """Record hosts as destroyed (or created again); thread-safe, the file goes when it is empty."""
    with _DESTROYED_LOCK:
        current = destroyed_hosts()
        updated = current | set(names) if destroyed else current - set(names)
        if updated == current:
            return
        if updated:
            write_private(destroyed_path(), "".join(f"{name}\n" for name in sorted(updated)))
        else:
            destroyed_path().unlink(missing_ok=True)


def address_moves_path() -> Path:
    """Hosts `recreate --address` moved off their topology-file address (JSON, see address_moves)."""
    return state_dir() / "addresses.json"


def address_moves() -> dict[str, dict[str, str]]:
    """``{host: {"address": now, "original": the topology file's}}`` for every moved host.

    The lab's commands apply these over the topology file (lab/lifecycle.py lab_topology), so
    status, state.json and with it inventories/lab.py give the host's current address; the
    original is kept here so `recreate HOST --address ORIGINAL` is the way back.
    """
    path = address_moves_path()
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from lab.errors import LabError
        raise LabError(f"{path} is not valid JSON ({exc}); fix it, or delete it to put every host back "
                       "at its topology address (then `python -m lab recreate` the moved hosts)") from None
    return {str(name): {"address": str(v["address"]), "original": str(v["original"])} for name, v in loaded.items()}


def set_address_move(name: str, address: str, original: str) -> None:
    """Record host ``name`` at ``address`` (its topology address ``original``); back at the
    original, the record goes (and the file when it is empty)."""
    moves = address_moves()
    if address == original:
        moves.pop(name, None)
    else:
        moves[name] = {"address": address, "original": original}
    if moves:
        write_private(address_moves_path(), json.dumps(moves, indent=2, sort_keys=True) + "\n")
    else:
        address_moves_path().unlink(missing_ok=True)


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file created 0600 from the start (no window where others could read it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(path.with_suffix(path.suffix + ".tmp"), 0o600)
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)


def ensure_ssh_key() -> str:
    """Create the ed25519 key pair once; return the public key line."""
    key_path = ssh_key_path()
    pub_path = key_path.with_name("id_ed25519.pub")
    if not key_path.exists():
        key = Ed25519PrivateKey.generate()
        write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        pub_path.write_text(pub.decode() + " ooha-lab\n")
    os.chmod(key_path, 0o600)
    if not pub_path.exists():
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        pub_path.write_text(pub.decode() + " ooha-lab\n")
    return pub_path.read_text().strip()


def _token(length: int = 32, alphabet: str = ALNUM) -> str:
    """A random string safe in URLs, shell words and config files (no '-' to start an option)."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


#: Every secret the lab writes, with how to make it (keys required by the contract first).
SECRET_MAKERS = {
    "jwt_secret": lambda: _token(40),
    "secure_link_secret": lambda: _token(32),
    "postgres_superuser_password": lambda: _token(32),
    "postgres_replication_password": lambda: _token(32),
    "postgres_ds_password": lambda: _token(32),
    "redis_password": lambda: _token(32),
    "rabbitmq_password": lambda: _token(32),
    "rabbitmq_erlang_cookie": lambda: _token(32, string.ascii_uppercase),
    "patroni_rest_password": lambda: _token(32),
    "redis_sentinel_password": lambda: _token(32),
    "registry_username": lambda: "ooha" + _token(8, string.ascii_lowercase + string.digits),
    "registry_password": lambda: _token(32),
    "s3_access_key": lambda: "OOHA" + _token(16, string.ascii_uppercase + string.digits),
    "s3_secret_key": lambda: _token(40),
    "pgbackrest_cipher_pass": lambda: _token(40),
    "restic_password": lambda: _token(40),
}


def ensure_secrets() -> dict[str, str]:
    """Load .lab/secrets.yml, adding only missing keys; existing values are never regenerated."""
    path = secrets_path()
    current: dict[str, str] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            from lab.errors import LabError
            raise LabError(f"{path} is not a YAML mapping; fix it or move it away to regenerate")
        current = {str(k): str(v) for k, v in loaded.items()}
    missing = [k for k in SECRET_MAKERS if k not in current]
    if missing or not path.exists():
        for key in missing:
            current[key] = SECRET_MAKERS[key]()
        header = "# Generated by `python -m lab up`; never commit, never print. Mode 0600.\n"
        write_private(path, header + yaml.safe_dump(current, default_flow_style=False, sort_keys=False))
    os.chmod(path, 0o600)
    return current


def load_secrets() -> dict[str, str]:
    """The secrets file as a dict (empty when the lab was never brought up)."""
    path = secrets_path()
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()} if path.exists() else {}
