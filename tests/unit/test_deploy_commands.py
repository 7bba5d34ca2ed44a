"""The deployment commands meet cleanly: `certs` keeps the consortium's private keys apart, keys' fingerprints can
be checked out of band, `enroll` names the site it did (not) enroll, `generate` loads the adapter's own base model."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from common.credentials import fingerprint
from common.errors import FedcareError
from simulations.cli import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certs_keeps_the_ca_and_app_signing_keys_apart_from_what_is_shipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, private = tmp_path / "certs", tmp_path / "certs-ca"
    assert main(["certs", "--out", str(out), "--host", "coord.example.org", "--site", "hospital-a"]) == 0
    printed = capsys.readouterr().out
    shipped = {p.name for p in out.iterdir()}
    assert shipped == {
        "ca.crt",
        "server.crt",
        "server.key",
        "coordinator.key",
        "coordinator.pub",
        "app-signing.pub",
        "hospital-a",
        "hospital-a.pub",
    }
    assert {p.name for p in private.iterdir()} == {"ca.key", "app-signing.key"}
    assert _mode(private) == 0o700 and _mode(private / "ca.key") == _mode(private / "app-signing.key") == 0o600
    assert f"private key {private / 'ca.key'}: keep it offline" in printed
    # The server certificate was issued with the CA key from the private folder.
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    # Run again to add a site: everything is reused, nothing private appears beside the shipped files.
    before = (out / "ca.crt").read_bytes(), (private / "ca.key").read_bytes()
    assert main(["certs", "--out", str(out), "--site", "hospital-b"]) == 0
    assert ((out / "ca.crt").read_bytes(), (private / "ca.key").read_bytes()) == before
    assert not (out / "ca.key").exists() and (out / "hospital-b.pub").exists()
    assert main(["certs", "--out", str(out), "--ca-dir", str(out)]) == 2  # the CA key may not go back beside them


def test_certs_warns_about_a_ca_key_left_beside_the_shipped_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out)]) == 0
    (tmp_path / "certs-ca" / "ca.key").rename(out / "ca.key")  # the layout of an older fedcare
    (out / "server.crt").unlink()
    (out / "server.key").unlink()
    assert main(["certs", "--out", str(out)]) == 0  # still usable: the server certificate is issued again
    assert f"{out / 'ca.key'} sits beside files shipped to sites: move it to" in capsys.readouterr().err


def test_fingerprint_prints_what_certs_printed_and_what_ssh_keygen_and_openssl_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    main(["certs", "--out", str(out), "--site", "hospital-a"])
    printed = capsys.readouterr().out
    coordinator = next(line for line in printed.splitlines() if line.startswith("adapter signing key:"))
    assert main(["fingerprint", str(out / "coordinator.pub"), str(out / "hospital-a.pub"), str(out / "ca.crt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out / 'coordinator.pub'}: key {fingerprint(out / 'coordinator.pub')}"
    assert fingerprint(out / "coordinator.pub") in coordinator  # the value `fedcare certs` printed
    if shutil.which("ssh-keygen"):
        keygen = subprocess.run(["ssh-keygen", "-lf", str(out / "hospital-a.pub")], capture_output=True, text=True)
        assert lines[1].endswith(f"key {keygen.stdout.split()[1]}")
    if shutil.which("openssl"):
        cmd = ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(out / "ca.crt")]
        openssl = subprocess.run(cmd, capture_output=True, text=True)
        assert lines[2].endswith(openssl.stdout.strip().split("=", 1)[1])
    (tmp_path / "junk.pub").write_text("not a key\n")
    assert main(["fingerprint", str(tmp_path / "junk.pub")]) == 2


def test_enroll_gives_up_naming_the_site_that_is_not_enrolled(tmp_path: Path) -> None:
    from simulations.cli import _enroll

    main(["certs", "--out", str(tmp_path / "certs"), "--site", "hospital-a"])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FedcareError, match=rf"no SuperLink listening at 127.0.0.1:{port} after 1 s; site hospital-a"):
        _enroll(f"127.0.0.1:{port}", tmp_path / "certs" / "hospital-a.pub", wait_s=1.0)


def _adapter_of_a_tiny_run(root: Path, cache_dir: Path, with_config: bool) -> Path:
    from common.adapters import attach_lora, save_adapter
    from common.config import AdapterConfig, ModelConfig
    from common.model import TINY_MODEL, load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(ModelConfig(name_or_path=TINY_MODEL, cache_dir=str(cache_dir)))
    adapter = save_adapter(attach_lora(model, AdapterConfig()), root / "runs" / "r" / "adapters" / "round-001")
    if with_config:  # what a run writes: its composed configuration names the base model
        (root / "runs" / "r" / "config.json").write_text(json.dumps({"model": {"name_or_path": TINY_MODEL}}))
    return adapter


@pytest.mark.parametrize("with_config", [True, False], ids=["run-config", "peft-base-model"])
def test_generate_loads_the_base_model_the_adapter_was_trained_on(
    tmp_path: Path,
    cache_dir: Path,
    with_config: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FEDCARE_CACHE", str(cache_dir))
    adapter = _adapter_of_a_tiny_run(tmp_path, cache_dir, with_config)
    # No model= override: the default (SmolLM2) would not fit this adapter.
    code = main(["generate", str(adapter), "hello", "--no-verify", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"base model of {adapter}: " in err and "tiny-random-llama" in err.split("base model of", 1)[1]
