"""The deploy CA: TLS certificates for etcd peers and clients and Patroni's etcd client.

Kept on the machine that runs pyinfra (data key ``pki_dir``), never on a target, so a
lost data host cannot leak the signing key.  The CA is made once and reused: every
etcd member and Patroni trusts ``ca.crt``, so regenerating it would cut them apart.
Per-host certificates are made once too and only re-issued when they would no longer
be accepted (other CA, other names, near expiry): a rerun pushes identical files and
changes nothing.

Layout of ``pki_dir`` (mode 0700)::

    ca.crt, ca.key                  the deploy CA (key 0600)
    hosts/<name>.crt, <name>.key    one certificate per host, server + client use
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
HOST_VALID_DAYS = 825
RENEW_BEFORE_DAYS = 30
"""A host certificate expiring sooner than this is re-issued on the next run."""
CA_NAME = "onlyoffice-ha deploy CA"


@dataclass(frozen=True)
class HostCert:
    """Paths of one host's certificate and key on the controller (and the CA's cert)."""

    cert: Path
    key: Path
    ca_cert: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (a key is never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), f"{path} is not an EC key"
    return key


def ensure_ca(pki_dir: str | Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the deploy CA from ``pki_dir``, making it (key 0600, dir 0700) the first time."""
    root = Path(pki_dir)
    crt, key = root / "ca.crt", root / "ca.key"
    if crt.exists() and key.exists():
        if key.stat().st_mode & 0o077:
            key.chmod(0o600)
        return x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(key)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
        .sign(private, hashes.SHA256())
    )
    # Key first: a crash between the two writes leaves no CA cert without its key.
    _write_private(key, _key_pem(private), 0o600)
    _write_private(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, private


def wanted_names(name: str, addresses: Iterable[str]) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) a host's certificate must carry."""
    dns, ips = {name}, set()
    for value in addresses:
        try:
            ips.add(str(ipaddress.ip_address(value)))
        except ValueError:
            dns.add(value)
    return dns, ips


def _cert_names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def is_reusable(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                name: str, addresses: Iterable[str]) -> bool:
    """True if ``cert`` was signed by ``ca_cert``, matches ``key``, carries exactly the wanted
    names and stays valid for more than RENEW_BEFORE_DAYS."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # noqa: BLE001  (any verification failure = not ours)
        return False
    same_key = cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    fresh = cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_BEFORE_DAYS)
    return same_key and fresh and _cert_names(cert) == wanted_names(name, addresses)


def issue_host_cert(pki_dir: str | Path, name: str, addresses: Iterable[str]) -> HostCert:
    """The certificate of host ``name`` (SANs: ``name`` and ``addresses``), reused when valid.

    One certificate serves as TLS server (etcd client and peer ports) and as TLS client
    (etcd peers, Patroni, etcdctl), so each host holds one key.
    """
    addresses = list(addresses)
    root = Path(pki_dir)
    ca_cert, ca_key = ensure_ca(root)
    crt, key_path = root / "hosts" / f"{name}.crt", root / "hosts" / f"{name}.key"
    result = HostCert(crt, key_path, root / "ca.crt")
    if crt.exists() and key_path.exists():
        existing, key = x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(key_path)
        if is_reusable(existing, key, ca_cert, name, addresses):
            return result
    dns, ips = wanted_names(name, addresses)
    private = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns)]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=HOST_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, data_encipherment=False, key_agreement=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(private), 0o600)
    _write_private(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return result


def host_cert_for(target: object) -> HostCert:
    """The certificate of a pyinfra ``Host`` (SANs: its name and ``private_address``)."""
    data = target.data  # type: ignore[attr-defined]
    pki_dir = data.get("pki_dir") or DEFAULT_PKI_DIR
    return issue_host_cert(pki_dir, target.name, [data.get("private_address")])  # type: ignore[attr-defined]


DEFAULT_PKI_DIR = "/etc/onlyoffice-ha/pki"
"""Production default of ``pki_dir`` (the lab sets ``<lab dir>/pki``)."""


def push_host_cert(label: str, directory: str, owner: str) -> list[Any]:
    """Put the current host's certificate, key and the CA into ``directory`` (0700, files 0600).

    The operations, directory first, so the caller can restart its service when any changed.
    The key goes through private_put: its content never appears in ``--diff`` output.
    """
    from pyinfra import host
    from pyinfra.operations import files

    from ooha.ops.private_files import private_put

    cert = host_cert_for(host)
    ops = [files.directory(name=f"{label} PKI directory", path=directory, user=owner, group=owner, mode="700")]
    for src, dest in ((cert.ca_cert, "ca.crt"), (cert.cert, "host.crt"), (cert.key, "host.key")):
        put = private_put if dest == "host.key" else files.put
        ops.append(put(name=f"{label} {dest}", src=str(src), dest=f"{directory}/{dest}", user=owner, group=owner,
                       mode="600"))
    return ops
