"""Signed adapter directories: an Ed25519-signed manifest of every file's SHA-256, checked before an adapter is used."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.credentials import (
    PASSPHRASE_ENV,
    CredentialError,
    key_fingerprint,
    key_passphrase,
    load_public_key,
    write_atomic,
)
from common.errors import FedcareError
from common.files import read_regular

MANIFEST = "fedcare-signature.json"
VERSION = 1
ALGORITHM = "ed25519"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_BAD_SIGNATURE = "signature does not match: the manifest was altered or signed by another key"


class SignatureError(FedcareError, ValueError):
    """An adapter directory is unsigned, its manifest is not genuine, or its files differ from what was signed."""


def sign_adapter(adapter_dir: Path, private_key_path: Path, facts: dict[str, Any] | None = None) -> Path:
    """Sign every file of an adapter directory, writing ``adapter_dir/fedcare-signature.json``.

    The manifest is ``{"version": 1, "algorithm": "ed25519", "files": {relative POSIX name: sha256 hex},
    "public_key_fingerprint": "SHA256:...", "signature": base64}``; the signature covers the canonical JSON
    (sorted keys, no spaces) of everything but ``"signature"``. Every regular file under the directory is covered,
    recursively, except the top-level manifest; an existing manifest is replaced.

    Args:
        adapter_dir: The saved adapter (e.g. ``adapter_model.safetensors`` and ``adapter_config.json``).
        private_key_path: The Ed25519 private key (PEM PKCS8) from ``create_signing_keypair``.
        facts: What the adapter is, bound into the signature: ``run_id``, ``round``, ``strategy`` and each
            site's DP settings, epsilon and delta as reported, and its egress-log head (JSON values only).
            :func:`verify_adapter` checks ``run_id`` and ``round`` against the folder the adapter is in.

    Returns:
        The manifest's path.

    Raises:
        SignatureError: The directory is missing or empty, holds a symbolic link or special file, or the key is not
            an unencrypted Ed25519 private key.
    """
    adapter_dir = Path(adapter_dir)
    key = _load_private_key(Path(private_key_path))
    files = _hash_files(adapter_dir)
    if not files:
        raise SignatureError(f"{adapter_dir}: no files to sign")
    body: dict[str, Any] = {
        "version": VERSION,
        "algorithm": ALGORITHM,
        "files": files,
        "public_key_fingerprint": key_fingerprint(key.public_key()),
    }
    if facts is not None:
        body["facts"] = json.loads(json.dumps(facts, allow_nan=False))  # plain JSON, no inf/nan
    manifest = {**body, "signature": base64.b64encode(key.sign(_canonical(body))).decode("ascii")}
    path = adapter_dir / MANIFEST
    write_atomic(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"), 0o644, overwrite=True)
    return path


def verify_adapter(adapter_dir: Path, public_key_path: Path) -> dict:
    """Check that an adapter directory is exactly what the holder of the signing key signed.

    The manifest's signature is checked first, so the file list is trusted only once it is known to be genuine;
    then every file must be present with its signed hash and no other file may be there.

    Args:
        adapter_dir: The adapter directory holding ``fedcare-signature.json``.
        public_key_path: The Ed25519 public key (PEM SubjectPublicKeyInfo, or one OpenSSH ``ssh-ed25519`` line).

    Returns:
        The verified manifest.

    Raises:
        SignatureError: The manifest is missing or malformed, the signature does not match the key, or a file was
            modified, deleted or added after signing (every such file is named).
    """
    adapter_dir = Path(adapter_dir)
    public_key = _load_public_key(Path(public_key_path))
    manifest = _read_manifest(adapter_dir)
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        signature = base64.b64decode(manifest["signature"], validate=True)
        public_key.verify(signature, _canonical(body))
    # ValueError: the signature is not base64 (binascii.Error) or not ASCII at all.
    except (ValueError, InvalidSignature):
        expected = key_fingerprint(public_key)
        named = manifest.get("public_key_fingerprint")
        hint = f" (manifest names key {named}, verifying with {expected})" if named != expected else ""
        raise SignatureError(f"{adapter_dir / MANIFEST}: {_BAD_SIGNATURE}{hint}") from None

    signed: dict[str, str] = manifest["files"]
    actual = _hash_files(adapter_dir)
    problems = [
        f"{name} was modified after signing"
        for name in sorted(signed.keys() & actual.keys())
        if signed[name] != actual[name]
    ]
    problems += [f"{name} is missing (it was signed)" for name in sorted(signed.keys() - actual.keys())]
    problems += [
        f"{name} is not covered by the signature (added after signing)"
        for name in sorted(actual.keys() - signed.keys())
    ]
    if problems:
        raise SignatureError(f"{adapter_dir}: " + "; ".join(problems))
    _check_facts(adapter_dir, manifest.get("facts"))
    return manifest


def _check_facts(adapter_dir: Path, facts: Any) -> None:
    """The signed facts must name the run and round of the folder the adapter sits in (runs/<run>/adapters/round-N)."""
    if facts is None:
        return
    if not isinstance(facts, dict):
        raise SignatureError(f"{adapter_dir / MANIFEST}: 'facts' must be an object")
    folder = adapter_dir.resolve()
    match = re.fullmatch(r"round-(\d+)", folder.name)
    if match and folder.parent.name == "adapters":
        run_id = folder.parent.parent.name
        if facts.get("run_id") != run_id or facts.get("round") != int(match.group(1)):
            raise SignatureError(
                f"{adapter_dir}: signed for run {facts.get('run_id')!r} round {facts.get('round')!r}, but it sits "
                f"in run {run_id!r} round {int(match.group(1))}: an adapter copied from another run"
            )


def describe_facts(manifest: dict[str, Any]) -> str:
    """The signed facts of a verified manifest, as lines for a person."""
    facts = manifest.get("facts")
    if not facts:
        return "no signed facts (signed by an older fedcare): run, round and privacy are not bound"
    lines = [f"run {facts.get('run_id')} round {facts.get('round')} strategy {facts.get('strategy')}"]
    for site_id, site in sorted(dict(facts.get("sites") or {}).items()):
        if site.get("dp_enabled"):
            lines.append(
                f"  {site_id}: DP on, epsilon {site.get('epsilon'):.4g} of {site.get('target_epsilon'):g}, "
                f"delta {site.get('delta'):.3g}, noise multiplier {site.get('noise_multiplier'):.4g}, "
                f"egress log head {str(site.get('egress_head') or '-')[:16]} (seq {site.get('egress_seq')})"
            )
        else:
            lines.append(f"  {site_id}: DP OFF (no privacy guarantee)")
    return "\n".join(lines)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _hash_files(adapter_dir: Path) -> dict[str, str]:
    if not adapter_dir.is_dir():
        raise SignatureError(f"{adapter_dir}: not a directory")
    files: dict[str, str] = {}
    _walk(adapter_dir, "", files)
    return files


def _walk(directory: Path, prefix: str, files: dict[str, str]) -> None:
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = f"{prefix}{entry.name}"
            if name == MANIFEST:
                continue
            # A link could point anywhere, so what was hashed would not be what ships; refuse instead of following.
            if entry.is_symlink():
                raise SignatureError(f"{directory}: {name} is a symbolic link; adapters must hold regular files only")
            if entry.is_dir(follow_symlinks=False):
                _walk(Path(entry.path), f"{name}/", files)
            elif entry.is_file(follow_symlinks=False):
                with open(entry.path, "rb") as f:
                    files[name] = hashlib.file_digest(f, "sha256").hexdigest()
            else:
                raise SignatureError(f"{directory}: {name} is not a regular file")


def _read_manifest(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / MANIFEST
    if not adapter_dir.is_dir():
        raise SignatureError(f"{adapter_dir}: not a directory")
    if not path.is_file():
        raise SignatureError(f"{adapter_dir}: no {MANIFEST}; the adapter is not signed")
    try:
        manifest = json.loads(read_regular(path, "signature manifest", error=SignatureError))
    except (ValueError, RecursionError):  # json's message may quote the file: its kind is enough
        raise SignatureError(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict):
        raise SignatureError(f"{path}: expected a JSON object")
    if manifest.get("version") != VERSION or manifest.get("algorithm") != ALGORITHM:
        raise SignatureError(
            f"{path}: unsupported version/algorithm {manifest.get('version')!r}/{manifest.get('algorithm')!r}, "
            f"expected {VERSION}/{ALGORITHM!r}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256_HEX.fullmatch(v) for k, v in files.items()
    ):
        raise SignatureError(f"{path}: 'files' must map file names to SHA-256 hex digests")
    if not isinstance(manifest.get("signature"), str):
        raise SignatureError(f"{path}: 'signature' is missing")
    return manifest


def _load_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    data = read_regular(path, "signing key", error=SignatureError)
    try:
        key = serialization.load_pem_private_key(data, key_passphrase())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError(
            f"{path}: not a PEM private key, or encrypted and ${PASSPHRASE_ENV} is missing or wrong"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key (got {type(key).__name__})")
    return key


def _load_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    try:
        key = load_public_key(path)
    except CredentialError as err:
        raise SignatureError(str(err)) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key (got {type(key).__name__})")
    return key


# --- The consortium's signature over an app bundle (FAB) ------------------------------------------------------------

APP_SIGNATURE_VERSION = 1
APP_SIGNATURE_SUFFIX = ".sig"  # approved/fedcare.fab -> approved/fedcare.fab.sig


class AppRefusedError(FedcareError):
    """The coordinator shipped an app bundle the site did not approve (no trusted hash, no valid trusted signature)."""


class AppSignature(NamedTuple):
    """What a genuine app signature says: the bundle's hash, who signed it, and the release number it was given."""

    sha256: str
    signer: str  # "SHA256:..." fingerprint of public_key
    public_key: ed25519.Ed25519PublicKey
    release: int  # the consortium's release number of the bundle (0 = none given); signed with the hash


def sign_app(fab: bytes, private_key_path: Path, release: int = 0) -> str:
    """A detached Ed25519 signature over an app bundle's SHA-256 and release number, as one line of JSON.

    The line is ``{"version": 1, "algorithm": "ed25519", "sha256": hex, "release": int, "public_key": base64 raw
    key, "signer": "SHA256:...", "signature": base64}``; the signature covers the canonical JSON of everything but
    ``"signature"``, so it binds the bundle's hash and release to the signer. It travels with a run (the run config
    key ``app-signature``) and is checked by :func:`check_app` at each site before any of the bundle is installed.
    A site retires older bundles with ``min_app_release`` (or one bundle with ``revoked_apps``).

    Raises:
        SignatureError: The key is not an Ed25519 private key (or is encrypted and the passphrase is wrong), or
            ``release`` is not a non-negative integer.
    """
    if isinstance(release, bool) or not isinstance(release, int) or release < 0:
        raise SignatureError(f"app release: expected a non-negative integer, got {release!r}")
    key = _load_private_key(Path(private_key_path))
    public = key.public_key()
    body = {
        "version": APP_SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "sha256": hashlib.sha256(fab).hexdigest(),
        "release": release,
        "public_key": base64.b64encode(
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ).decode("ascii"),
        "signer": key_fingerprint(public),
    }
    return json.dumps(
        {**body, "signature": base64.b64encode(key.sign(_canonical(body))).decode("ascii")}, sort_keys=True
    )


def read_app_signature(text: str) -> AppSignature:
    """The signed hash, signer and release of a genuine signature line (a line without ``release``: release 0).

    "Genuine" means the signature matches the public key the line names; whether that key is trusted is the
    caller's decision (:func:`check_app`).

    Raises:
        SignatureError: The line is not a fedcare app signature, or its signature does not match its key.
    """
    try:
        sig = json.loads(text)
        if (
            not isinstance(sig, dict)
            or sig.get("version") != APP_SIGNATURE_VERSION
            or sig.get("algorithm") != ALGORITHM
        ):
            raise ValueError
        body = {k: v for k, v in sig.items() if k != "signature"}
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"], validate=True))
        signed = str(sig["sha256"])
        release = sig.get("release", 0)
        if (
            not _SHA256_HEX.fullmatch(signed)
            or isinstance(release, bool)
            or not isinstance(release, int)
            or release < 0
        ):
            raise ValueError
        public.verify(base64.b64decode(sig["signature"], validate=True), _canonical(body))
    except (ValueError, TypeError, KeyError, RecursionError, InvalidSignature):
        raise SignatureError(
            f"the app signature is not a valid fedcare app signature (version {APP_SIGNATURE_VERSION}, ed25519)"
        ) from None
    return AppSignature(signed, key_fingerprint(public), public, release)


def load_trusted_signers(paths: tuple[str, ...] | list[str]) -> dict[str, ed25519.Ed25519PublicKey]:
    """The Ed25519 public keys a site trusts to sign app bundles, by fingerprint.

    Raises:
        SignatureError: A file is missing or not an Ed25519 public key (the file is named).
    """
    keys = {}
    for path in paths:
        key = _load_public_key(Path(path))
        keys[key_fingerprint(key)] = key
    return keys


def check_app(
    fab: bytes,
    *,
    site_id: str,
    trusted_apps: tuple[str, ...] = (),
    trusted_signers: dict[str, ed25519.Ed25519PublicKey] | None = None,
    signature: str = "",
    claimed_hash: str = "",
    revoked_apps: tuple[str, ...] = (),
    min_release: int = 0,
) -> str:
    """Why a site may run this app bundle, or :class:`AppRefusedError` naming why not.

    Approved is a bundle whose SHA-256 is not in ``revoked_apps`` and is pinned in ``trusted_apps``, or that
    carries a signature, valid over exactly these bytes, by one of ``trusted_signers``, with a release number of
    at least ``min_release``. ``claimed_hash`` (the hash the SuperLink announces) must equal the bundle's own
    hash when given.

    Returns:
        ``"sha256 <hash> pinned in trusted_apps"`` or ``"sha256 <hash> release <n> signed by SHA256:..."``.

    Raises:
        AppRefusedError: The message names the site, the bundle's hash and the reason.
    """
    digest = hashlib.sha256(fab).hexdigest()
    refused = f"site {site_id} refused the app bundle sha256 {digest}"
    tail = "; nothing of it was installed or run"
    if claimed_hash and claimed_hash != digest:
        raise AppRefusedError(f"{refused}: the SuperLink claims it is sha256 {claimed_hash}{tail}")
    if digest in revoked_apps:
        raise AppRefusedError(f"{refused}: its site.yaml revokes this bundle (revoked_apps){tail}")
    if digest in trusted_apps:
        return f"sha256 {digest} pinned in trusted_apps"
    signers = trusted_signers or {}
    if not signature:
        how = "its site.yaml neither pins this hash (trusted_apps)"
        how += " nor does the run carry a consortium signature (app-signature)" if signers else ""
        raise AppRefusedError(f"{refused}: {how}{tail}")
    try:
        signed, signer, public, release = read_app_signature(signature)
    except SignatureError as err:
        raise AppRefusedError(f"{refused}: {err}{tail}") from None
    if signer not in signers or signers[signer].public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) != public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw):
        trusted = ", ".join(sorted(signers)) or "none"
        raise AppRefusedError(
            f"{refused}: it is signed by {signer}, not a key its site.yaml trusts (trusted_signers: {trusted}){tail}"
        )
    if signed != digest:
        raise AppRefusedError(
            f"{refused}: the signature by {signer} is for sha256 {signed}, not for this bundle "
            f"(the bundle was changed after signing){tail}"
        )
    if release < min_release:
        raise AppRefusedError(
            f"{refused}: it is signed as release {release}, older than the site's min_app_release {min_release}{tail}"
        )
    return f"sha256 {digest} release {release} signed by {signer}"
