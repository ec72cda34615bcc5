"""The deploy CA and host certificates (ooha/pki.py): made once, reused, re-issued on change."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ooha import pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    cert, _ = pki.ensure_ca(root)
    again, _ = pki.ensure_ca(root)
    assert cert.fingerprint(cert.signature_hash_algorithm) == again.fingerprint(again.signature_hash_algorithm)
    assert _mode(root / "ca.key") == 0o600 and _mode(root) == 0o700
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_host_cert_has_sans_both_usages_and_chains_to_the_ca(tmp_path: Path) -> None:
    issued = pki.issue_host_cert(tmp_path, "data1", ["198.18.1.31"])
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(issued.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["data1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.1.31")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _mode(issued.key) == 0o600


def test_host_cert_is_reused_when_valid_and_reissued_when_names_change(tmp_path: Path) -> None:
    first = pki.issue_host_cert(tmp_path, "data1", ["198.18.1.31"]).cert.read_bytes()
    assert pki.issue_host_cert(tmp_path, "data1", ["198.18.1.31"]).cert.read_bytes() == first
    moved = pki.issue_host_cert(tmp_path, "data1", ["198.18.1.32"]).cert.read_bytes()
    assert moved != first
    cert = x509.load_pem_x509_certificate(moved)
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert ips == [ipaddress.ip_address("198.18.1.32")]


def test_cert_from_another_ca_is_not_reused(tmp_path: Path) -> None:
    issued = pki.issue_host_cert(tmp_path / "a", "data1", ["198.18.1.31"])
    other_ca, _ = pki.ensure_ca(tmp_path / "b")
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    key = pki._load_key(issued.key)
    assert not pki.is_reusable(cert, key, other_ca, "data1", ["198.18.1.31"])


def test_near_expiry_is_not_reusable(tmp_path: Path, monkeypatch) -> None:
    issued = pki.issue_host_cert(tmp_path, "data1", ["198.18.1.31"])
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(issued.ca_cert.read_bytes())
    key = pki._load_key(issued.key)
    later = pki._now() + dt.timedelta(days=pki.HOST_VALID_DAYS - pki.RENEW_BEFORE_DAYS + 1)
    monkeypatch.setattr(pki, "_now", lambda: later)
    assert not pki.is_reusable(cert, key, ca, "data1", ["198.18.1.31"])
