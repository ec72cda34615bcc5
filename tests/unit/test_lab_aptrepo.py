"""The lab apt repository built on this machine (lab/aptrepo.py), without Docker: two real .debs
made by dpkg-deb, a Packages index and Release whose hashes apt checks, a signature gpgv accepts
with the exported key, a warm rebuild that does nothing."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import aptrepo, cli

pytestmark = pytest.mark.skipif(not (shutil.which("dpkg-deb") and shutil.which("gpg") and shutil.which("gpgv")),
                                reason="needs dpkg-deb, gpg and gpgv (Debian)")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build for the module (key generation included), in its own state dir."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OOHA_LAB_DIR", str(tmp_path_factory.mktemp("lab")))
    try:
        yield aptrepo.build()
    finally:
        mp.undo()


def _paragraphs(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out.append(fields)
    return out


def test_both_versions_are_indexed_with_the_hashes_of_their_files(repo: Path) -> None:
    entries = _paragraphs((repo / "Packages").read_text())
    assert [(e["Package"], e["Version"], e["Architecture"]) for e in entries] == [
        ("ooha-lab-canary", "1.0", "all"), ("ooha-lab-canary", "1.1", "all")]
    for entry in entries:
        deb = (repo / entry["Filename"]).read_bytes()
        assert int(entry["Size"]) == len(deb)
        assert entry["SHA256"] == hashlib.sha256(deb).hexdigest()
        fields = subprocess.run(["dpkg-deb", "-f", str(repo / entry["Filename"]), "Version"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert fields == entry["Version"]


def test_release_names_the_index_by_size_and_sha256(repo: Path) -> None:
    packages = (repo / "Packages").read_bytes()
    release = (repo / "Release").read_text()
    assert f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages" in release.split("SHA256:")[1]


def test_the_signature_verifies_with_the_exported_key_only(repo: Path, tmp_path: Path) -> None:
    keyring = tmp_path / "lab.gpg"
    subprocess.run(["gpg", "--dearmor", "-o", str(keyring), str(repo / aptrepo.KEY_NAME)], check=True,
                   capture_output=True)
    good = subprocess.run(["gpgv", "--keyring", str(keyring), str(repo / "InRelease")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    tampered = tmp_path / "InRelease"
    tampered.write_text((repo / "InRelease").read_text().replace("Packages", "Packagez", 1))
    assert subprocess.run(["gpgv", "--keyring", str(keyring), str(tampered)], capture_output=True).returncode != 0


def test_only_the_upgrade_asks_for_a_reboot(repo: Path, tmp_path: Path) -> None:
    for version, asks in (("1.0", False), ("1.1", True)):
        control = tmp_path / version
        subprocess.run(["dpkg-deb", "-e", str(repo / f"ooha-lab-canary_{version}_all.deb"), str(control)], check=True)
        postinst = control / "postinst"
        assert postinst.exists() == asks
        if asks:
            script = postinst.read_text()
            assert "touch /run/reboot-required" in script and "/run/reboot-required.pkgs" in script


def test_a_warm_build_changes_nothing(repo: Path) -> None:
    before = {p.name: p.read_bytes() for p in repo.iterdir()}
    aptrepo.build(lambda line: pytest.fail(f"rebuilt: {line}"))
    assert {p.name: p.read_bytes() for p in repo.iterdir()} == before


def test_the_source_line_is_flat_signed_and_plain_http() -> None:
    assert aptrepo.source_line("198.18.20.10") == (
        "deb [signed-by=/etc/apt/keyrings/ooha-lab.asc] http://198.18.20.10/ooha-lab/ ./")


def test_canary_refuses_an_unknown_version_before_the_engine(capsys: pytest.CaptureFixture[str], no_docker: None) -> None:
    assert cli.run(["canary", "ds3", "--version", "9.9"]) == 1
    assert "has versions 1.0, 1.1, not '9.9'" in capsys.readouterr().err
