"""Consortium credentials: a private CA, the SuperLink's TLS certificate, site keys and the adapter signing key."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import FedcareError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700

# Site ids and key names become file names: one plain component, never a path or a hidden file.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A DNS name in A-label form, optionally a leading wildcard label; IP literals are recognised separately.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}\.?")
# Backdating absorbs small clock differences between the coordinator and the sites.
_BACKDATE = dt.timedelta(minutes=1)


class CredentialError(FedcareError, ValueError):
    """A credential input is unusable: a bad name or host, a key of the wrong kind, a CA that does not match."""


class CredentialExistsError(FedcareError, FileExistsError):
    """A credential file already exists and ``overwrite=True`` was not given."""


@dataclass(frozen=True)
class CredentialPaths:
    """Where the ``create_*`` functions put their files when all of them are given the same ``root``.

    Files (private ones 0o600 in a directory created 0o700, public ones 0o644):

    - ``ca.crt`` / ``ca.key``: the consortium CA (``create_ca``); ``ca.crt`` goes to every site
      (``flower-supernode --root-certificates``); ``fedcare certs`` writes ``ca.key`` into a separate folder
      (``key_dir``, ``--ca-dir``) that stays with the CA operator, offline if possible.
    - ``server.crt`` / ``server.key``: the SuperLink's TLS certificate (``create_server_cert``;
      ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile server.key``).
    - ``<site_id>`` / ``<site_id>.pub``: a site's OpenSSH EC P-384 key pair (``create_site_keypair``); the private
      key never leaves the site (``flower-supernode --auth-supernode-private-key``), the public one is enrolled
      with ``flwr supernode register``.
    - ``<name>.key`` / ``<name>.pub``: the Ed25519 adapter signing key pair (``create_signing_keypair``).

    Attributes:
        root: The directory holding the files.
    """

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (PEM)."""
        return self.root / CA_CERT

    @property
    def ca_key(self) -> Path:
        """The CA private key (PEM PKCS8)."""
        return self.root / CA_KEY

    @property
    def server_cert(self) -> Path:
        """The SuperLink's certificate (PEM)."""
        return self.root / SERVER_CERT

    @property
    def server_key(self) -> Path:
        """The SuperLink's private key (PEM PKCS8)."""
        return self.root / SERVER_KEY

    def site_key(self, site_id: str) -> Path:
        """A site's private key (OpenSSH)."""
        return self.root / _check_name(site_id, "site id")

    def site_public_key(self, site_id: str) -> Path:
        """A site's public key (one OpenSSH line)."""
        return self.root / f"{_check_name(site_id, 'site id')}.pub"

    def signing_key(self, name: str = "coordinator") -> Path:
        """The adapter signing private key (PEM PKCS8)."""
        return self.root / f"{_check_name(name, 'signing key name')}.key"

    def signing_public_key(self, name: str = "coordinator") -> Path:
        """The adapter signing public key (PEM SubjectPublicKeyInfo)."""
        return self.root / f"{_check_name(name, 'signing key name')}.pub"


def create_ca(
    out_dir: Path,
    *,
    key_dir: Path | None = None,
    name: str = "fedcare consortium CA",
    days: int = 3650,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Create the consortium's self-signed CA: an EC P-384 key and a certificate that may sign only leaf certificates.

    Args:
        out_dir: Directory for ``ca.crt`` (and ``ca.key`` unless ``key_dir``); created 0o700 if missing.
        key_dir: Directory for ``ca.key``, apart from what is shipped (``fedcare certs --ca-dir``).
        name: The CA's common name.
        days: Validity in days.
        overwrite: Replace existing files instead of refusing.

    Returns:
        ``(ca.crt, ca.key)`` paths.

    Raises:
        CredentialExistsError: A file exists and ``overwrite`` is False.
        CredentialError: ``name`` is empty or ``days`` is not positive.
    """
    paths = CredentialPaths(Path(out_dir))
    ca_key = CredentialPaths(Path(key_dir or out_dir)).ca_key
    _check_days(days)
    if not name.strip():
        raise CredentialError("CA name must not be empty")
    _refuse_existing([paths.ca_cert, ca_key], overwrite)

    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) - _BACKDATE
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        # path_length=0: the CA signs the SuperLink's certificate directly and can never mint sub-CAs.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA384())
    )
    _write_private(ca_key, _pkcs8(key, protect=True), overwrite)
    _write_public(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), overwrite)
    return paths.ca_cert, ca_key


def create_server_cert(
    out_dir: Path,
    ca_cert: Path,
    ca_key: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 825,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Create the SuperLink's TLS server certificate, signed by the consortium CA.

    The validity is cut to the CA's own end date, since a certificate cannot outlive its issuer's.

    Args:
        out_dir: Directory for ``server.crt`` and ``server.key``; created 0o700 if missing.
        ca_cert: The CA certificate from ``create_ca``.
        ca_key: The CA private key from ``create_ca``.
        hosts: Names the sites connect to: DNS names become SubjectAltName DNSName entries, IP literals IPAddress
            entries; the first one is also the common name (if at most 64 characters).
        days: Validity in days.
        overwrite: Replace existing files instead of refusing.

    Returns:
        ``(server.crt, server.key)`` paths.

    Raises:
        CredentialExistsError: A file exists and ``overwrite`` is False.
        CredentialError: No hosts or an invalid one, ``days`` not positive, or the CA files are unreadable, not a CA,
            or do not belong together.
    """
    paths = CredentialPaths(Path(out_dir))
    _check_days(days)
    names = _subject_alt_names(hosts)
    issuer, issuer_key = _load_ca(Path(ca_cert), Path(ca_key))
    _refuse_existing([paths.server_cert, paths.server_key], overwrite)

    key = ec.generate_private_key(ec.SECP384R1())
    start = dt.datetime.now(dt.UTC) - _BACKDATE
    end = min(start + dt.timedelta(days=days), issuer.not_valid_after_utc)
    if end <= start:
        raise CredentialError(f"{ca_cert}: the CA expired on {issuer.not_valid_after_utc:%Y-%m-%d}")
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # X.509 caps a CN at 64 characters; clients match the SANs anyway, so a long first host only loses its CN.
    common_name = hosts[0] if len(hosts[0]) <= 64 else "fedcare superlink"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .sign(issuer_key, hashes.SHA384())
    )
    _write_private(paths.server_key, _pkcs8(key), overwrite)
    _write_public(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), overwrite)
    return paths.server_cert, paths.server_key


def create_site_keypair(out_dir: Path, site_id: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create a site's SuperNode authentication key pair: EC P-384 in OpenSSH format.

    This is what ``flower-supernode --auth-supernode-private-key`` loads and ``flwr supernode register`` accepts;
    Flower rejects Ed25519 here.

    Args:
        out_dir: Directory for ``<site_id>`` and ``<site_id>.pub``; created 0o700 if missing.
        site_id: The site's id, used as the file name: letters, digits, ``.``, ``_``, ``-``, not starting with a dot.
        overwrite: Replace existing files instead of refusing.

    Returns:
        ``(private key, public key)`` paths.

    Raises:
        CredentialExistsError: A file exists and ``overwrite`` is False.
        CredentialError: ``site_id`` is not a plain file name.
    """
    paths = CredentialPaths(Path(out_dir))
    private_path, public_path = paths.site_key(site_id), paths.site_public_key(site_id)
    _refuse_existing([private_path, public_path], overwrite)

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_private(private_path, private, overwrite)
    _write_public(public_path, public + b"\n", overwrite)
    return private_path, public_path


def create_signing_keypair(
    out_dir: Path, name: str = "coordinator", *, key_dir: Path | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """Create the Ed25519 key pair that signs released adapters.

    Args:
        out_dir: Directory for ``<name>.key`` (PEM PKCS8) and ``<name>.pub`` (PEM SubjectPublicKeyInfo); created
            0o700 if missing.
        name: The key's name, used in the file names; same rules as a site id.
        key_dir: Directory for ``<name>.key`` when it must not sit beside its public half (the consortium's
            app-signing key, kept with the CA key).
        overwrite: Replace existing files instead of refusing.

    Returns:
        ``(private key, public key)`` paths.

    Raises:
        CredentialExistsError: A file exists and ``overwrite`` is False.
        CredentialError: ``name`` is not a plain file name.
    """
    paths = CredentialPaths(Path(out_dir))
    private_path = CredentialPaths(Path(key_dir or out_dir)).signing_key(name)
    public_path = paths.signing_public_key(name)
    _refuse_existing([private_path, public_path], overwrite)

    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_private(private_path, _pkcs8(key, protect=True), overwrite)
    _write_public(public_path, public, overwrite)
    return private_path, public_path


def fingerprint(public_key_path: Path) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it, for comparing keys by eye when enrolling a site.

    Args:
        public_key_path: A one-line OpenSSH public key or a PEM SubjectPublicKeyInfo public key.

    Returns:
        ``"SHA256:<base64 without padding>"`` of the key's OpenSSH wire blob; the same key gives the same value in
        either file format.

    Raises:
        CredentialError: The file is missing or holds no public key this can read.
    """
    return key_fingerprint(load_public_key(Path(public_key_path)))


def load_public_key(path: Path) -> PublicKeyTypes:
    """Read a one-line OpenSSH or a PEM SubjectPublicKeyInfo public key.

    Raises:
        CredentialError: The file is missing or holds no public key this can read.
    """
    from common.files import read_regular

    data = read_regular(path, "public key", error=CredentialError)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return serialization.load_pem_public_key(data)
        return serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(f"{path}: not an OpenSSH or PEM public key") from None


def _read_small(path: Path, what: str) -> bytes:
    from common.files import read_regular

    return read_regular(path, what, error=CredentialError)


def key_fingerprint(public_key: PublicKeyTypes) -> str:
    """``fingerprint`` of a loaded public key.

    Args:
        public_key: An EC or Ed25519 public key (any key type OpenSSH can encode).

    Returns:
        ``"SHA256:<base64 without padding>"`` of the key's OpenSSH wire blob.

    Raises:
        CredentialError: OpenSSH cannot encode the key (e.g. an EC key on a non-NIST curve).
    """
    try:
        line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except ValueError as err:
        raise CredentialError(f"no OpenSSH encoding for a {type(public_key).__name__}") from err
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CredentialError(
            f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise CredentialError(f"days must be a positive integer, got {days!r}")


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    # A bare string would silently become one SAN per character.
    if isinstance(hosts, str) or not hosts:
        raise CredentialError("hosts must be a non-empty list of DNS names or IP addresses")
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host or host != host.strip():
            raise CredentialError(f"host {host!r} is not a DNS name or IP address")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        # Certificates carry A-labels only; internationalised names must be punycoded by the caller.
        if len(host) > 253 or not _DNS_NAME.fullmatch(host):
            raise CredentialError(f"host {host!r} is not a DNS name (ASCII labels) or IP address")
        names.append(x509.DNSName(host))
    return names


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(_read_small(cert_path, "certificate"))
    except OSError as err:
        raise CredentialError(f"{cert_path}: cannot read the CA certificate ({err.strerror})") from err
    except ValueError as err:
        raise CredentialError(f"{cert_path}: not a PEM certificate") from err
    try:
        key = serialization.load_pem_private_key(_read_small(key_path, "private key"), key_passphrase())
    except OSError as err:
        raise CredentialError(f"{key_path}: cannot read the CA key ({err.strerror})") from err
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CredentialError(
            f"{key_path}: not a PEM private key, or encrypted and ${PASSPHRASE_ENV} is missing or wrong"
        ) from err
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound as err:
        raise CredentialError(f"{cert_path}: not a CA certificate made by create_ca") from err
    if not constraints.ca:
        raise CredentialError(f"{cert_path}: not a CA certificate (BasicConstraints ca=False)")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CredentialError(f"{key_path}: is not the private key of {cert_path}")
    return cert, key


PASSPHRASE_ENV = "FEDCARE_KEY_PASSPHRASE"  # when set: the CA key and the adapter-signing key are encrypted with it


def key_passphrase() -> bytes | None:
    """The passphrase protecting the CA and signing keys (``$FEDCARE_KEY_PASSPHRASE``), or None."""
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode("utf-8") if value else None


def _pkcs8(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, *, protect: bool = False) -> bytes:
    secret = key_passphrase() if protect else None
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    # Checked up front so a refusal never leaves a new certificate next to an old key.
    if overwrite:
        return
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing:
        raise CredentialExistsError(f"refusing to overwrite {', '.join(existing)}; pass overwrite=True to replace")


def _ensure_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
        # mkdir's mode is masked by the umask; a directory made for private keys must be exactly owner-only.
        os.chmod(directory, PRIVATE_DIR_MODE)


def _write_private(path: Path, data: bytes, overwrite: bool) -> None:
    _ensure_private_dir(path.parent)
    write_atomic(path, data, PRIVATE_MODE, overwrite=overwrite)


def _write_public(path: Path, data: bytes, overwrite: bool) -> None:
    _ensure_private_dir(path.parent)
    write_atomic(path, data, PUBLIC_MODE, overwrite=overwrite)


def write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file, with ``mode`` from the start.

    The bytes go to a temporary file in the same directory, created owner-only with ``O_EXCL`` (``mkstemp``) and
    set to ``mode`` before anything is written, then moved into place: renamed over ``path`` (``overwrite``) or
    hard-linked to it, which fails atomically if ``path`` exists.

    Args:
        path: The destination file; its directory must exist.
        data: The file's contents.
        mode: Permission bits, e.g. 0o600 for a private key or 0o644 for a certificate.
        overwrite: Replace an existing ``path`` instead of refusing.

    Raises:
        CredentialExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: The directory is missing or not writable.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp gives 0o600 regardless of the umask; set the exact bits before the data is there.
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError as err:
            raise CredentialExistsError(f"refusing to overwrite {path}; pass overwrite=True to replace") from err
        except OSError:
            # Some filesystems (FAT, a few network mounts) have no hard links; fall back to check-then-rename.
            if os.path.lexists(path):
                raise CredentialExistsError(f"refusing to overwrite {path}; pass overwrite=True to replace") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
