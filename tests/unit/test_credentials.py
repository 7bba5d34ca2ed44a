"""Consortium credentials: key types and modes, certificates that verify, a real TLS handshake, refusal to overwrite."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from common.credentials import (
    CredentialError,
    CredentialExistsError,
    CredentialPaths,
    create_ca,
    create_server_cert,
    create_signing_keypair,
    create_site_keypair,
    fingerprint,
)
from common.errors import FedcareError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CredentialPaths:
    """A CA and a server certificate for localhost, 127.0.0.1 and ::1, shared by the read-only tests."""
    paths = CredentialPaths(tmp_path_factory.mktemp("pki") / "consortium")
    ca_cert, ca_key = create_ca(paths.root)
    create_server_cert(paths.root, ca_cert, ca_key, hosts=["localhost", "127.0.0.1", "::1"])
    return paths


def test_create_ca_writes_a_p384_ca_with_owner_only_key(pki: CredentialPaths) -> None:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)
    assert key.public_key() == cert.public_key()
    assert _mode(pki.ca_key) == 0o600
    assert _mode(pki.ca_cert) == 0o644
    assert _mode(pki.root) == 0o700
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and not usage.value.digital_signature
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert cert.subject.rfc4514_string() == "CN=fedcare consortium CA"
    assert cert.signature_hash_algorithm.name == "sha384"
    cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_create_server_cert_is_signed_by_the_ca_with_the_given_sans(pki: CredentialPaths) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.issuer == ca.subject
    assert cert.subject.rfc4514_string() == "CN=localhost"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert cert.signature_hash_algorithm.name == "sha384"
    assert cert.not_valid_before_utc < ca.not_valid_after_utc
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 825
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert key.public_key() == cert.public_key()
    assert _mode(pki.server_key) == 0o600
    assert _mode(pki.server_cert) == 0o644


def test_create_server_cert_rejects_a_host_that_is_neither_name_nor_ip(tmp_path: Path, pki: CredentialPaths) -> None:
    for hosts in (["bad host"], [], "localhost", ["[::1]"]):
        with pytest.raises(CredentialError, match="host"):
            create_server_cert(tmp_path, pki.ca_cert, pki.ca_key, hosts=hosts)
    assert list(tmp_path.iterdir()) == []


def test_create_server_cert_rejects_a_key_that_is_not_the_cas(tmp_path: Path, pki: CredentialPaths) -> None:
    _, other_key = create_ca(tmp_path / "other")
    with pytest.raises(CredentialError, match="is not the private key of"):
        create_server_cert(tmp_path / "server", pki.ca_cert, other_key)
    assert not (tmp_path / "server").exists()


def test_create_site_keypair_writes_an_openssh_p384_pair_flower_can_load(tmp_path: Path) -> None:
    private_path, public_path = create_site_keypair(tmp_path / "site", "hospital-a")
    assert (private_path.name, public_path.name) == ("hospital-a", "hospital-a.pub")
    assert _mode(private_path) == 0o600
    assert _mode(public_path) == 0o644
    assert _mode(tmp_path / "site") == 0o700
    assert private_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(private_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)
    line = public_path.read_text()
    assert line.startswith("ecdsa-sha2-nistp384 ")
    assert line.count("\n") == 1 and line.endswith("\n")
    public = serialization.load_ssh_public_key(line.encode())
    assert public == key.public_key()


@pytest.mark.parametrize("site_id", ["", "../escape", "a/b", ".hidden", "x" * 129, "naïve"])
def test_create_site_keypair_rejects_a_site_id_that_is_not_a_plain_name(tmp_path: Path, site_id: str) -> None:
    with pytest.raises(CredentialError, match="site id"):
        create_site_keypair(tmp_path, site_id)
    assert list(tmp_path.iterdir()) == []


def test_create_signing_keypair_writes_ed25519_pem(tmp_path: Path) -> None:
    private_path, public_path = create_signing_keypair(tmp_path)
    assert (private_path.name, public_path.name) == ("coordinator.key", "coordinator.pub")
    assert _mode(private_path) == 0o600
    assert _mode(public_path) == 0o644
    key = serialization.load_pem_private_key(private_path.read_bytes(), None)
    public = serialization.load_pem_public_key(public_path.read_bytes())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert public == key.public_key()
    assert public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_create_site_keypair_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    private_path, _ = create_site_keypair(tmp_path, "site-1")
    before = private_path.read_bytes()
    with pytest.raises(CredentialExistsError, match="refusing to overwrite") as info:
        create_site_keypair(tmp_path, "site-1")
    assert isinstance(info.value, FedcareError) and isinstance(info.value, FileExistsError)
    assert private_path.read_bytes() == before
    create_site_keypair(tmp_path, "site-1", overwrite=True)
    assert private_path.read_bytes() != before
    assert _mode(private_path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site-1", "site-1.pub"]


def test_create_ca_and_server_cert_refuse_to_overwrite_unless_asked(tmp_path: Path) -> None:
    ca_cert, ca_key = create_ca(tmp_path)
    server_cert, _ = create_server_cert(tmp_path, ca_cert, ca_key)
    ca_before, server_before = ca_cert.read_bytes(), server_cert.read_bytes()
    with pytest.raises(CredentialExistsError, match="ca.crt"):
        create_ca(tmp_path)
    with pytest.raises(CredentialExistsError, match="server.crt"):
        create_server_cert(tmp_path, ca_cert, ca_key)
    assert (ca_cert.read_bytes(), server_cert.read_bytes()) == (ca_before, server_before)
    create_server_cert(tmp_path, ca_cert, ca_key, overwrite=True)
    assert server_cert.read_bytes() != server_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]


def test_create_refuses_when_only_one_of_the_pair_exists(tmp_path: Path) -> None:
    (tmp_path / "coordinator.pub").write_text("someone else's key\n")
    with pytest.raises(CredentialExistsError, match="coordinator.pub"):
        create_signing_keypair(tmp_path)
    assert not (tmp_path / "coordinator.key").exists()
    assert (tmp_path / "coordinator.pub").read_text() == "someone else's key\n"


def test_fingerprint_is_ssh_keygen_style_and_format_independent(tmp_path: Path) -> None:
    _, site_pub = create_site_keypair(tmp_path, "site")
    blob = base64.b64decode(site_pub.read_text().split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(site_pub) == expected
    assert len(expected) == len("SHA256:") + 43

    signing_key, signing_pub = create_signing_keypair(tmp_path)
    key = serialization.load_pem_private_key(signing_key.read_bytes(), None)
    ssh_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (tmp_path / "signing-ssh.pub").write_bytes(ssh_line + b"\n")
    assert fingerprint(signing_pub) == fingerprint(tmp_path / "signing-ssh.pub")
    assert fingerprint(signing_pub) != fingerprint(site_pub)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    _, site_pub = create_site_keypair(tmp_path, "site")
    cmd = ["ssh-keygen", "-l", "-f", str(site_pub)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=10)
    assert out.stdout.split()[1] == fingerprint(site_pub)


def test_fingerprint_rejects_a_file_that_is_no_public_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(CredentialError, match="junk.pub"):
        fingerprint(tmp_path / "junk.pub")
    with pytest.raises(CredentialError, match="does not exist"):
        fingerprint(tmp_path / "missing.pub")


def _handshake(paths: CredentialPaths, trusted_ca: Path, server_hostname: str = "localhost") -> str:
    """Serve TLS with the server certificate on an ephemeral port, connect trusting ``trusted_ca``, read 2 bytes."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.server_cert, paths.server_key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=trusted_ca)
    # Strict RFC 5280 checks, the default from Python 3.13 on.
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(2)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (OSError, ssl.SSLError):
                    pass  # the client refused the certificate: that is the test's business, not the server's

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                return tls.recv(2).decode()
        finally:
            thread.join(timeout=2)
            assert not thread.is_alive()


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_tls_handshake_succeeds_with_the_consortium_ca(pki: CredentialPaths, server_hostname: str) -> None:
    assert _handshake(pki, pki.ca_cert, server_hostname) == "ok"


def test_tls_handshake_fails_with_another_ca(tmp_path: Path, pki: CredentialPaths) -> None:
    other_ca, _ = create_ca(tmp_path, name="some other CA")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        _handshake(pki, other_ca)


def test_tls_handshake_fails_for_a_host_not_in_the_certificate(pki: CredentialPaths) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch|IP address mismatch"):
        _handshake(pki, pki.ca_cert, "superlink.example.org")
