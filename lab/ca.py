"""The lab CA (.lab/ca/) and the services host's TLS certificate, made with `cryptography`.

Made once and reused: hosts and this machine's engine trust ca.crt, so regenerating it
would silently break every trust store that already holds it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import state

VALID_DAYS = 3650


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the lab CA, creating it (key 0600) the first time."""
    crt, key = state.ca_dir() / "ca.crt", state.ca_dir() / "ca.key"
    if crt.exists() and key.exists():
        return (x509.load_pem_x509_certificate(crt.read_bytes()),
                serialization.load_pem_private_key(key.read_bytes(), password=None))  # type: ignore[return-value]
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ooha lab CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
            .sign(private, hashes.SHA256()))
    state.write_private(key, _key_pem(private))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    crt.chmod(0o644)
    return cert, private


def ensure_server_cert(name: str, address: str) -> tuple[Path, Path]:
    """A server certificate for address (IP SAN) signed by the lab CA; made once per name+address."""
    ca_cert, ca_key = ensure_ca()
    crt, key = state.ca_dir() / f"{name}.crt", state.ca_dir() / f"{name}.key"
    if crt.exists() and key.exists():
        existing = x509.load_pem_x509_certificate(crt.read_bytes())
        sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if (ipaddress.ip_address(address) in sans.get_values_for_type(x509.IPAddress)
                and existing.issuer == ca_cert.subject and existing.not_valid_after_utc > _now() + dt.timedelta(days=30)):
            return crt, key
    private = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_cert.subject).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address)),
                                                        x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    state.write_private(key, _key_pem(private))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


def front_paths() -> tuple[Path, Path]:
    """Where the load balancers' front certificate and key live (.lab/tls/front.crt, .key)."""
    tls = state.state_dir() / "tls"
    return tls / "front.crt", tls / "front.key"


def ensure_front_cert(addresses: list[str]) -> tuple[Path, Path]:
    """The load balancers' TLS certificate (IP SANs: the VIP and each LB's front address).

    Made once and kept while it covers ``addresses`` and is valid for 30 more days, so a
    rerun of ``up`` never changes what the deploy pushes (its second run changes nothing).
    The chain (certificate + lab CA) goes in front.crt, as nginx's ssl_certificate wants.
    """
    ca_cert, ca_key = ensure_ca()
    crt, key = front_paths()
    wanted = {ipaddress.ip_address(a) for a in addresses}
    if crt.exists() and key.exists():
        existing = x509.load_pem_x509_certificate(crt.read_bytes())
        sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if (wanted <= set(sans.get_values_for_type(x509.IPAddress)) and existing.issuer == ca_cert.subject
                and existing.not_valid_after_utc > _now() + dt.timedelta(days=30)):
            return crt, key
    private = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
            .issuer_name(ca_cert.subject).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    state.write_private(key, _key_pem(private))
    crt.parent.chmod(0o700)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    crt.chmod(0o644)
    return crt, key
