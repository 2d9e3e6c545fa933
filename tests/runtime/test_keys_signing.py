"""Keys and signatures (issue 12, items 1-4): key files, key kinds, the trusted-key setting,
and what verify/inspect say about a signature."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest
from click.testing import CliRunner

pytest.importorskip("cryptography")

from edgepack.cli.main import cli  # noqa: E402
from edgepack.runtime import pack_bundle, read_bundle  # noqa: E402
from edgepack.runtime.bundle import write_bundle  # noqa: E402
from edgepack.runtime.errors import KeyFileError, SignatureError  # noqa: E402
from edgepack.runtime.signing import fingerprint, generate_keypair  # noqa: E402


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.fixture
def bundle(tmp_path, conv_onnx):
    return pack_bundle(tmp_path / "b.edgepack", conv_onnx, name="b", labels=["a", "b", "c", "d"])


@pytest.fixture
def umask_zero():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _sign_hex(path, private_hex):
    b = read_bundle(path)
    write_bundle(path, b.manifest, {n: b.read(n) for n in b.members}, signing_key=private_hex)


# --- item 1: keygen never overwrites, and sets the modes itself --------------------------------
def test_keygen_refuses_to_overwrite_without_force(tmp_path, umask_zero):
    first = invoke("keygen", tmp_path / "k1")
    assert first.exit_code == 0, first.output
    key, pub = tmp_path / "k1.key", tmp_path / "k1.pub"
    assert _mode(key) == 0o600 and _mode(pub) == 0o644   # umask 0: the modes are explicit
    old_key, old_pub = key.read_bytes(), pub.read_bytes()

    again = invoke("keygen", tmp_path / "k1")
    assert again.exit_code == 3
    assert f"{key} already exists" in again.output and "--force" in again.output
    assert key.read_bytes() == old_key and pub.read_bytes() == old_pub

    key.chmod(0o644)   # a forced overwrite still ends with a private-only key file
    forced = invoke("keygen", tmp_path / "k1", "--force")
    assert forced.exit_code == 0, forced.output
    assert key.read_bytes() != old_key and pub.read_bytes() != old_pub
    assert _mode(key) == 0o600 and _mode(pub) == 0o644


def test_keygen_refuses_when_only_the_public_half_exists(tmp_path):
    (tmp_path / "k.pub").write_text("keep me\n")
    result = invoke("keygen", tmp_path / "k")
    assert result.exit_code == 3 and "k.pub already exists" in result.output
    assert not (tmp_path / "k.key").exists()   # nothing written when refusing
    assert (tmp_path / "k.pub").read_text() == "keep me\n"


def test_keygen_prints_the_fingerprint_it_documents(tmp_path):
    result = invoke("keygen", tmp_path / "k")
    from cryptography.hazmat.primitives import serialization
    public = serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = hashlib.sha256(raw).hexdigest()[:16]
    assert fingerprint(tmp_path / "k.pub") == expected == fingerprint(tmp_path / "k.key")
    assert expected in result.output


# --- item 2: a key of the wrong kind is named as such ------------------------------------------
def test_sign_with_a_public_key_is_refused(tmp_path, bundle):
    invoke("keygen", tmp_path / "k1")
    before = bundle.read_bytes()
    result = invoke("sign", bundle, "--key", tmp_path / "k1.pub")
    assert result.exit_code == 3
    assert "is a public key" in result.output and "private key" in result.output
    assert bundle.read_bytes() == before


def test_verify_with_the_private_key_is_named(tmp_path, bundle):
    invoke("keygen", tmp_path / "k1")
    assert invoke("sign", bundle, "--key", tmp_path / "k1.key").exit_code == 0
    result = invoke("verify", bundle, "--key", tmp_path / "k1.key", "--no-run")
    assert result.exit_code == 3
    assert "is a private key" in result.output and "public key" in result.output
    assert "modified" not in result.output


def test_legacy_hex_keys_wrong_kind(tmp_path, bundle):
    private, public = generate_keypair()
    # A raw hex key carries no kind; the file name does.
    (tmp_path / "old.pub").write_text(public + "\n")
    with pytest.raises(KeyFileError, match="is a public key"):
        _sign_hex(bundle, tmp_path / "old.pub")
    _sign_hex(bundle, private)
    # Inline hex private key given as the trusted key: recognised because it made the signature.
    with pytest.raises(KeyFileError, match="is the private key"):
        read_bundle(bundle, trusted_key=private)
    assert read_bundle(bundle, trusted_key=public).signed_by == fingerprint(public)


# --- item 3: the trusted-key setting cannot silently turn itself off --------------------------
def test_empty_trusted_key_environment_is_an_error(bundle, monkeypatch):
    for value in ("", "  "):
        monkeypatch.setenv("EDGEPACK_TRUSTED_KEY", value)
        with pytest.raises(SignatureError, match="EDGEPACK_TRUSTED_KEY is set but empty"):
            read_bundle(bundle)
    monkeypatch.delenv("EDGEPACK_TRUSTED_KEY")
    with pytest.raises(SignatureError, match="empty"):
        read_bundle(bundle, trusted_key="")


def test_empty_trusted_key_environment_from_the_cli(bundle):
    result = invoke("verify", bundle, "--no-run", env={"EDGEPACK_TRUSTED_KEY": ""})
    assert result.exit_code == 3 and "EDGEPACK_TRUSTED_KEY is set but empty" in result.output


def test_missing_key_file_says_it_does_not_exist(tmp_path, bundle, monkeypatch):
    missing = tmp_path / "nosuch.pub"
    monkeypatch.setenv("EDGEPACK_TRUSTED_KEY", str(missing))
    with pytest.raises(KeyFileError, match=f"key file {missing} does not exist"):
        read_bundle(bundle)
    monkeypatch.delenv("EDGEPACK_TRUSTED_KEY")
    with pytest.raises(KeyFileError, match="does not exist"):
        read_bundle(bundle, trusted_key=missing)


def test_malformed_key_file(tmp_path, bundle):
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(KeyFileError, match="junk.pub is not an Ed25519"):
        read_bundle(bundle, trusted_key=tmp_path / "junk.pub")


# --- item 4: verify and inspect say what was checked, with the key's fingerprint ---------------
def test_verify_names_the_key_that_checked_the_signature(tmp_path, bundle):
    invoke("keygen", tmp_path / "k1")
    invoke("sign", bundle, "--key", tmp_path / "k1.key")
    fp = fingerprint(tmp_path / "k1.pub")
    result = invoke("verify", bundle, "--key", tmp_path / "k1.pub", "--no-run")
    assert result.exit_code == 0, result.output
    assert f"signature ok (key {fp})" in result.output
    unchecked = invoke("verify", bundle, "--no-run")
    assert "signature ok" not in unchecked.output and "not checked" in unchecked.output


def test_inspect_shows_signed_and_by_which_key(tmp_path, bundle):
    assert "signature: none (unsigned)" in invoke("inspect", bundle).output
    invoke("keygen", tmp_path / "k1")
    invoke("sign", bundle, "--key", tmp_path / "k1.key")
    fp = fingerprint(tmp_path / "k1.pub")
    shown = invoke("inspect", bundle).output
    assert "signature: signed (key unknown; check it with --key PUB)" in shown
    assert f"signature: ok (key {fp})" in invoke("inspect", bundle, "--key",
                                                   tmp_path / "k1.pub").output
    from_env = invoke("inspect", bundle, env={"EDGEPACK_TRUSTED_KEY": str(tmp_path / "k1.pub")})
    assert f"signature: ok (key {fp})" in from_env.output
    invoke("keygen", tmp_path / "k2")
    wrong = invoke("inspect", bundle, "--key", tmp_path / "k2.pub")
    assert wrong.exit_code == 3 and fingerprint(tmp_path / "k2.pub") in wrong.output


def test_the_signature_is_checked_before_any_member_is_read(tmp_path, bundle):
    import zipfile
    invoke("keygen", tmp_path / "k1")
    with zipfile.ZipFile(bundle) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["labels.txt"] = b"x" * len(members["labels.txt"])   # corrupt, and unsigned
    with zipfile.ZipFile(bundle, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(SignatureError, match="unsigned"):
        read_bundle(bundle, trusted_key=tmp_path / "k1.pub")
