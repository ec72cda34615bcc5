"""A configuration that goes live only once its candidate passed the service's own check.

``validated_config`` is one pyinfra operation for the sequence HAProxy, nginx and keepalived
share (ooha/layers/endpoints.py, ooha/layers/loadbalancer.py):

1. render every file of the configuration to its *candidate* path (pyinfra's own
   ``files.template._inner`` / ``files.put._inner``: same sha1 change detection, chown, chmod);
2. when a candidate or a live file is about to change, run the check (``haproxy -c -f
   {path}``, ``nginx -t -c {path}``, ``keepalived --config-test -f {path}``) on the
   candidate; a rejected candidate is moved aside to ``rejected`` (for inspection; the next
   run then writes and checks it again) and the operation fails with ``invalid <label>
   configuration, live one unchanged: ...`` on stderr, before any live file is written;
3. write the live files;
4. when a live file changed: reload (never restart: open sessions stay) the service, if it
   is running (a service not started yet, keepalived on a first run, reads its file when the
   layer's "running and enabled" operation starts it).

prepare vs execute: the body runs at prepare and again at execute, reading the candidate's
and the live file's state (sha1, mode, owner) each time; it yields nothing when every
candidate and live file is already right, so a rerun changes nothing.  Commands run in the
order yielded, and a failing check stops the operation: the live files are written only
after the check passed in this very run.

Files that hold secrets (``private=True``: haproxy.cfg, the shard Lua, the TLS key) go
through ooha/ops/private_files.py's ``without_diff``: ``--diff`` never prints them.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.exceptions import OperationValueError
from pyinfra.operations import files

from ooha.ops.private_files import without_diff


@dataclass(frozen=True)
class ConfigFile:
    """One file of a validated configuration.

    ``src``: a Jinja2 template (``template=True``, rendered with ``data``; the candidate with
    ``candidate_data`` when given, for trees whose files name each other by path) or a
    local file uploaded as is.  ``dest``: the live path; ``candidate``: where it is written
    and checked first.  ``private``: holds a secret (never diffed).
    """

    src: str
    dest: str
    candidate: str
    user: str = "root"
    group: str = "root"
    mode: str = "644"
    template: bool = True
    private: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)
    candidate_data: Mapping[str, Any] | None = field(default=None, repr=False)
    jinja_env_kwargs: Mapping[str, Any] | None = field(default=None, repr=False)


def _write(config_file: ConfigFile, candidate: bool) -> list[Any]:
    """The commands pyinfra's files.template/files.put yield for one file (empty: already right)."""
    dest = config_file.candidate if candidate else config_file.dest
    owner = dict(user=config_file.user, group=config_file.group, mode=config_file.mode)
    if config_file.template:
        data = config_file.data if not candidate or config_file.candidate_data is None else config_file.candidate_data
        jinja = dict(config_file.jinja_env_kwargs) if config_file.jinja_env_kwargs is not None else None
        commands = files.template._inner(src=config_file.src, dest=dest, jinja_env_kwargs=jinja, **owner, **dict(data))
    else:
        commands = files.put._inner(src=config_file.src, dest=dest, **owner)
    return list(without_diff(commands) if config_file.private else commands)


def check_command(validate: str, candidate: str, rejected: str, message: str) -> StringCommand:
    """``{ <validate on candidate>; } || { mv candidate rejected; echo message >&2; exit 1; }``."""
    return StringCommand(
        "{", validate.format(path=shlex.quote(candidate)), ";", "}", "||",
        "{", "mv", "-f", QuoteString(candidate), QuoteString(rejected), ";",
        "echo", QuoteString(message), ">&2", ";", "exit", "1", ";", "}",
    )


def reload_command(service: str) -> StringCommand:
    """Reload ``service`` if it is running (a stopped one reads its file when it starts)."""
    unit = QuoteString(service)
    return StringCommand("if", "systemctl", "is-active", "--quiet", unit, ";", "then",
                         "systemctl", "reload", unit, ";", "fi")


@operation()
def validated_config(
    config_files: Sequence[ConfigFile],
    validate: str,
    label: str,
    service: str | None = None,
    rejected: str | None = None,
    hint: str | None = None,
):
    """Write ``config_files`` live only after ``validate`` accepted their candidates; reload on change.

    + config_files: the files of the configuration (``ConfigFile``); the first is the one
      ``validate`` checks (``{path}`` is its candidate path, shell-quoted)
    + validate: shell command run on the host, e.g. ``"haproxy -c -q -f {path}"``
    + label: names the configuration in the error, ``invalid <label> configuration, live one unchanged``
    + service: systemd unit reloaded (if running) when a live file changed; None: no reload
    + rejected: where a rejected first candidate is moved (default ``<candidate>.rejected``)
    + hint: what the error tells the operator to run (default ``validate`` on ``rejected``)

    Yields nothing when every candidate and live file is already right.  A broken candidate
    never goes live: the check fails the operation before any live file is written.

    **Example:**

    .. code:: python

        validated_config(
            name="HAProxy configuration",
            config_files=[ConfigFile(
                src="templates/endpoints/haproxy.cfg.j2", dest="/etc/haproxy/haproxy.cfg",
                candidate="/etc/haproxy/haproxy.cfg.candidate", group="haproxy", mode="640",
                private=True, data={"proxies": proxies},
            )],
            validate="haproxy -c -q -f {path}",
            label="HAProxy",
            service="haproxy.service",
            rejected="/etc/haproxy/haproxy.cfg.rejected",
        )
    """
    if not config_files:
        raise OperationValueError("validated_config: no files")
    main = config_files[0]
    rejected = rejected or f"{main.candidate}.rejected"
    candidates = [command for config_file in config_files for command in _write(config_file, candidate=True)]
    # The live files' state is read now, before the candidates are written: they are other paths.
    live = [command for config_file in config_files for command in _write(config_file, candidate=False)]
    if not candidates and not live:
        host.noop(f"{label} configuration {main.dest} is live and valid")
        return
    yield from candidates
    hint = hint or validate.format(path=rejected)
    yield check_command(validate, main.candidate, rejected, f"invalid {label} configuration, live one unchanged: {hint}")
    if live:
        yield from live
        if service:
            yield reload_command(service)
