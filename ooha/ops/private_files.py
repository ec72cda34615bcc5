"""files.put / files.template for files that hold secrets: never print their content.

Why a custom operation: with ``pyinfra --diff`` (``state.config.DIFF``) pyinfra's
``files.put`` logs the whole new file ("Will create") or a line diff against the remote
file ("Will modify", read with the ``FileContents`` fact), and ``files.template`` hands
its rendered output to ``files.put``.  For Patroni's config, private keys, password
files, the Erlang cookie, Redis/Sentinel configs and haproxy.cfg that is a secret on the
operator's terminal and in CI logs.  pyinfra has no per-operation switch for that, so
these operations run pyinfra's own ``files.put._inner`` / ``files.template._inner``
(same upload, chown/chmod, sha1 change detection, idempotence) with ``DIFF`` off.

Why the flag is switched per step of the delegated generator, not around the whole of
it: ``put`` reads ``state.config.DIFF`` in its body, sometimes before its first yield
(file exists, no directory to create), sometimes after one (``create_remote_dir``), and
the command generator is suspended at each yield while the command runs; pyinfra may
also drop it after the first yield (prepare's change check).  ``DIFF`` is therefore off
exactly while the delegated code runs (every ``next()``) and back on while this
generator is suspended, so other operations keep their diffs and an abandoned generator
leaves nothing switched off.  Hosts run in gevent greenlets that switch inside fact
reads (SSH I/O), so another host can enter the same step while one is inside it: a
depth counter turns ``DIFF`` off on the first entry and restores it on the last exit.
The only effect of an overlap is that an ordinary operation running in that window
(``--no-wait``) loses its diff: it fails towards printing less, never more.

What still shows: the operation name and the remote path.  The "mode"/"chown" lines of a
diff go too (same flag).  ``-vvv``/``--debug`` name the upload's local path or
``<_io.StringIO object ...>`` and the remote file's sha1sum, never the content
(tests/unit/test_private_files.py runs the CLI with ``--diff -vvv --debug``).

``mode`` defaults to ``"600"``: a file with a secret is private unless the caller says
otherwise (for example 0640 for a service group that must read it).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any, Generator, Iterator

from pyinfra import state
from pyinfra.api import operation
from pyinfra.operations import files

PRIVATE_MODE = "600"

_depth = 0
_saved: tuple[Any, bool] | None = None


@contextmanager
def _diff_off() -> Iterator[None]:
    """``state.config.DIFF = False`` while inside; restored by the outermost exit."""
    global _depth, _saved
    if _depth == 0:
        config = state.config
        _saved = (config, bool(config.DIFF))
        config.DIFF = False
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            config, diff = _saved
            config.DIFF = diff
            _saved = None


def without_diff(commands: Generator[Any, None, None]) -> Generator[Any, None, None]:
    """Yield ``commands``' commands, running each of its steps with ``DIFF`` off."""
    try:
        while True:
            with _diff_off():
                try:
                    command = next(commands)
                except StopIteration:
                    return
            yield command
    finally:
        with _diff_off():
            commands.close()


@operation()
def private_put(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: int | str | bool | None = PRIVATE_MODE,
    add_deploy_dir: bool = True,
    create_remote_dir: bool = True,
    force: bool = False,
    assume_exists: bool = False,
    atime: datetime | float | int | str | bool | None = None,
    mtime: datetime | float | int | str | bool | None = None,
):
    """``files.put`` for a file that holds a secret: never prints its content (mode 0600 default)."""
    yield from without_diff(
        files.put._inner(
            src=src, dest=dest, user=user, group=group, mode=mode, add_deploy_dir=add_deploy_dir,
            create_remote_dir=create_remote_dir, force=force, assume_exists=assume_exists, atime=atime, mtime=mtime,
        )
    )


@operation()
def private_template(
    src: str | IO[Any],
    dest: str,
    user: str | None = None,
    group: str | None = None,
    mode: int | str | None = PRIVATE_MODE,
    create_remote_dir: bool = True,
    jinja_env_kwargs: dict[str, Any] | None = None,
    **data: Any,
):
    """``files.template`` for a file that holds a secret: never prints its content (mode 0600 default)."""
    yield from without_diff(
        files.template._inner(
            src=src, dest=dest, user=user, group=group, mode=mode, create_remote_dir=create_remote_dir,
            jinja_env_kwargs=jinja_env_kwargs, **data,
        )
    )
