"""The consortium's signature over the app bundle: what a site's pinned runner accepts and refuses.

The bundle is the real one (Flower's FAB build of this checkout, as `fedcare app build` and `flwr run` make it).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from common.credentials import create_signing_keypair, create_site_keypair
from common.signing import (
    AppRefusedError,
    SignatureError,
    check_app,
    load_trusted_signers,
    read_app_signature,
    sign_app,
)
from common.site import load_site_config
from simulations.cli import main


@pytest.fixture(scope="module")
def fab() -> bytes:
    from flwr.cli.build import build_fab_from_disk

    from server.superlink import APP_DIR

    return build_fab_from_disk(APP_DIR)


@pytest.fixture
def consortium(tmp_path: Path) -> tuple[Path, Path]:
    return create_signing_keypair(tmp_path / "consortium", "app-signing")


def _one_byte_changed(fab: bytes, name: str = "client/client_app.py") -> bytes:
    """The same bundle with one byte of one file changed (the attacker's smallest edit)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == name:
                data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
            dst.writestr(info, data)
    return out.getvalue()


def test_a_signed_bundle_is_accepted_by_a_site_that_trusts_the_signer(fab: bytes, consortium: tuple[Path, Path]):
    private, public = consortium
    signature = sign_app(fab, private)
    signers = load_trusted_signers([str(public)])
    verdict = check_app(fab, site_id="site-a", trusted_signers=signers, signature=signature)
    signed, signer, _, release = read_app_signature(signature)
    assert signed == hashlib.sha256(fab).hexdigest() and release == 0
    assert verdict == f"sha256 {signed} release 0 signed by {signer}"
    assert signer in signers


def test_one_changed_byte_of_client_code_is_refused(fab: bytes, consortium: tuple[Path, Path]):
    private, public = consortium
    signature = sign_app(fab, private)
    tampered = _one_byte_changed(fab)
    assert tampered != fab
    with pytest.raises(AppRefusedError) as err:
        check_app(tampered, site_id="site-a", trusted_signers=load_trusted_signers([str(public)]), signature=signature)
    message = str(err.value)
    assert f"sha256 {hashlib.sha256(tampered).hexdigest()}" in message
    assert f"is for sha256 {hashlib.sha256(fab).hexdigest()}, not for this bundle" in message
    assert "nothing of it was installed or run" in message


def test_a_signature_by_an_untrusted_key_is_refused(fab: bytes, consortium: tuple[Path, Path], tmp_path: Path):
    _, public = consortium
    rogue, _ = create_signing_keypair(tmp_path / "rogue", "app-signing")
    signature = sign_app(fab, rogue)  # a valid signature over exactly this bundle, by someone else
    with pytest.raises(AppRefusedError, match="not a key its site.yaml trusts"):
        check_app(fab, site_id="site-a", trusted_signers=load_trusted_signers([str(public)]), signature=signature)


def test_a_forged_or_relabelled_signature_is_refused(fab: bytes, consortium: tuple[Path, Path], tmp_path: Path):
    private, public = consortium
    signers = load_trusted_signers([str(public)])
    tampered = _one_byte_changed(fab)
    genuine = json.loads(sign_app(fab, private))
    # The coordinator rewrites the signed hash to its own bundle's: the signature no longer matches.
    forged = {**genuine, "sha256": hashlib.sha256(tampered).hexdigest()}
    with pytest.raises(AppRefusedError, match="not a valid fedcare app signature"):
        check_app(tampered, site_id="site-a", trusted_signers=signers, signature=json.dumps(forged))
    # A rogue key's signature relabelled with the trusted key's public half does not verify either.
    rogue = json.loads(sign_app(tampered, create_signing_keypair(tmp_path / "rogue")[0]))
    relabelled = {**rogue, "public_key": genuine["public_key"], "signer": genuine["signer"]}
    with pytest.raises(AppRefusedError, match="not a valid fedcare app signature"):
        check_app(tampered, site_id="site-a", trusted_signers=signers, signature=json.dumps(relabelled))
    with pytest.raises(AppRefusedError, match="not a valid fedcare app signature"):
        check_app(fab, site_id="site-a", trusted_signers=signers, signature="not json")


def test_hash_pins_still_work_and_nothing_else_is_accepted(fab: bytes, consortium: tuple[Path, Path]):
    digest = hashlib.sha256(fab).hexdigest()
    assert check_app(fab, site_id="site-a", trusted_apps=(digest,)) == f"sha256 {digest} pinned in trusted_apps"
    with pytest.raises(AppRefusedError, match="neither pins this hash"):
        check_app(_one_byte_changed(fab), site_id="site-a", trusted_apps=(digest,))
    with pytest.raises(AppRefusedError, match="nor does the run carry a consortium signature"):
        check_app(fab, site_id="site-a", trusted_signers=load_trusted_signers([str(consortium[1])]))
    with pytest.raises(AppRefusedError, match="the SuperLink claims it is sha256 " + "0" * 64):
        check_app(fab, site_id="site-a", trusted_apps=(digest,), claimed_hash="0" * 64)


def test_site_yaml_names_trusted_signers_relative_to_itself(tmp_path: Path, consortium: tuple[Path, Path]):
    (tmp_path / "d.jsonl").write_text("")
    site = tmp_path / "site.yaml"
    site.write_text(
        "site_id: a\nsite_index: 0\nstate_dir: state\ndata:\n  paths: [d.jsonl]\n"
        "trusted_signers: [consortium/app-signing.pub]\n"
    )
    cfg = load_site_config(site)
    assert cfg.pins_apps and cfg.trusted_signers == (str(consortium[1].resolve()),)
    # A site's own EC key is not an app-signing key: refused when the site starts, naming the file.
    _, ec_pub = create_site_keypair(tmp_path / "keys", "a")
    with pytest.raises(SignatureError, match=r"a\.pub: not an Ed25519 public key"):
        load_trusted_signers([str(ec_pub)])


def test_review_shows_signer_and_hash_and_whether_the_site_would_run_it(
    fab: bytes, consortium: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    private, public = consortium
    bundle = tmp_path / "fedcare.fab"
    bundle.write_bytes(fab)
    Path(f"{bundle}.sig").write_text(sign_app(fab, private) + "\n")
    (tmp_path / "d.jsonl").write_text("")
    site = tmp_path / "site.yaml"
    site.write_text(
        f"site_id: a\nsite_index: 0\nstate_dir: state\ndata:\n  paths: [d.jsonl]\ntrusted_signers: [{public}]\n"
    )
    signer = read_app_signature(Path(f"{bundle}.sig").read_text()).signer
    assert main(["site", "review", str(bundle), "--config", str(site)]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(fab).hexdigest()
    assert f"sha256 {digest}" in out
    assert f"valid, release 0, signed by {signer}" in out
    assert f"site a would run it: sha256 {digest} release 0 signed by {signer}" in out
    bundle.write_bytes(_one_byte_changed(fab))  # the same signature beside a changed bundle
    assert main(["site", "review", str(bundle)]) == 2
    assert "the bundle was changed after signing" in capsys.readouterr().err


def test_coordinator_run_refuses_a_signature_of_another_bundle_before_submitting(
    fab: bytes, consortium: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    sig = tmp_path / "old.sig"
    sig.write_text(sign_app(_one_byte_changed(fab), consortium[0]))
    code = main(["coordinator", "run", "model=tiny", "--insecure", "--app-signature", str(sig)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"but this checkout builds {hashlib.sha256(fab).hexdigest()}" in err


def test_a_site_retires_old_bundles_by_release_or_by_hash(fab: bytes, consortium: tuple[Path, Path]):
    """The consortium signs a release number with the hash: a site's min_app_release refuses older releases it
    ever signed (a coordinator resubmitting an old signed bundle); revoked_apps refuses one bundle even if pinned."""
    private, public = consortium
    signers = load_trusted_signers([str(public)])
    digest = hashlib.sha256(fab).hexdigest()
    old, new = sign_app(fab, private, release=2), sign_app(fab, private, release=3)
    assert read_app_signature(old).release == 2
    with pytest.raises(AppRefusedError, match="signed as release 2, older than the site's min_app_release 3"):
        check_app(fab, site_id="site-a", trusted_signers=signers, signature=old, min_release=3)
    verdict = check_app(fab, site_id="site-a", trusted_signers=signers, signature=new, min_release=3)
    assert verdict.startswith(f"sha256 {digest} release 3 signed by SHA256:")
    # The release is signed: raising it in the line breaks the signature.
    bumped = json.dumps({**json.loads(old), "release": 3})
    with pytest.raises(AppRefusedError, match="not a valid fedcare app signature"):
        check_app(fab, site_id="site-a", trusted_signers=signers, signature=bumped, min_release=3)
    # A signature line made before releases existed (no "release" signed) reads as release 0.
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    body = {k: v for k, v in json.loads(new).items() if k not in ("release", "signature")}
    key = load_pem_private_key(private.read_bytes(), None)
    signed_body = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
    unnumbered = json.dumps({**body, "signature": base64.b64encode(key.sign(signed_body)).decode()})
    assert read_app_signature(unnumbered).release == 0
    with pytest.raises(AppRefusedError, match="signed as release 0, older than the site's min_app_release 1"):
        check_app(fab, site_id="site-a", trusted_signers=signers, signature=unnumbered, min_release=1)
    for trusted in ({"trusted_apps": (digest,)}, {"trusted_signers": signers, "signature": new}):
        with pytest.raises(AppRefusedError, match=r"its site.yaml revokes this bundle \(revoked_apps\)"):
            check_app(fab, site_id="site-a", revoked_apps=(digest,), **trusted)
    with pytest.raises(SignatureError, match="non-negative integer"):
        sign_app(fab, private, release=-1)


def test_site_yaml_revocation_keys_are_checked_and_reach_review(
    fab: bytes, consortium: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from common.errors import ConfigError

    private, public = consortium
    digest = hashlib.sha256(fab).hexdigest()
    (tmp_path / "d.jsonl").write_text("")
    site = tmp_path / "site.yaml"
    base = "site_id: a\nsite_index: 0\nstate_dir: state\ndata:\n  paths: [d.jsonl]\n"
    site.write_text(base + "revoked_apps: [abc]\ntrusted_apps: [" + digest + "]\n")
    with pytest.raises(ConfigError, match="site.revoked_apps: expected SHA-256 hex digests"):
        load_site_config(site)
    site.write_text(base + "min_app_release: 4\n")  # no trusted list: the cap would bind nothing
    with pytest.raises(ConfigError, match="bind only a site that approves bundles"):
        load_site_config(site)
    site.write_text(base + f"trusted_signers: [{public}]\nmin_app_release: 4\n")
    assert load_site_config(site).min_app_release == 4
    bundle = tmp_path / "fedcare.fab"
    bundle.write_bytes(fab)
    Path(f"{bundle}.sig").write_text(sign_app(fab, private, release=3) + "\n")
    assert main(["site", "review", str(bundle), "--config", str(site)]) == 2
    captured = capsys.readouterr()
    assert "valid, release 3, signed by" in captured.out
    assert "signed as release 3, older than the site's min_app_release 4" in captured.err
