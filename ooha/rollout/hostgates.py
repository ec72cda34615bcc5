"""Host patching's observations and verdicts (issue 12): parsers of apt, dpkg and needrestart
output, the reboot decision, and the preflight's host gates.

Why pure: the driver runs the commands on the hosts (over the CLI's connected hosts, with
``LC_ALL=C`` so the texts and the numbers below are the untranslated C-locale ones) and hands
their stdout here; what counts as "needs a reboot", "enough disk" or "needs a human" is argued
about and tested against captured-style outputs, not in a lab.  As in ``ooha.rollout.gates``,
every refusal is a ``Problem`` (host, gate, what, fix), all at once, and an observation that
could not be made (None) is a refusal, never a pass.

Commands and the formats read (from their documentation and sources):

- ``/run/reboot-required`` (exists: the packages' postinst hooks asked for a reboot) and
  ``/run/reboot-required.pkgs`` (one package name per line, the ones that asked);
- ``needrestart -b`` (batch mode, needrestart's README.batch: ``NEEDRESTART-VER``, ``-KCUR``,
  ``-KEXP``, ``-KSTA`` kernel status 0 unknown / 1 no pending upgrade / 2 ABI-compatible upgrade
  pending / 3 version upgrade pending, ``-UCSTA`` microcode 0 unknown / 1 current / 2 obsolete,
  one ``-SVC:`` per service mapping deleted files, ``-CONT:`` containers, ``-SESS:`` sessions);
- ``apt-get -s upgrade`` (``Inst name [current] (candidate origin(s) [arch])`` per package,
  ``Remv``, the "kept back" list and the summary line) and ``apt list --upgradable``
  (``name/suites candidate arch [upgradable from: current]``);
- ``apt-get --assume-no upgrade`` for the sizes: the simulation (``-s``) ends before apt's
  download summary, the real command prints ``Need to get X[/Y] of archives.`` and
  ``After this operation, Z of additional disk space will be used.`` (or ``... will be freed.``)
  and answers its own question with no (``Abort.``, exit 1); run with ``--print-uris`` too
  (hoststeps.sizes_command): ``install --only-upgrade PKG`` of only the named packages asks no
  question, and without ``--print-uris`` it installs them (seen on the lab);
- ``apt-get update`` (exit 0 even when an index could not be fetched: ``Err:``/``W: Failed to
  fetch`` say so; exit 100 with ``E:`` lines otherwise);
- ``dpkg --audit`` (silent when the package database is sound; otherwise paragraphs naming
  half-installed, half-configured, unpacked or reinstall-required packages), and the ``E:``
  lines of apt about held broken packages, unmet dependencies or the dpkg lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ooha.rollout.gates import GateResult, Problem
from ooha.rollout.hostplan import REBOOT_MODES, package_selected


def _result(gate: str, problems: list[Problem], detail: str = "") -> GateResult:
    return GateResult(gate, tuple(problems), detail)


# --- reboot: /run/reboot-required and needrestart -b -----------------------------------------


@dataclass(frozen=True)
class RebootRequired:
    """``/run/reboot-required`` exists, and the packages ``.pkgs`` names (unique, in order)."""

    required: bool
    packages: tuple[str, ...] = ()


def parse_reboot_required(exists: bool, pkgs_text: str | None = None) -> RebootRequired:
    """The flag file's existence decides (its text is a banner); ``.pkgs`` only says who asked.
    A ``.pkgs`` without the flag file does not require a reboot (a leftover of a cleaned flag)."""
    names: list[str] = []
    for line in (pkgs_text or "").splitlines():
        name = line.strip()
        if name and name not in names:
            names.append(name)
    return RebootRequired(required=exists, packages=tuple(names) if exists else ())


KERNEL_STATUS = {0: "unknown", 1: "current", 2: "ABI-compatible upgrade pending", 3: "version upgrade pending"}
MICROCODE_STATUS = {0: "unknown", 1: "current", 2: "obsolete"}


@dataclass(frozen=True)
class NeedRestart:
    """``needrestart -b`` (None fields: the line was absent, e.g. ``-l`` only or no microcode check)."""

    version: str | None
    kernel_current: str | None
    kernel_expected: str | None
    kernel_status: int | None
    microcode_status: int | None
    services: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()

    @property
    def kernel_pending(self) -> bool:
        return self.kernel_status in (2, 3)

    @property
    def microcode_pending(self) -> bool:
        return self.microcode_status == 2


def parse_needrestart(text: str) -> NeedRestart:
    """Parse batch output; ValueError when ``text`` holds no ``NEEDRESTART-`` line at all (not
    batch output: the command is missing or failed, which the caller must not read as "clean")."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {"SVC": [], "CONT": [], "SESS": []}
    seen = False
    for raw in text.splitlines():
        m = re.match(r"^NEEDRESTART-([A-Z]+):\s*(.*?)\s*$", raw)
        if not m:
            continue
        seen = True
        key, value = m.groups()
        if key in multi:
            if value and value not in multi[key]:
                multi[key].append(value)
        else:
            single.setdefault(key, value)
    if not seen:
        raise ValueError("no NEEDRESTART- line: not the output of needrestart -b")

    def number(key: str) -> int | None:
        value = single.get(key)
        return int(value) if value is not None and value.isdigit() else None

    return NeedRestart(version=single.get("VER"), kernel_current=single.get("KCUR"),
                       kernel_expected=single.get("KEXP"), kernel_status=number("KSTA"),
                       microcode_status=number("UCSTA"), services=tuple(multi["SVC"]),
                       containers=tuple(multi["CONT"]), sessions=tuple(multi["SESS"]))


@dataclass(frozen=True)
class RebootVerdict:
    reboot: bool
    reasons: tuple[str, ...]

    def text(self) -> str:
        return ("reboot: " if self.reboot else "no reboot: ") + ("; ".join(self.reasons) or "nothing asks for one")


def reboot_reasons(flag: RebootRequired | None, needrestart: NeedRestart | None) -> tuple[list[str], list[str]]:
    """(what asks for a reboot, what could not be seen).  Service restarts count: a running
    service still maps deleted libraries, so the fix is not in effect until it restarts, and a
    reboot restarts each one in its unit's order (the pre-steps moved its roles away already).
    Containers and sessions do not: a container's libraries come from its image, not from apt,
    and the driver's own SSH session always shows up as a session."""
    reasons: list[str] = []
    unknown: list[str] = []
    if flag is None:
        unknown.append("/run/reboot-required could not be read")
    elif flag.required:
        reasons.append("/run/reboot-required" + (f" ({', '.join(flag.packages)})" if flag.packages else ""))
    if needrestart is None:
        unknown.append("needrestart -b gave no answer")
    else:
        if needrestart.kernel_pending:
            reasons.append(f"kernel {needrestart.kernel_current} running, {needrestart.kernel_expected} installed "
                           f"({KERNEL_STATUS[needrestart.kernel_status or 0]})")
        if needrestart.microcode_pending:
            reasons.append("CPU microcode obsolete")
        if needrestart.services:
            reasons.append(f"service(s) using deleted libraries: {', '.join(needrestart.services)}")
    return reasons, unknown


def reboot_decision(mode: str, flag: RebootRequired | None, needrestart: NeedRestart | None) -> RebootVerdict:
    """Reboot this host now?  ``always``: yes; ``never``: no (the reasons still say what is left,
    for the report's "reboot required"); ``auto``: yes when anything asks for one, and yes when
    something could not be seen (a patch that is installed but not running is the failure this
    job exists to prevent; an extra reboot of a host whose roles were moved away costs minutes)."""
    if mode not in REBOOT_MODES:
        raise ValueError(f"patch_reboot must be one of {', '.join(REBOOT_MODES)}")
    reasons, unknown = reboot_reasons(flag, needrestart)
    if mode == "always":
        return RebootVerdict(True, ("patch_reboot=always", *reasons))
    if mode == "never":
        return RebootVerdict(False, ("patch_reboot=never", *(f"left for later: {r}" for r in reasons)))
    if unknown:
        return RebootVerdict(True, (*reasons, *(f"{u}: rebooting to be sure" for u in unknown)))
    return RebootVerdict(bool(reasons), tuple(reasons))


# --- pending packages: apt-get -s upgrade, apt list --upgradable ------------------------------


@dataclass(frozen=True)
class PendingPackage:
    name: str  # as apt prints it, ``:arch`` included for a foreign architecture
    current: str | None  # None: newly installed
    candidate: str
    origin: str = ""
    arch: str = ""

    @property
    def security(self) -> bool:
        return "security" in self.origin.lower()


@dataclass(frozen=True)
class AptSimulation:
    upgrades: tuple[PendingPackage, ...]
    new: tuple[PendingPackage, ...]
    removals: tuple[str, ...]
    kept_back: tuple[str, ...]
    summary: tuple[int, int, int, int] | None  # upgraded, newly installed, to remove, not upgraded

    @property
    def pending(self) -> tuple[PendingPackage, ...]:
        return self.upgrades + self.new


_INST = re.compile(r"^Inst (\S+)(?: \[([^\]]*)\])? \((\S+)(?: (.*?))?(?: \[([^\]]+)\])?\)")
_REMV = re.compile(r"^Remv (\S+)")
_SUMMARY = re.compile(r"^(\d+) upgraded, (\d+) newly installed, (\d+) to remove and (\d+) not upgraded\.")


def _listed_after(lines: list[str], header: str) -> list[str]:
    """Names of apt's indented list under ``header`` (continuation lines start with spaces)."""
    names: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(header):
            for follow in lines[i + 1:]:
                if not follow.startswith(" "):
                    break
                names += follow.split()
    return names


def parse_apt_simulation(text: str) -> AptSimulation:
    """``apt-get -s upgrade`` (or ``dist-upgrade``): the ``Inst`` lines are the truth; the kept
    back list is what ``upgrade`` will not do (new dependencies: a Debian kernel ABI bump)."""
    lines = text.splitlines()
    upgrades: list[PendingPackage] = []
    new: list[PendingPackage] = []
    removals: list[str] = []
    summary = None
    for line in lines:
        if m := _INST.match(line):
            name, current, candidate, origin, arch = m.groups()
            pkg = PendingPackage(name, current or None, candidate, (origin or "").strip(), arch or "")
            (upgrades if current else new).append(pkg)
        elif m := _REMV.match(line):
            removals.append(m.group(1))
        elif m := _SUMMARY.match(line):
            summary = tuple(int(x) for x in m.groups())
    return AptSimulation(tuple(upgrades), tuple(new), tuple(removals),
                         tuple(_listed_after(lines, "The following packages have been kept back:")),
                         summary)  # type: ignore[arg-type]


_UPGRADABLE = re.compile(r"^(\S+?)/(\S+) (\S+) (\S+) \[upgradable from: ([^\]]+)\]")


def parse_apt_upgradable(text: str) -> tuple[PendingPackage, ...]:
    """``apt list --upgradable`` (its "Listing..." line and apt's CLI warning are skipped)."""
    out: list[PendingPackage] = []
    for line in text.splitlines():
        if m := _UPGRADABLE.match(line.strip()):
            name, suites, candidate, arch, current = m.groups()
            out.append(PendingPackage(name, current.strip(), candidate, suites, arch))
    return tuple(out)


def select_packages(pending: tuple[PendingPackage, ...], patterns: tuple[str, ...]) -> tuple[PendingPackage, ...]:
    """The pending packages ``patch_packages`` selects (all when empty)."""
    return tuple(p for p in pending if package_selected(p.name, patterns))


def unmatched_patterns(pending: tuple[PendingPackage, ...], patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Patterns that select nothing pending (not an error: the package may be up to date or not
    installed; the progress output says so, so a typo does not pass silently)."""
    return tuple(p for p in patterns if not any(package_selected(pkg.name, (p,)) for pkg in pending))


# --- disk space -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptSizes:
    download_bytes: int  # still to fetch into /var/cache/apt/archives
    install_delta_bytes: int  # after - before; negative: freed


_UNITS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_SIZE = r"([\d.,]+) ?([kKMGT]?B)"


def parse_size(text: str) -> int:
    """apt's sizes (``SizeToStr``: SI units, 1 kB = 1000 B): ``512 B``, ``13.3 kB``, ``2,305 kB``."""
    m = re.fullmatch(r"\s*" + _SIZE + r"\s*", text)
    if not m:
        raise ValueError(f"not an apt size: {text!r}")
    number, unit = m.groups()
    return int(float(number.replace(",", "")) * _UNITS[unit])


def parse_apt_sizes(text: str) -> AptSizes | None:
    """The sizes of ``apt-get --assume-no upgrade``; None when apt printed no summary (nothing to
    do: ``0 upgraded`` and no ``Need to get``; the caller knows from the pending list)."""
    download = delta = None
    for line in text.splitlines():
        if m := re.match(r"^Need to get " + _SIZE + r"(?:/" + _SIZE + r")? of archives\.", line):
            download = int(float(m.group(1).replace(",", "")) * _UNITS[m.group(2)])
        elif m := re.match(r"^After this operation, " + _SIZE + r" (of additional disk space will be used|disk space will be freed)", line):
            size = int(float(m.group(1).replace(",", "")) * _UNITS[m.group(2)])
            delta = size if m.group(3).startswith("of additional") else -size
    if download is None and delta is None:
        return None
    return AptSizes(download or 0, delta or 0)


@dataclass(frozen=True)
class Filesystem:
    """The filesystem holding a path (``df -B1 --output=source,target,avail PATH``)."""

    source: str
    target: str
    avail_bytes: int


DISK_MARGIN_BYTES = 256 * 1024 * 1024
DISK_MARGIN_RATIO = 0.5
"""Free space kept on top of apt's figures.  Why so much: dpkg unpacks each file next to the old
one (``.dpkg-new``) before replacing it, so while a package unpacks it needs its installed size
again, which apt's delta does not show; postinst hooks (initramfs, man-db) write too; and a
filesystem at 100 % in the middle of dpkg leaves a host that needs manual attention."""


def disk_gate(host: str, sizes: AptSizes | None, root: Filesystem | None, var: Filesystem | None,
              margin_bytes: int = DISK_MARGIN_BYTES, margin_ratio: float = DISK_MARGIN_RATIO) -> GateResult:
    """Enough free space on / (the installed files) and /var (the downloaded archives, dpkg's
    database): each need plus ``margin_ratio`` of it plus ``margin_bytes``; when / and /var are one
    filesystem both needs count against it once."""
    if sizes is None or root is None or var is None:
        missing = [n for n, v in (("apt's download/install sizes", sizes), ("free space on /", root), ("free space on /var", var)) if v is None]
        return _result("disk", [Problem(host, "disk", f"{', '.join(missing)} unknown",
                                        "check `apt-get --print-uris --assume-no upgrade` and `df /  /var` on the host")])
    install = max(0, sizes.install_delta_bytes)
    needs: dict[str, tuple[Filesystem, int, list[str]]] = {}
    for fs, need, what in ((root, install, "/"), (var, sizes.download_bytes, "/var")):
        prev = needs.get(fs.source)
        needs[fs.source] = (fs, (prev[1] if prev else 0) + need, (prev[2] if prev else []) + [what])
    problems: list[Problem] = []
    for fs, need, paths in needs.values():
        wanted = int(need * (1 + margin_ratio)) + margin_bytes
        if fs.avail_bytes < wanted:
            problems.append(Problem(host, "disk", f"{fs.avail_bytes // 2**20} MiB free on {fs.target} (for {' and '.join(paths)}), "
                                                  f"the upgrade needs {wanted // 2**20} MiB with margin "
                                                  f"({need // 2**20} MiB by apt)",
                                    f"free space on {fs.target} (apt-get clean, old kernels, logs) and rerun"))
    detail = f"{sizes.download_bytes // 2**20} MiB to fetch, {install // 2**20} MiB to install"
    return _result("disk", problems, detail)


# --- apt sources reachable --------------------------------------------------------------------


_FETCH_FAILED = re.compile(r"^(?:W|E): Failed to fetch (\S+)\s+(.*)$")
_ERR = re.compile(r"^Err:\d+ (\S+)")


def _source_fix(reason: str, proxy: str | None) -> str:
    low = reason.lower()
    if any(s in low for s in ("no_pubkey", "not signed", "gpg error", "expkeysig", "signature")):
        return "install the repository's signing key (signed-by) or fix the source line"
    if "not valid yet" in low or "expired" in low:
        return "check the host's clock (chrony) and the mirror's Release date"
    if proxy:
        return f"check the apt proxy {proxy} (apt-cacher-ng running and reachable from the host, its upstream reachable)"
    return "check the host's DNS and route to the mirror (or set apt_proxy)"


def apt_update_gate(host: str, exit_code: int | None, output: str | None, proxy: str | None = None) -> GateResult:
    """``apt-get update`` reached every source.  Exit 0 is not enough (a failed index fetch is a
    warning and the old lists stay in use: an upgrade would then install stale or nothing), so
    every ``Err:`` source and ``Failed to fetch``/``E:`` line is a problem, one per source."""
    if exit_code is None or output is None:
        return _result("apt-sources", [Problem(host, "apt-sources", "apt-get update did not run or gave no output",
                                               "run apt-get update on the host by hand")])
    lines = output.splitlines()
    failures: dict[str, str] = {}
    for i, line in enumerate(lines):
        if m := _ERR.match(line):
            detail = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(" ") else "fetch failed"
            failures.setdefault(m.group(1), detail)
        elif m := _FETCH_FAILED.match(line):
            url = m.group(1)
            base = next((u for u in failures if url.startswith(u)), url)
            failures.setdefault(base, m.group(2).strip() or "fetch failed")
    others = [ln[3:].strip() for ln in lines if ln.startswith(("E: ", "W: GPG error"))
              and "Failed to fetch" not in ln and "Some index files failed" not in ln]
    problems = [Problem(host, "apt-sources", f"{url}: {reason}", _source_fix(reason, proxy)) for url, reason in failures.items()]
    problems += [Problem(host, "apt-sources", text, _source_fix(text, proxy)) for text in others]
    if exit_code != 0 and not problems:
        problems.append(Problem(host, "apt-sources", f"apt-get update exited {exit_code}", "run apt-get update on the host by hand"))
    via = f" via {proxy}" if proxy else ""
    return _result("apt-sources", problems, f"every source reached{via}")


# --- host needs manual attention --------------------------------------------------------------


AUDIT_STATES = {
    "in a mess due to serious problems": ("reinstall-required", "apt-get install --reinstall {pkgs}"),
    "unpacked but not yet configured": ("unpacked", "dpkg --configure -a"),
    "only half configured": ("half-configured", "dpkg --configure -a"),
    "only half installed": ("half-installed", "apt-get install --reinstall {pkgs} (or dpkg --remove)"),
    "triggers": ("triggers-pending", "dpkg --configure --pending"),
    "missing the list control file": ("missing-list", "apt-get install --reinstall {pkgs}"),
    "missing the md5sums control file": ("missing-md5sums", "apt-get install --reinstall {pkgs}"),
}


@dataclass(frozen=True)
class AuditEntry:
    state: str
    packages: tuple[str, ...]
    fix: str


def parse_dpkg_audit(text: str) -> tuple[AuditEntry, ...]:
    """``dpkg --audit``: paragraphs of a header (lines at the margin) and packages (lines
    starting with a space: ``name  description``).  Empty output: nothing to report."""
    entries: list[AuditEntry] = []
    header: list[str] = []
    packages: list[str] = []

    def close() -> None:
        if packages:
            head = " ".join(header)
            state, fix = next(((s, f) for key, (s, f) in AUDIT_STATES.items() if key in head),
                              ("unknown", "see dpkg --audit on the host"))
            entries.append(AuditEntry(state, tuple(packages), fix.format(pkgs=" ".join(packages))))

    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(" "):
            packages.append(line.split()[0])
        else:
            if packages:
                close()
                header, packages = [], []
            header.append(line.strip())
    close()
    return tuple(entries)


_APT_BROKEN = ("held broken packages", "Unmet dependencies", "unmet dependencies", "dpkg was interrupted",
               "Could not get lock", "is held by process")


def manual_attention_gate(host: str, audit_text: str | None, apt_output: str = "",
                          held: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> GateResult:
    """Refuse a host a person must look at first: an unsound dpkg database (``dpkg --audit``), apt
    refusing with held broken packages / unmet dependencies / an interrupted dpkg (``E:`` lines of
    ``apt-get -s upgrade`` or ``apt-get check``), another apt/dpkg holding the lock (e.g.
    unattended-upgrades: wait), and a held package (``apt-mark showhold``) that ``patch_packages``
    names explicitly (the hold is someone's decision; this job will not override it).
    Why refuse rather than fix: ``dpkg --configure -a`` on a host whose roles were not moved away
    is exactly the unplanned restart this job exists to avoid."""
    if audit_text is None:
        return _result("manual-attention", [Problem(host, "manual-attention", "dpkg --audit did not answer",
                                                    "run dpkg --audit on the host by hand")])
    problems = [Problem(host, "manual-attention", f"dpkg: {e.state}: {', '.join(e.packages)}", e.fix)
                for e in parse_dpkg_audit(audit_text)]
    for line in apt_output.splitlines():
        if line.startswith("E: ") and any(s in line for s in _APT_BROKEN):
            if "lock" in line:
                fix = "wait for the other apt/dpkg (unattended-upgrades?) to finish, then rerun"
            elif "interrupted" in line:
                fix = "run dpkg --configure -a by hand (roles moved away first), then rerun"
            else:
                fix = "resolve by hand (apt-get -f install, or unhold/upgrade the named packages), then rerun"
            problems.append(Problem(host, "manual-attention", f"apt: {line[3:].strip()}", fix))
    named = [h for h in held if patterns and any(p == h or p == h.split(':', 1)[0] for p in patterns)]
    if named:
        problems.append(Problem(host, "manual-attention", f"patch_packages names held package(s): {', '.join(named)}",
                                "apt-mark unhold them if the hold is no longer wanted, or leave them out of patch_packages"))
    return _result("manual-attention", problems, f"{len(held)} held package(s)" if held else "")


# --- report -----------------------------------------------------------------------------------


def patch_report_line(host: str, pending: tuple[PendingPackage, ...] | None, reboot: RebootVerdict | None,
                      last_run: str | None) -> str:
    """The report's per-host line (issue 12 item 4): pending updates (security among them), whether
    a reboot is required (``reboot_decision("auto", ...)``), the last patch run."""
    return f"{host}: {patch_summary(pending, reboot, last_run)}"


def patch_summary(pending: tuple[PendingPackage, ...] | None, reboot: RebootVerdict | None,
                  last_run: str | None) -> str:
    """``patch_report_line`` without the host (the base layer's report line carries it)."""
    if pending is None:
        upd = "pending updates unknown"
    else:
        sec = sum(1 for p in pending if p.security)
        upd = f"{len(pending)} pending update(s)" + (f" ({sec} security)" if sec else "")
    rb = ("reboot unknown" if reboot is None else
          f"reboot required ({'; '.join(reboot.reasons)})" if reboot.reboot else "no reboot required")
    return f"{upd}, {rb}, last patch run: {last_run or 'never'}"
