"""Load the deployment's secrets from a YAML file kept outside the repository.

Secrets never live in an inventory or in git: the lab generates ``.lab/secrets.yml``,
production keeps ``$OOHA_SECRETS_FILE`` (default ``/etc/onlyoffice-ha/secrets.yml``).
The file must be private to its owner; a file group or other can read has probably
already leaked, so it is refused rather than used.  Error messages name paths and
keys, never values.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pyinfra.api.exceptions import PyinfraError

DEFAULT_SECRETS_FILE = "/etc/onlyoffice-ha/secrets.yml"
SECRETS_FILE_ENV = "OOHA_SECRETS_FILE"


class SecretsError(PyinfraError):
    """The secrets file is missing, unreadable, too open or not a mapping.

    A ``PyinfraError`` so that the pyinfra CLI prints the message cleanly and exits
    non-zero before connecting to any host.
    """


def production_secrets_path() -> Path:
    """Where production secrets live: ``$OOHA_SECRETS_FILE`` or the default path."""
    return Path(os.environ.get(SECRETS_FILE_ENV) or DEFAULT_SECRETS_FILE)


def check_private(path: Path) -> None:
    """Refuse a secrets file that group or other can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretsError(
            f"secrets file {path} does not exist; fix: create it (a YAML mapping, see "
            f"README.md 'Production') or point ${SECRETS_FILE_ENV} at it"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"secrets file {path} is readable by group/other (mode {stat.S_IMODE(mode):04o}); "
            f"fix: run `chmod 600 {path}`"
        )


def load_secrets(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the secrets mapping stored at ``path`` after checking its mode.

    Values are returned as read; callers wrap them in ``HiddenValue`` when they put
    them in commands.  Nothing here prints a value.
    """
    file_path = Path(path)
    check_private(file_path)
    try:
        loaded = yaml.safe_load(file_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # The YAML error text may quote the file's content: only say where it is.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SecretsError(f"secrets file {file_path} is not valid YAML{where}; fix: write a YAML mapping of name: value") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise SecretsError(f"secrets file {file_path} is not a mapping; fix: write a YAML mapping of name: value")
    return {str(key): value for key, value in loaded.items()}


def load_production_secrets() -> dict[str, Any]:
    """Load the production secrets file (see ``production_secrets_path``)."""
    return load_secrets(production_secrets_path())
