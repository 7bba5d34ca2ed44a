"""Signed adapters: a signed directory verifies, and any change to its files or manifest is caught and named."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.credentials import create_signing_keypair, create_site_keypair, fingerprint
from common.errors import FedcareError
from common.signing import MANIFEST, SignatureError, sign_adapter, verify_adapter

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return create_signing_keypair(tmp_path / "keys")


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    directory = tmp_path / "adapter"
    (directory / "tokenizer").mkdir(parents=True)
    (directory / WEIGHTS).write_bytes(bytes(range(256)) * 64)
    (directory / CONFIG).write_text('{"r": 8, "lora_alpha": 16}\n')
    (directory / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return directory


def test_sign_then_verify_passes(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    path = sign_adapter(adapter, private_key)
    assert path == adapter / MANIFEST
    manifest = verify_adapter(adapter, public_key)
    assert manifest["version"] == 1
    assert manifest["algorithm"] == "ed25519"
    assert sorted(manifest["files"]) == [CONFIG, WEIGHTS, "tokenizer/vocab.txt"]
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert manifest["public_key_fingerprint"] == fingerprint(public_key)
    assert json.loads(path.read_text()) == manifest


def test_signature_covers_the_canonical_json_of_everything_but_itself(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    manifest = json.loads(sign_adapter(adapter, private_key).read_text())
    body = {k: v for k, v in manifest.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    key = serialization.load_pem_public_key(public_key.read_bytes())
    assert isinstance(key, ed25519.Ed25519PublicKey)
    key.verify(base64.b64decode(manifest["signature"]), canonical)  # raises InvalidSignature on mismatch


def test_signing_twice_replaces_the_manifest_and_still_verifies(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    (adapter / WEIGHTS).write_bytes(b"retrained")
    sign_adapter(adapter, private_key)
    assert MANIFEST not in verify_adapter(adapter, public_key)["files"]


def test_verify_adapter_rejects_a_changed_byte(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    data = bytearray((adapter / WEIGHTS).read_bytes())
    data[1000] ^= 0x01
    (adapter / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=f"{WEIGHTS} was modified after signing") as info:
        verify_adapter(adapter, public_key)
    assert CONFIG not in str(info.value)
    assert isinstance(info.value, FedcareError) and isinstance(info.value, ValueError)


def test_verify_adapter_rejects_a_changed_file_in_a_subdirectory(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    (adapter / "tokenizer" / "vocab.txt").write_text("a\nc\n")
    with pytest.raises(SignatureError, match="tokenizer/vocab.txt was modified after signing"):
        verify_adapter(adapter, public_key)


def test_verify_adapter_rejects_an_added_file(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    (adapter / "extra.bin").write_bytes(b"\x00")
    with pytest.raises(SignatureError, match="extra.bin is not covered by the signature"):
        verify_adapter(adapter, public_key)


def test_verify_adapter_rejects_a_deleted_file(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    (adapter / CONFIG).unlink()
    with pytest.raises(SignatureError, match=f"{CONFIG} is missing"):
        verify_adapter(adapter, public_key)


def test_verify_adapter_names_every_problem(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    sign_adapter(adapter, private_key)
    (adapter / WEIGHTS).write_bytes(b"other")
    (adapter / CONFIG).unlink()
    (adapter / "notes.txt").write_text("x")
    with pytest.raises(SignatureError) as info:
        verify_adapter(adapter, public_key)
    message = str(info.value)
    assert f"{WEIGHTS} was modified" in message
    assert f"{CONFIG} is missing" in message
    assert "notes.txt is not covered" in message


def test_verify_adapter_rejects_another_key(adapter: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private_key, _ = keys
    _, other_public = create_signing_keypair(tmp_path / "other")
    sign_adapter(adapter, private_key)
    with pytest.raises(SignatureError, match="signature does not match: the manifest was altered or signed by another"):
        verify_adapter(adapter, other_public)


def test_verify_adapter_rejects_an_edited_manifest(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    manifest_path = sign_adapter(adapter, private_key)
    # Re-hashing a tampered file into the manifest must not help: the signature covers the file list.
    (adapter / WEIGHTS).write_bytes(b"tampered")
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][WEIGHTS] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="signature does not match") as info:
        verify_adapter(adapter, public_key)
    assert "was modified" not in str(info.value)


def test_verify_adapter_rejects_a_manifest_with_an_added_field(adapter: Path, keys: tuple[Path, Path]) -> None:
    private_key, public_key = keys
    manifest_path = sign_adapter(adapter, private_key)
    manifest = json.loads(manifest_path.read_text())
    manifest["approved_by"] = "mallory"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_adapter(adapter, public_key)


def test_verify_adapter_rejects_a_missing_manifest(adapter: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(SignatureError, match=f"no {MANIFEST}; the adapter is not signed"):
        verify_adapter(adapter, keys[1])


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 2, "algorithm": "ed25519"}'])
def test_verify_adapter_rejects_a_malformed_manifest(adapter: Path, keys: tuple[Path, Path], content: str) -> None:
    (adapter / MANIFEST).write_text(content)
    with pytest.raises(SignatureError, match=MANIFEST):
        verify_adapter(adapter, keys[1])


def test_sign_adapter_refuses_a_symlink(adapter: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("secret")
    os.symlink(tmp_path / "outside", adapter / "link")
    with pytest.raises(SignatureError, match="link is a symbolic link"):
        sign_adapter(adapter, keys[0])
    assert not (adapter / MANIFEST).exists()


def test_sign_adapter_refuses_a_key_that_is_not_ed25519(adapter: Path, tmp_path: Path) -> None:
    site_key, _ = create_site_keypair(tmp_path / "site", "site")
    with pytest.raises(SignatureError, match="not a PEM private key"):
        sign_adapter(adapter, site_key)
    assert not (adapter / MANIFEST).exists()


def test_sign_adapter_refuses_an_empty_directory(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SignatureError, match="no files to sign"):
        sign_adapter(tmp_path / "empty", keys[0])


def _run_adapter(root: Path, run: str, server_round: int, dp: bool) -> Path:
    directory = root / run / "adapters" / f"round-{server_round:03d}"
    directory.mkdir(parents=True)
    (directory / WEIGHTS).write_bytes(b"dp" if dp else b"no-dp")
    return directory


def _facts(run: str, server_round: int, dp: bool) -> dict:
    site = {
        "dp_enabled": dp,
        "epsilon": 3.5 if dp else None,
        "delta": 1e-5 if dp else 0.0,
        "target_epsilon": 8.0,
        "noise_multiplier": 0.9 if dp else 0.0,
        "egress_seq": 5,
        "egress_head": "ab" * 32,
    }
    return {"run_id": run, "round": server_round, "strategy": "fedavg", "sites": {"site-0": site}}


def test_signed_facts_bind_run_and_round_and_are_printed(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from common.signing import describe_facts

    private_key, public_key = keys
    adapter = _run_adapter(tmp_path / "runs", "dp-run", 2, dp=True)
    sign_adapter(adapter, private_key, _facts("dp-run", 2, dp=True))
    text = describe_facts(verify_adapter(adapter, public_key))
    assert "run dp-run round 2 strategy fedavg" in text and "site-0: DP on, epsilon 3.5 of 8" in text


def test_a_non_dp_adapter_copied_into_a_dp_run_no_longer_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    import shutil

    private_key, public_key = keys
    plain = _run_adapter(tmp_path / "runs", "plain-run", 2, dp=False)
    sign_adapter(plain, private_key, _facts("plain-run", 2, dp=False))
    target = tmp_path / "runs" / "dp-run" / "adapters" / "round-002"
    shutil.copytree(plain, target)  # the whole signed directory, manifest included
    with pytest.raises(SignatureError, match="signed for run 'plain-run' round 2, but it sits in run 'dp-run'"):
        verify_adapter(target, public_key)
    facts = json.loads((target / MANIFEST).read_text())["facts"]
    facts["run_id"] = "dp-run"  # editing the facts breaks the signature instead
    manifest = json.loads((target / MANIFEST).read_text()) | {"facts": facts}
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_adapter(target, public_key)


def test_signing_and_ca_keys_can_be_passphrase_protected(
    adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.credentials import create_ca, create_server_cert

    monkeypatch.setenv("FEDCARE_KEY_PASSPHRASE", "correct horse battery staple")
    private_key, public_key = create_signing_keypair(tmp_path / "protected")
    ca_cert, ca_key = create_ca(tmp_path / "protected")
    assert b"ENCRYPTED PRIVATE KEY" in private_key.read_bytes() and b"ENCRYPTED" in ca_key.read_bytes()
    sign_adapter(adapter, private_key)
    verify_adapter(adapter, public_key)
    create_server_cert(tmp_path / "protected", ca_cert, ca_key, hosts=["127.0.0.1"])  # the CA key opens too
    monkeypatch.delenv("FEDCARE_KEY_PASSPHRASE")
    with pytest.raises(SignatureError, match="encrypted and \\$FEDCARE_KEY_PASSPHRASE is missing or wrong"):
        sign_adapter(adapter, private_key)
