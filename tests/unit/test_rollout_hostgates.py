"""Host patching's parsers and verdicts (issue 12) against captured-style outputs.

The outputs below were NOT captured from a lab host: they are written from the tools'
documentation and sources (needrestart's README.batch and its ``-b`` print statements, apt's
``apt-get`` simulation/summary lines and ``SizeToStr`` units, ``apt list`` lines, dpkg's
``--audit`` paragraphs from dpkg's source) in the C locale the driver runs them under, with
Debian 12 (bookworm) package names and versions.  When the driver exists, replace or extend them
with outputs captured from the lab's hosts.
"""

from __future__ import annotations

import pytest

from ooha.rollout import hostgates as hg

NEEDRESTART_KERNEL = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-17-amd64
NEEDRESTART-KEXP: 6.1.0-18-amd64
NEEDRESTART-KSTA: 3
NEEDRESTART-UCSTA: 1
NEEDRESTART-UCCUR: 0x000000f0
NEEDRESTART-UCEXP: 0x000000f0
NEEDRESTART-SVC: patroni.service
NEEDRESTART-SVC: redis-server.service
NEEDRESTART-SVC: patroni.service
NEEDRESTART-CONT: Docker onlyoffice-documentserver
NEEDRESTART-SESS: admin @ session #12
"""

NEEDRESTART_CLEAN = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-18-amd64
NEEDRESTART-KEXP: 6.1.0-18-amd64
NEEDRESTART-KSTA: 1
NEEDRESTART-SESS: admin @ session #12
"""

APT_SIMULATION = """\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
      Keep also in mind that locking is deactivated,
      so don't depend on the relevance to the real current situation!
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
The following packages have been kept back:
  linux-image-amd64
The following packages will be upgraded:
  libssl3 openssl tzdata
  libc6:i386
4 upgraded, 0 newly installed, 0 to remove and 1 not upgraded.
Inst libssl3 [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
Inst openssl [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64]) []
Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable, Debian-Security:12/stable-security [all])
Inst libc6:i386 [2.36-9+deb12u7] (2.36-9+deb12u10 Debian:12.11/stable [i386])
Conf libssl3 (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
Conf openssl (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
Conf tzdata (2025b-0+deb12u1 Debian:12.11/stable, Debian-Security:12/stable-security [all])
Conf libc6:i386 (2.36-9+deb12u10 Debian:12.11/stable [i386])
"""

APT_DIST_SIMULATION = """\
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
The following NEW packages will be installed:
  linux-image-6.1.0-18-amd64
The following packages will be REMOVED:
  linux-image-6.1.0-13-amd64
The following packages will be upgraded:
  linux-image-amd64
1 upgraded, 1 newly installed, 1 to remove and 0 not upgraded.
Remv linux-image-6.1.0-13-amd64 [6.1.55-1]
Inst linux-image-6.1.0-18-amd64 (6.1.76-1 Debian-Security:12/stable-security [amd64])
Inst linux-image-amd64 [6.1.55-1] (6.1.76-1 Debian-Security:12/stable-security [amd64])
Conf linux-image-6.1.0-18-amd64 (6.1.76-1 Debian-Security:12/stable-security [amd64])
Conf linux-image-amd64 (6.1.76-1 Debian-Security:12/stable-security [amd64])
"""

APT_LIST_UPGRADABLE = """\
Listing... Done
libssl3/stable-security 3.0.13-1~deb12u1 amd64 [upgradable from: 3.0.11-1~deb12u2]
openssl/stable-security 3.0.13-1~deb12u1 amd64 [upgradable from: 3.0.11-1~deb12u2]
tzdata/stable-updates,stable-security 2025b-0+deb12u1 all [upgradable from: 2024a-0+deb12u1]
libc6/stable 2.36-9+deb12u10 i386 [upgradable from: 2.36-9+deb12u7]
"""

APT_ASSUME_NO = """\
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
The following packages will be upgraded:
  libssl3 openssl tzdata
3 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Need to get 0 B/3,310 kB of archives.
After this operation, 13.3 kB of additional disk space will be used.
Do you want to continue? [Y/n] N
Abort.
"""

APT_UPDATE_OK = """\
Hit:1 http://deb.debian.org/debian bookworm InRelease
Get:2 http://deb.debian.org/debian bookworm-updates InRelease [55.4 kB]
Get:3 http://security.debian.org/debian-security bookworm-security InRelease [48.0 kB]
Fetched 103 kB in 1s (120 kB/s)
Reading package lists...
"""

APT_UPDATE_PROXY_DOWN = """\
Err:1 http://deb.debian.org/debian bookworm InRelease
  Could not connect to 198.18.0.5:3142 (198.18.0.5). - connect (111: Connection refused)
Err:2 http://security.debian.org/debian-security bookworm-security InRelease
  Unable to connect to 198.18.0.5:3142:
Reading package lists...
W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Could not connect to 198.18.0.5:3142 (198.18.0.5). - connect (111: Connection refused)
W: Failed to fetch http://security.debian.org/debian-security/dists/bookworm-security/InRelease  Unable to connect to 198.18.0.5:3142:
W: Some index files failed to download. They have been ignored, or old ones used instead.
"""

APT_UPDATE_GPG = """\
Get:1 http://download.docker.com/linux/debian bookworm InRelease [43.3 kB]
Err:1 http://download.docker.com/linux/debian bookworm InRelease
  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 7EA0A9C3F273FCD8
Reading package lists...
W: GPG error: http://download.docker.com/linux/debian bookworm InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 7EA0A9C3F273FCD8
E: The repository 'http://download.docker.com/linux/debian bookworm InRelease' is not signed.
"""

DPKG_AUDIT = """\
The following packages have been unpacked but not yet configured.
They must be configured using dpkg --configure or the configure
menu option in dselect for them to work:
 libssl3:amd64        Secure Sockets Layer toolkit - shared libraries

The following packages are only half configured, probably due to problems
configuring them the first time.  The configuration should be retried using
dpkg --configure <package> or the configure menu option in dselect:
 postgresql-common    PostgreSQL database-cluster manager
 initramfs-tools      generic modular initramfs generator (automation)
"""

APT_HELD_BROKEN = """\
Reading package lists...
Building dependency tree...
Reading state information...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 docker-ce : Depends: containerd.io (>= 1.6.24) but 1.6.20-1 is to be installed
E: Unable to correct problems, you have held broken packages.
"""

APT_LOCKED = """\
E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 2211 (unattended-upgr)
E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?
"""


# --- reboot ------------------------------------------------------------------------------------


def test_reboot_required_flag_and_pkgs() -> None:
    flag = hg.parse_reboot_required(True, "linux-image-6.1.0-18-amd64\nlibc6\nlibc6\n\n")
    assert flag == hg.RebootRequired(True, ("linux-image-6.1.0-18-amd64", "libc6"))
    assert hg.parse_reboot_required(False, "libc6\n") == hg.RebootRequired(False, ())
    assert hg.parse_reboot_required(True, None) == hg.RebootRequired(True, ())


def test_parse_needrestart_batch() -> None:
    nr = hg.parse_needrestart(NEEDRESTART_KERNEL)
    assert nr.version == "3.6" and nr.kernel_current == "6.1.0-17-amd64" and nr.kernel_expected == "6.1.0-18-amd64"
    assert nr.kernel_status == 3 and nr.kernel_pending and nr.microcode_status == 1 and not nr.microcode_pending
    assert nr.services == ("patroni.service", "redis-server.service")
    assert nr.containers == ("Docker onlyoffice-documentserver",) and nr.sessions == ("admin @ session #12",)
    clean = hg.parse_needrestart(NEEDRESTART_CLEAN)
    assert not clean.kernel_pending and clean.services == () and clean.microcode_status is None
    assert hg.parse_needrestart("NEEDRESTART-KSTA: 2\n").kernel_pending
    assert not hg.parse_needrestart("NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: 0\n").kernel_pending


@pytest.mark.parametrize("text", ["", "bash: needrestart: command not found\n", "Scanning processes...\n"])
def test_needrestart_without_batch_lines_is_not_clean(text: str) -> None:
    with pytest.raises(ValueError):
        hg.parse_needrestart(text)


def test_reboot_decision_auto() -> None:
    no_flag = hg.parse_reboot_required(False)
    clean = hg.parse_needrestart(NEEDRESTART_CLEAN)
    assert hg.reboot_decision("auto", no_flag, clean) == hg.RebootVerdict(False, ())
    kernel = hg.reboot_decision("auto", no_flag, hg.parse_needrestart(NEEDRESTART_KERNEL))
    assert kernel.reboot and any("6.1.0-18-amd64" in r for r in kernel.reasons)
    assert any("patroni.service, redis-server.service" in r for r in kernel.reasons)
    only_service = hg.parse_needrestart(NEEDRESTART_CLEAN + "NEEDRESTART-SVC: nginx.service\n")
    assert hg.reboot_decision("auto", no_flag, only_service).reboot
    flag = hg.reboot_decision("auto", hg.parse_reboot_required(True, "libc6\n"), clean)
    assert flag.reboot and flag.reasons == ("/run/reboot-required (libc6)",)
    microcode = hg.parse_needrestart(NEEDRESTART_CLEAN + "NEEDRESTART-UCSTA: 2\n")
    assert hg.reboot_decision("auto", no_flag, microcode).reboot
    container_only = hg.parse_needrestart(NEEDRESTART_CLEAN + "NEEDRESTART-CONT: Docker x\n")
    assert not hg.reboot_decision("auto", no_flag, container_only).reboot


def test_reboot_decision_unknown_reboots_in_auto() -> None:
    verdict = hg.reboot_decision("auto", hg.parse_reboot_required(False), None)
    assert verdict.reboot and "needrestart -b gave no answer: rebooting to be sure" in verdict.reasons
    assert hg.reboot_decision("auto", None, hg.parse_needrestart(NEEDRESTART_CLEAN)).reboot


def test_reboot_decision_always_and_never() -> None:
    clean = hg.parse_needrestart(NEEDRESTART_CLEAN)
    assert hg.reboot_decision("always", hg.parse_reboot_required(False), clean).reboot
    never = hg.reboot_decision("never", hg.parse_reboot_required(True), clean)
    assert not never.reboot and never.reasons == ("patch_reboot=never", "left for later: /run/reboot-required")
    assert never.text() == "no reboot: patch_reboot=never; left for later: /run/reboot-required"
    with pytest.raises(ValueError):
        hg.reboot_decision("later", None, None)


# --- pending packages --------------------------------------------------------------------------


def test_parse_apt_simulation_upgrade() -> None:
    sim = hg.parse_apt_simulation(APT_SIMULATION)
    assert [p.name for p in sim.upgrades] == ["libssl3", "openssl", "tzdata", "libc6:i386"]
    ssl = sim.upgrades[0]
    assert (ssl.current, ssl.candidate, ssl.origin, ssl.arch) == \
        ("3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "Debian-Security:12/stable-security", "amd64")
    assert sim.upgrades[1].candidate == "3.0.13-1~deb12u1", "a trailing [] after the parenthesis is ignored"
    assert sim.upgrades[2].origin == "Debian:12.11/stable, Debian-Security:12/stable-security" and sim.upgrades[2].security
    assert not sim.upgrades[3].security
    assert sim.new == () and sim.removals == () and sim.kept_back == ("linux-image-amd64",)
    assert sim.summary == (4, 0, 0, 1) and len(sim.pending) == 4


def test_parse_apt_simulation_dist_upgrade_new_and_removed() -> None:
    sim = hg.parse_apt_simulation(APT_DIST_SIMULATION)
    assert [p.name for p in sim.new] == ["linux-image-6.1.0-18-amd64"] and sim.new[0].current is None
    assert [p.name for p in sim.upgrades] == ["linux-image-amd64"]
    assert sim.removals == ("linux-image-6.1.0-13-amd64",) and sim.summary == (1, 1, 1, 0)


def test_parse_apt_simulation_nothing() -> None:
    sim = hg.parse_apt_simulation("Reading package lists...\nCalculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
    assert sim.pending == () and sim.summary == (0, 0, 0, 0)


def test_parse_apt_upgradable() -> None:
    pending = hg.parse_apt_upgradable("WARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n\n"
                                      + APT_LIST_UPGRADABLE)
    assert [p.name for p in pending] == ["libssl3", "openssl", "tzdata", "libc6"]
    assert pending[2].origin == "stable-updates,stable-security" and pending[2].arch == "all"
    assert pending[0].current == "3.0.11-1~deb12u2" and pending[0].security


def test_select_packages_and_unmatched() -> None:
    pending = hg.parse_apt_simulation(APT_SIMULATION).pending
    assert [p.name for p in hg.select_packages(pending, ())] == [p.name for p in pending]
    assert [p.name for p in hg.select_packages(pending, ("libssl*", "libc6"))] == ["libssl3", "libc6:i386"]
    assert hg.unmatched_patterns(pending, ("openssl", "postgresql-15")) == ("postgresql-15",)


# --- disk ----------------------------------------------------------------------------------------


def test_parse_sizes() -> None:
    assert hg.parse_size("512 B") == 512 and hg.parse_size("13.3 kB") == 13300
    assert hg.parse_size("2,305 kB") == 2_305_000 and hg.parse_size("1.2 GB") == 1_200_000_000
    with pytest.raises(ValueError):
        hg.parse_size("lots")
    sizes = hg.parse_apt_sizes(APT_ASSUME_NO)
    assert sizes == hg.AptSizes(download_bytes=0, install_delta_bytes=13300), "0 B left to fetch: the archives are cached"
    freed = hg.parse_apt_sizes("Need to get 48.2 MB of archives.\nAfter this operation, 1,024 kB disk space will be freed.\n")
    assert freed == hg.AptSizes(48_200_000, -1_024_000)
    assert hg.parse_apt_sizes("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n") is None


MiB = 2**20


def test_disk_gate_separate_and_shared_filesystems() -> None:
    sizes = hg.AptSizes(download_bytes=100 * MiB, install_delta_bytes=200 * MiB)
    root = hg.Filesystem("/dev/vda1", "/", 1024 * MiB)
    var = hg.Filesystem("/dev/vdb1", "/var", 1024 * MiB)
    assert hg.disk_gate("data1", sizes, root, var).ok  # / needs 200*1.5+256=556, /var 150+256=406
    small_var = hg.Filesystem("/dev/vdb1", "/var", 300 * MiB)
    result = hg.disk_gate("data1", sizes, root, small_var)
    assert not result.ok and len(result.problems) == 1
    assert result.problems[0].line().startswith("data1: disk: 300 MiB free on /var (for /var), the upgrade needs 406 MiB")
    shared = hg.Filesystem("/dev/vda1", "/", 800 * MiB)  # one filesystem: (100+200)*1.5+256 = 706 MiB
    assert hg.disk_gate("ds1", sizes, shared, shared).ok
    tight = hg.Filesystem("/dev/vda1", "/", 700 * MiB)
    line = hg.disk_gate("ds1", sizes, tight, tight).problems[0].line()
    assert "on / (for / and /var)" in line and "706 MiB" in line and "fix: free space on /" in line
    freed = hg.AptSizes(download_bytes=10 * MiB, install_delta_bytes=-50 * MiB)
    assert hg.disk_gate("ds1", freed, hg.Filesystem("/dev/vda1", "/", 300 * MiB), hg.Filesystem("/dev/vda1", "/", 300 * MiB)).ok


def test_disk_gate_unknown_refuses() -> None:
    result = hg.disk_gate("lb1", None, None, hg.Filesystem("/dev/vda1", "/", MiB))
    assert not result.ok and "apt's download/install sizes, free space on / unknown" in result.problems[0].what


# --- apt sources -------------------------------------------------------------------------------


def test_apt_update_gate_ok() -> None:
    result = hg.apt_update_gate("lb1", 0, APT_UPDATE_OK, "http://198.18.0.5:3142")
    assert result.ok and result.lines() == ["apt-sources: OK every source reached via http://198.18.0.5:3142"]


def test_apt_update_gate_proxy_down_exit_zero_is_still_a_refusal() -> None:
    result = hg.apt_update_gate("ds2", 0, APT_UPDATE_PROXY_DOWN, "http://198.18.0.5:3142")
    lines = result.lines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("ds2: apt-sources: http://deb.debian.org/debian: Could not connect to 198.18.0.5:3142")
    assert all("check the apt proxy http://198.18.0.5:3142" in line for line in lines)
    without_proxy = hg.apt_update_gate("ds2", 0, APT_UPDATE_PROXY_DOWN, None)
    assert "check the host's DNS and route to the mirror" in without_proxy.problems[0].fix


def test_apt_update_gate_unsigned_repository() -> None:
    result = hg.apt_update_gate("ds1", 100, APT_UPDATE_GPG)
    assert not result.ok
    assert all("signing key" in p.fix for p in result.problems)
    assert any("is not signed" in p.what for p in result.problems)


def test_apt_update_gate_unknown_and_bare_failure() -> None:
    assert not hg.apt_update_gate("lb2", None, None).ok
    bare = hg.apt_update_gate("lb2", 100, "Reading package lists...\n")
    assert bare.problems[0].what == "apt-get update exited 100"
    clock = hg.apt_update_gate("lb2", 0, "E: Release file for http://deb.debian.org/debian/dists/bookworm-updates/InRelease "
                                         "is not valid yet (invalid for another 2h 3min 1s).\n")
    assert "clock" in clock.problems[0].fix


# --- manual attention --------------------------------------------------------------------------


def test_parse_dpkg_audit() -> None:
    entries = hg.parse_dpkg_audit(DPKG_AUDIT)
    assert [(e.state, e.packages) for e in entries] == [
        ("unpacked", ("libssl3:amd64",)), ("half-configured", ("postgresql-common", "initramfs-tools"))]
    assert entries[1].fix == "dpkg --configure -a"
    assert hg.parse_dpkg_audit("") == ()
    mess = hg.parse_dpkg_audit("The following packages are in a mess due to serious problems during\n"
                               "installation.  They must be reinstalled for them (and any packages\n"
                               "that depend on them) to function properly:\n nginx                small, powerful, scalable web/proxy server\n")
    assert mess[0].state == "reinstall-required" and mess[0].fix == "apt-get install --reinstall nginx"


def test_manual_attention_gate() -> None:
    assert hg.manual_attention_gate("data1", "").ok
    assert not hg.manual_attention_gate("data1", None).ok
    audit = hg.manual_attention_gate("data1", DPKG_AUDIT)
    assert [p.what for p in audit.problems] == ["dpkg: unpacked: libssl3:amd64",
                                                "dpkg: half-configured: postgresql-common, initramfs-tools"]
    broken = hg.manual_attention_gate("ds1", "", APT_HELD_BROKEN)
    assert len(broken.problems) == 1 and "held broken packages" in broken.problems[0].what
    locked = hg.manual_attention_gate("ds1", "", APT_LOCKED)
    assert locked.problems and all("unattended-upgrades" in p.fix for p in locked.problems)
    held = hg.manual_attention_gate("ds1", "", "", held=("docker-ce", "containerd.io"), patterns=("docker-ce",))
    assert held.problems[0].what == "patch_packages names held package(s): docker-ce"
    assert hg.manual_attention_gate("ds1", "", "", held=("docker-ce",)).ok, "a hold is respected, not a refusal"


def test_patch_report_line() -> None:
    pending = hg.parse_apt_simulation(APT_SIMULATION).pending
    verdict = hg.reboot_decision("auto", hg.parse_reboot_required(True), hg.parse_needrestart(NEEDRESTART_CLEAN))
    assert hg.patch_report_line("data1", pending, verdict, "2026-03-20 rollout abc (done)") == \
        "data1: 4 pending update(s) (3 security), reboot required (/run/reboot-required), " \
        "last patch run: 2026-03-20 rollout abc (done)"
    assert hg.patch_report_line("lb1", None, None, None) == \
        "lb1: pending updates unknown, reboot unknown, last patch run: never"
