"""Certificates for the sandbox: a CA, serving and client certificates it signs,
and the service-account signing key. Reusable: the operator imports `make_ca` and
`issue_cert` for its webhook serving certificate.

Keys are ECDSA P-256: generating one takes microseconds (RSA-2048 takes tens of
milliseconds), and every Kubernetes component and Python's ssl accept them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)
# EC everywhere; RSA only where a consumer insists (Kueue's cert rotator reads its CA key as
# PKCS#1 RSA).
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between processes


@dataclass(frozen=True)
class CertKey:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both as PEM; the key readable by the owner only."""
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600, exist_ok=True)
        key_path.write_bytes(self.key_pem)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(
    common_name: str = "yolofit-sandbox-ca",
    validity: dt.timedelta = _VALIDITY,
    hosts: Iterable[str] = (),
    key: PrivateKey | None = None,
) -> CertKey:
    """A self-signed CA that may sign leaf certificates (path length 0).

    `hosts` puts DNS names into the CA's own SAN: Kueue's certificate rotator accepts a
    CA only when it verifies for the DNS name `kueue-ca` (see sandbox/kueue.py). `key`
    defaults to a new EC key.
    """
    key = key or new_key()
    now = dt.datetime.now(dt.UTC)
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    sans = [_san(h) for h in hosts]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(key, hashes.SHA256()), key)


def issue_cert(
    ca: CertKey,
    common_name: str,
    *,
    organizations: Iterable[str] = (),
    hosts: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
    validity: dt.timedelta = _VALIDITY,
) -> CertKey:
    """A leaf certificate signed by `ca`.

    `hosts` are DNS names or IP addresses (each goes into the SAN as the right kind);
    `organizations` become O= (Kubernetes reads them as groups: system:masters = admin).
    `server`/`client` set the extended key usages; at least one is required.
    """
    if not (server or client):
        raise ValueError("issue_cert: set server=True, client=True or both")
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    sans = [_san(h) for h in hosts]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def load_cert_key(cert_path: Path, key_path: Path) -> CertKey:
    """Read a CertKey back from PEM files (e.g. the sandbox CA, to sign more certs)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return CertKey(cert, key)
