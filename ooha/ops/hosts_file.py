"""/etc/hosts entries with one owner per line: ``hosts_entries``.

Several layers need names in /etc/hosts (RabbitMQ's peers, pgBackRest's S3 endpoint).
Each layer is an *owner*: its lines end with the marker ``# onlyoffice-ha <owner>`` and
this operation only ever touches the lines carrying its own marker; every other line
(the system's, Docker's, another owner's) is kept as it is, where it is.

Order-stable, so two owners never fight: the owner's lines are compared with the wanted
entries in sequence (address and names, whitespace-insensitive); when they differ the
owner's lines are replaced by the wanted ones AT THE PLACE of its first line (appended at
the end only when it has none yet).  Another owner's lines never move relative to the
rest, so its own check still passes.  (The earlier code dropped its lines and appended
them at the end, and a second owner appended after it: each run moved the other one's
lines, the cause of the non-idempotent rerun after a cold run.)

Written in place (``printf ... > path``), never replaced with ``mv``: a container's
/etc/hosts is a bind mount that cannot be replaced, only rewritten (pyinfra's
files.line/files.block use ``sed -i``/``mv``).

prepare vs execute: pyinfra runs the body at prepare and again at execute, each time
reading the file with the ``FileContents`` fact; the command written at execute is built
from the file as it is then (after the operations before it on this host), so another
owner's lines written earlier in the same run are kept.

``entry_line`` is the exact line the operation writes, for boot units that must re-add an
entry after a container's engine rewrote /etc/hosts (templates/pgbackrest/
pgbackrest-s3-hosts.service.j2): the unit and the deploy write the same text, so a deploy
after a restart finds the entry as it wants it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.exceptions import OperationValueError
from pyinfra.facts.files import FileContents

HOSTS_FILE = "/etc/hosts"
MARKER = "# onlyoffice-ha"

_OWNER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ADDRESS = re.compile(r"^[0-9A-Fa-f.:]+(%[A-Za-z0-9_.-]+)?$")  # IPv4/IPv6 (zone); one field, no '#'
_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")

Entry = tuple[str, tuple[str, ...]]
Entries = Mapping[str, str] | Iterable[tuple[str, str | Sequence[str]]]


def owner_tag(owner: str) -> str:
    """``# onlyoffice-ha <owner>``: the marker that ends each of the owner's lines."""
    if not _OWNER.match(owner):
        raise OperationValueError(f"hosts owner {owner!r}: lower-case letters, digits, '-', '_' or '.'")
    return f"{MARKER} {owner}"


def normalise(entries: Entries) -> list[Entry]:
    """The wanted entries as ``[(address, (name, ...)), ...]``, in a stable order.

    A mapping is ``{name: address}`` (one name per line, sorted by name); an iterable is
    ``(address, name or [names])`` pairs, kept in the order given.
    """
    if isinstance(entries, Mapping):
        pairs: list[tuple[str, str | Sequence[str]]] = [(address, name) for name, address in sorted(entries.items())]
    else:
        pairs = list(entries)
    wanted = []
    for address, names in pairs:
        names = (names,) if isinstance(names, str) else tuple(names)
        if not _ADDRESS.match(str(address)):
            raise OperationValueError(f"hosts entry {names}: {address!r} is not an address")
        if not names or not all(_NAME.match(str(name)) for name in names):
            raise OperationValueError(f"hosts entry {address}: {names!r} are not host names")
        wanted.append((str(address), tuple(str(name) for name in names)))
    return wanted


def entry_line(address: str, names: str | Sequence[str], owner: str) -> str:
    """The exact line written for one entry: ``ADDRESS NAME...  # onlyoffice-ha OWNER``."""
    (address, names), = normalise([(address, names)])
    return f"{address} {' '.join(names)}  {owner_tag(owner)}"


def _owned(line: str, tag: str) -> Entry | None:
    """(address, names) of one of the owner's lines, None for any other line."""
    stripped = line.rstrip()
    if not stripped.endswith(tag):
        return None
    fields = stripped[: -len(tag)].split()
    return (fields[0], tuple(fields[1:])) if fields else ("", ())


def plan(current: list[str], entries: Entries, owner: str, adopt: Iterable[str] = ()) -> list[str] | None:
    """The file's new lines, or None when the owner's lines already are the wanted ones.

    ``adopt``: exact untagged lines this owner wrote before it had a marker; they are taken
    over (replaced, in place) rather than left as duplicates.
    """
    tag = owner_tag(owner)
    wanted = normalise(entries)
    legacy = {line.strip() for line in adopt}
    mine = [index for index, line in enumerate(current) if _owned(line, tag) is not None or line.strip() in legacy]
    if [_owned(current[index], tag) for index in mine] == wanted:
        return None
    at = mine[0] if mine else len(current)
    kept = [line for index, line in enumerate(current) if index not in set(mine)]
    block = [entry_line(address, names, owner) for address, names in wanted]
    return kept[:at] + block + kept[at:]


@operation()
def hosts_entries(entries: Entries, owner: str, path: str = HOSTS_FILE, adopt: Iterable[str] = ()):
    """The lines of ``owner`` in ``path`` (/etc/hosts) are exactly ``entries``; nothing else changes.

    + entries: ``{name: address}`` (sorted by name) or ``[(address, name or [names]), ...]``
      (in that order); empty: the owner's lines are removed
    + owner: short name (``rabbitmq``); marks the owner's lines ``# onlyoffice-ha <owner>``
    + path: the hosts file (a temp file in tests)
    + adopt: exact untagged lines this owner wrote in an earlier version, taken over in place

    Order-stable and idempotent with several owners (module docstring): the owner's lines
    stay where they are, other lines are never touched, and nothing is yielded when the
    owner's lines are already right.  Rewrites the file in place (bind mounts).

    **Example:**

    .. code:: python

        hosts_entries(
            name="Peers in /etc/hosts",
            entries={"data1": "198.18.20.21", "data2": "198.18.21.21"},
            owner="rabbitmq",
        )
        hosts_entries(
            name="svc1 resolves to 198.18.20.10",
            entries=[("198.18.20.10", "svc1")],
            owner="pgbackrest",
            adopt=["198.18.20.10 svc1"],
        )
    """
    current = host.get_fact(FileContents, path=path) or []
    lines = plan(current, entries, owner, adopt)
    if lines is None:
        host.noop(f"{path} has the {len(normalise(entries))} {owner} entries")
        return
    if not lines:
        yield StringCommand(":", ">", QuoteString(path))
        return
    yield StringCommand("printf", "'%s\\n'", *[QuoteString(line) for line in lines], ">", QuoteString(path))
