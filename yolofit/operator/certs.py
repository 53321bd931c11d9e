"""Webhook TLS: a CA and a serving certificate made with `cryptography`.

kopf can self-sign, but only through oscrypto, which breaks on current OpenSSL; so the
operator makes its own CA (its PEM is the webhook configurations' caBundle) and a serving
certificate for 127.0.0.1/localhost (sandbox) and the webhook Service's DNS names
(in-cluster). Existing files are reused while they are valid for the wanted names, so a
restart keeps the caBundle the apiserver already trusts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class WebhookCerts:
    cafile: Path
    certfile: Path
    pkeyfile: Path

    @property
    def ca_pem(self) -> bytes:
        return self.cafile.read_bytes()


def service_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           signer: ec.EllipticCurvePrivateKey, ca: bool, names: list[str]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(_san(names), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _valid_for(certfile: Path, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=7)
    return fresh and set(names) <= have


def ensure_certs(directory: Path, names: list[str]) -> WebhookCerts:
    """CA + serving cert for `names` (DNS names or IPs) in `directory`, made if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = WebhookCerts(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    if all(p.exists() for p in (certs.cafile, certs.certfile, certs.pkeyfile)) and _valid_for(
            certs.certfile, names):
        return certs
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yolofit-webhook-ca")])
    ca = _build("yolofit-webhook-ca", ca_key, ca_name, ca_key, True, [])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build(names[0], key, ca_name, ca_key, False, names)
    certs.pkeyfile.write_bytes(_pem_key(key))
    certs.pkeyfile.chmod(0o600)
    certs.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return certs
