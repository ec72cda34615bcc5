"""Base layer: what every host needs before any service goes on it.

apt through the caching proxy when one is configured, a lean set of base packages,
time sync with chrony (HA consensus and TLS both break on skewed clocks), UTC, and a
sysctl baseline for fast dead-peer detection and floating addresses.  A second run
changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Sysctl
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from ooha.preflight import is_ip_address
from ooha.report import CheckResult, poll
from ooha.settings import Settings
from ooha.templating import JINJA, TEMPLATES
from ooha.facts.base import AptProxyConfigured, ChronyTracking, HostPatchState, TimeZoneName
from ooha.rollout.hostgates import patch_summary

APT_PROXY_FILE = "/etc/apt/apt.conf.d/01proxy"
APT_LOCK_FILE = "/etc/apt/apt.conf.d/02onlyoffice-ha-lock-timeout"
CHRONY_CONF = "/etc/chrony/chrony.conf"
CHRONY_DEFAULTS = "/etc/default/chrony"
CHRONY_DROP_IN = "/etc/systemd/system/chrony.service.d/10-onlyoffice-ha-no-clock.conf"
SYSCTL_FILE = "/etc/sysctl.d/60-onlyoffice-ha.conf"
NEEDRESTART_CONF = "/etc/needrestart/conf.d/50-onlyoffice-ha.conf"
NEEDRESTART_LIST_ONLY = (
    "# Managed by onlyoffice-ha (ooha/layers/base.py): list only, never restart a service after an\n"
    "# apt run. A restart of patroni, redis or rabbitmq from a package hook is a failover nobody\n"
    "# planned; host patching restarts (or reboots) in its own order, roles moved away first.\n"
    "$nrconf{restart} = 'l';\n"
)
TIME_ZONE = "Etc/UTC"

BASE_DEFAULTS: dict[str, Any] = {
    # URL of an apt caching proxy (apt-cacher-ng), e.g. "http://10.0.0.5:3142";
    # None removes any proxy this layer configured.
    "apt_proxy": None,
    # Seconds apt/dpkg wait for the package lock held by another apt (unattended-upgrades,
    # an operator, a second deploy) instead of failing the run at once.
    "apt_lock_timeout": 300,
    # Seconds an `apt-get update` stays fresh: reruns within it do not update again.
    "apt_cache_time": 6 * 3600,
    # Kept lean: what the deploys and an operator on the host need.
    "base_packages": [
        "ca-certificates",
        "chrony",
        "curl",
        "iproute2",
        "jq",
        "less",
        "lsof",
        # Tells which running services still use replaced libraries (the report's "reboot
        # required" and host patching's reboot decision); configured never to restart one itself.
        "needrestart",
        "procps",
        "python3",
        "tcpdump",
        "tzdata",
    ],
    # NTP servers chrony uses (`server X iburst`); empty means Debian's pool.
    "ntp_servers": [],
    # chrony options for each of ntp_servers.  A nearby server of your own can take
    # "iburst minpoll 4 maxpoll 6": sync is regained within a minute after an outage.
    "ntp_server_options": "iburst",
    # False where chronyd may not set the clock (containers without CAP_SYS_TIME):
    # it then runs with -x, tracking its sources without touching the clock.
    "chrony_may_set_clock": True,
    # Network-namespaced sysctls (net.*), applied now and persisted in SYSCTL_FILE.
    "sysctl_baseline": {
        # Accept backlog for nginx, docservice, PostgreSQL under connection bursts.
        "net.core.somaxconn": 4096,
        "net.ipv4.tcp_max_syn_backlog": 4096,
        # Dead peers found in about 60 + 6 * 10 = 120 s instead of Linux's 2 h 11 min:
        # idle client connections to a failed PostgreSQL/Redis primary get dropped.
        "net.ipv4.tcp_keepalive_time": 60,
        "net.ipv4.tcp_keepalive_intvl": 10,
        "net.ipv4.tcp_keepalive_probes": 6,
        # Bind to the floating (VRRP) address before this host holds it.
        "net.ipv4.ip_nonlocal_bind": 1,
    },
    # Kernel-wide sysctls; set {} where the kernel is shared (the lab's containers).
    "sysctl_host_baseline": {
        "vm.swappiness": 10,
        # Redis forks to persist; without overcommit the fork can fail under load.
        "vm.overcommit_memory": 1,
    },
}


def wanted_sysctls(data: Any) -> dict[str, Any]:
    """Every sysctl this layer sets on the current host, namespaced ones first."""
    return {**dict(data.sysctl_baseline or {}), **dict(data.sysctl_host_baseline or {})}


def _apt(data: Any) -> None:
    """Apt proxy (or its removal), a cached `apt-get update`, the base packages."""
    if data.apt_proxy:
        proxy = files.template(
            name="Configure the apt caching proxy",
            src=str(TEMPLATES / "base/apt-proxy.conf.j2"),
            dest=APT_PROXY_FILE,
            mode="644",
            apt_proxy=data.apt_proxy,
            jinja_env_kwargs=dict(JINJA),
        )
    else:
        proxy = files.file(name="No apt proxy", path=APT_PROXY_FILE, present=False)

    files.put(
        name="apt waits for the package lock",
        src=_text(f'// Managed by onlyoffice-ha (ooha/layers/base.py)\nDPkg::Lock::Timeout "{int(data.apt_lock_timeout)}";\n'),
        dest=APT_LOCK_FILE,
        mode="644",
    )
    # A changed proxy may mean a different mirror view: refresh the lists now.
    # Before the package: needrestart's apt hook reads this on its very first run.
    files.directory(name="needrestart configuration directory", path="/etc/needrestart/conf.d", mode="755")
    files.put(name="needrestart lists, never restarts", src=_text(NEEDRESTART_LIST_ONLY), dest=NEEDRESTART_CONF, mode="644")
    apt.update(name="Refresh apt lists (proxy changed)", _if=proxy.did_change)
    apt.update(name="Refresh apt lists", cache_time=data.apt_cache_time)
    apt.packages(
        name="Install base packages",
        packages=list(data.base_packages),
        no_recommends=True,
    )


def _time(data: Any) -> None:
    """UTC, and chrony synchronised to the configured servers."""
    files.link(
        name="Time zone UTC",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{TIME_ZONE}",
    )
    files.put(
        name="Time zone name",
        src=_text(f"{TIME_ZONE}\n"),
        dest="/etc/timezone",
        mode="644",
    )

    may_set_clock = bool(data.chrony_may_set_clock)
    conf = files.template(
        name="Configure chrony sources",
        src=str(TEMPLATES / "base/chrony.conf.j2"),
        dest=CHRONY_CONF,
        mode="644",
        ntp_servers=list(data.ntp_servers or []),
        ntp_server_options=data.ntp_server_options,
        may_set_clock=may_set_clock,
        jinja_env_kwargs=dict(JINJA),
    )
    options = files.template(
        name="Configure chronyd options",
        src=str(TEMPLATES / "base/chrony.default.j2"),
        dest=CHRONY_DEFAULTS,
        mode="644",
        may_set_clock=may_set_clock,
        jinja_env_kwargs=dict(JINJA),
    )
    if may_set_clock:
        drop_in = files.file(name="No chrony no-clock drop-in", path=CHRONY_DROP_IN, present=False)
    else:
        drop_in = files.template(
            name="Let chrony start without CAP_SYS_TIME",
            src=str(TEMPLATES / "base/chrony-no-clock.conf.j2"),
            dest=CHRONY_DROP_IN,
            mode="644",
            create_remote_dir=True,
            jinja_env_kwargs=dict(JINJA),
        )
    systemd.daemon_reload(name="Reload systemd units (chrony drop-in)", _if=drop_in.did_change)
    systemd.service(
        name="Restart chrony (configuration changed)",
        service="chrony.service",
        restarted=True,
        _if=any_changed(conf, options, drop_in),
    )
    systemd.service(
        name="chrony running and enabled",
        service="chrony.service",
        running=True,
        enabled=True,
    )


def _sysctl(data: Any) -> None:
    """Persist the sysctl baseline for boot and apply each value now."""
    sysctls = wanted_sysctls(data)
    files.template(
        name="Persist sysctl baseline",
        src=str(TEMPLATES / "base/sysctl.conf.j2"),
        dest=SYSCTL_FILE,
        mode="644",
        sysctls=sysctls,
        jinja_env_kwargs=dict(JINJA),
    )
    for key, value in sysctls.items():
        # persist=False: the file above persists all of them in one place; pyinfra's
        # persist writes /etc/sysctl.conf line by line instead.
        server.sysctl(name=f"sysctl {key}", key=key, value=value)


def _text(content: str):
    """A file-like object for files.put (pyinfra hashes it to stay idempotent)."""
    from io import StringIO

    return StringIO(content)


# --- validation -----------------------------------------------------------------------

CHRONY_SYNC_DEADLINE = 90.0
"""Seconds the report waits for chrony's first sync after a (re)start (iburst: ~10 s)."""


_layer_value = Settings(BASE_DEFAULTS, keep_explicit_none=True)
"""A data key with this layer's default (the report runs outside the Base deploy).  A key the
inventory sets to None stays None: ``apt_proxy = None`` means "no proxy", not the default."""


def _normalise(value: Any) -> Any:
    """Compare sysctl values the way the Sysctl fact returns them (ints, lists of ints)."""
    parts = str(value).split()
    converted = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return converted[0] if len(converted) == 1 else converted


def check_chrony(target: Any) -> CheckResult:
    """chronyd answers, is synchronised, and to one of ntp_servers when they are addresses."""
    tracking = target.get_fact(ChronyTracking)
    if tracking is None:
        return CheckResult(False, "chrony not answering (chronyd down?)", "rerun the deploy; see `systemctl status chrony`", final=True)
    if tracking["reference"] is None or tracking["leap_status"] != "Normal":
        return CheckResult(False, f"chrony not synchronised (leap status {tracking['leap_status'] or '?'})", "check that ntp_servers answer on UDP 123 (`chronyc sources`)")
    servers = list(_layer_value(target, "ntp_servers") or [])
    addresses = [s for s in servers if is_ip_address(s)]
    if addresses and len(addresses) == len(servers) and tracking["reference"] not in addresses:
        return CheckResult(False, f"chrony synced to {tracking['reference']}, not to ntp_servers {', '.join(addresses)}", "rerun the deploy to rewrite /etc/chrony/chrony.conf")
    return CheckResult(True, f"chrony synced to {tracking['reference']} (stratum {tracking['stratum']})")


def check_base(target: Any) -> CheckResult:
    """The base layer on one host: chrony, apt proxy, time zone, sysctl baseline."""
    chrony = poll(check_chrony, target, CHRONY_SYNC_DEADLINE)
    if not chrony.ok:
        return chrony
    problems = []
    wanted_proxy = _layer_value(target, "apt_proxy")
    proxy = target.get_fact(AptProxyConfigured)
    if proxy != wanted_proxy:
        problems.append((f"apt proxy is {proxy or 'unset'}, wanted {wanted_proxy or 'unset'}", f"rerun the deploy ({APT_PROXY_FILE})"))
    zone = target.get_fact(TimeZoneName)
    if zone not in ("Etc/UTC", "UTC"):
        problems.append((f"time zone is {zone}", "rerun the deploy (/etc/localtime)"))
    wanted = {
        **dict(_layer_value(target, "sysctl_baseline") or {}),
        **dict(_layer_value(target, "sysctl_host_baseline") or {}),
    }
    actual = target.get_fact(Sysctl, keys=list(wanted)) if wanted else {}
    wrong = [f"{k}={actual.get(k)} (wanted {v})" for k, v in wanted.items() if actual.get(k) != _normalise(v)]
    if wrong:
        problems.append((f"sysctl {', '.join(wrong)}", f"rerun the deploy ({SYSCTL_FILE})"))
    if problems:
        return CheckResult(False, "; ".join(p for p, _ in problems), "; ".join(f for _, f in problems))
    proxy_note = f", apt via {proxy}" if proxy else ""
    return CheckResult(True, f"{chrony.detail}, sysctl baseline applied ({len(wanted)} keys){proxy_note}, UTC; "
                             f"{patch_text(target.get_fact(HostPatchState))}")


def patch_text(state: dict[str, Any]) -> str:
    """The base line's patch part (issue 12 item 4): informational, never a failure here (the
    host-patching job's preflight decides what blocks a run)."""
    lists = state.get("lists_epoch")
    age = f", apt lists {max(0, int(time.time()) - lists) // 3600} h old" if lists else ", apt lists never fetched"
    return patch_summary(state.get("pending"), state.get("reboot"), state.get("last_run")) + age


@deploy("Base", data_defaults=BASE_DEFAULTS)
def base() -> None:
    """Converge one host's base layer; data keys are documented in BASE_DEFAULTS."""
    data = host.data
    _apt(data)
    _time(data)
    _sysctl(data)
