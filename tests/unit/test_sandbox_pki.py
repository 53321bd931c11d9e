"""The sandbox PKI: certificates chain to the CA, carry the right names and usages,
and work in a real TLS handshake with client authentication."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from yolofit.sandbox.pki import issue_cert, load_cert_key, make_ca


def test_ca_is_a_ca_and_signs_leaves() -> None:
    ca = make_ca("test-ca")
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf = issue_cert(ca, "svc", hosts=["127.0.0.1", "svc.ns.svc"], server=True)
    leaf.cert.verify_directly_issued_by(ca.cert)
    sans = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    usages = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_cert_carries_groups_as_organizations() -> None:
    client = issue_cert(make_ca(), "admin", organizations=["system:masters"], client=True)
    orgs = client.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    with pytest.raises(ValueError, match="server=True, client=True"):
        issue_cert(make_ca(), "nobody")


def test_files_round_trip_with_private_keys(tmp_path: Path) -> None:
    ca = make_ca()
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    again = load_cert_key(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert again.cert == ca.cert
    issue_cert(again, "x", client=True).cert.verify_directly_issued_by(ca.cert)


def test_tls_handshake_with_client_certificate(tmp_path: Path) -> None:
    ca = make_ca()
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    issue_cert(ca, "server", hosts=["localhost", "127.0.0.1"], server=True).write(
        tmp_path / "s.crt", tmp_path / "s.key"
    )
    issue_cert(ca, "alice", client=True).write(tmp_path / "c.crt", tmp_path / "c.key")

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    server_ctx.load_verify_locations(tmp_path / "ca.crt")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    client_ctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            seen.append(subject["commonName"])
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()
    assert seen == ["alice"]
