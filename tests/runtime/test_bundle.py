"""Bundle format v1: round trips, and each refusal with its own error type."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from edgepack.runtime import BundleLimits, load, pack_bundle, read_bundle
from edgepack.runtime.errors import (BundleError, BundleTooLargeError, ChecksumError, HookError,
                                     ManifestError, MissingMemberError, SchemaVersionError,
                                     SignatureError, UnlistedMemberError, UnsafeMemberError)


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(path, members, attrs=None):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (attrs or {}).get(name, (stat.S_IFREG | 0o644) << 16)
            z.writestr(info, data)
    return path


def _with_manifest(src, dst, edit):
    members = _members(src)
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    return _write_zip(dst, members)


def test_round_trip_zip_and_directory(tmp_path, conv_onnx):
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    results = []
    for directory in (False, True):
        path = pack_bundle(tmp_path / f"b{directory}", conv_onnx, name="conv", version="2.1.0",
                           labels=["a", "b", "c", "d"], directory=directory)
        bundle = read_bundle(path)
        assert bundle.manifest.name == "conv" and bundle.manifest.version == "2.1.0"
        assert bundle.model_bytes() == conv_onnx
        assert bundle.labels() == ["a", "b", "c", "d"]
        entry = bundle.manifest.files["model.onnx"]
        assert entry.sha256 == hashlib.sha256(conv_onnx).hexdigest()
        assert entry.bytes == len(conv_onnx)
        with load(path) as model:
            results.append(model.run({"x": x})["logits"])
    np.testing.assert_array_equal(results[0], results[1])


def test_zip_members_are_stored_and_reproducible(tmp_path, conv_onnx):
    a = pack_bundle(tmp_path / "a.edgepack", conv_onnx, name="m", created="2026-01-01T00:00:00Z")
    b = pack_bundle(tmp_path / "b.edgepack", conv_onnx, name="m", created="2026-01-01T00:00:00Z")
    with zipfile.ZipFile(a) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    assert a.read_bytes() == b.read_bytes()


def test_manifest_keeps_unknown_fields(tmp_path, conv_onnx):
    path = pack_bundle(tmp_path / "m.edgepack", conv_onnx, name="m", extra={"x-team": {"a": 1}})
    assert read_bundle(path).manifest.to_dict()["x-team"] == {"a": 1}


@pytest.mark.parametrize("edit, error, words", [
    (lambda m: m.update(format="other"), SchemaVersionError, "not an edgepack bundle"),
    (lambda m: m.update(schema_version=2), SchemaVersionError, "newer"),
    (lambda m: m.update(schema_version="1"), ManifestError, "schema_version"),
    (lambda m: m.update(name=5), ManifestError, "name"),
    (lambda m: m["inputs"][0].update(shape="big"), ManifestError, "inputs[0].shape"),
    (lambda m: m["inputs"][0].update(dtype="complex"), ManifestError, "inputs[0].dtype"),
    (lambda m: m["model"].update(engine="tensorrt"), ManifestError, "model.engine"),
    (lambda m: m.update(outputs=[]), ManifestError, "outputs"),
    (lambda m: m["files"]["model.onnx"].update(bytes="1"), ManifestError, "files"),
    (lambda m: m.update(preprocess={"nope": []}), ManifestError, "nope"),
    (lambda m: m.update(preprocess={"x": [{"no_op": 1}]}), ManifestError, "preprocess"),
    (lambda m: m["outputs"][0].update(quantization={"scale": [0], "zero_point": [0]}),
     ManifestError, "scale"),
])
def test_manifest_errors_name_the_field(tmp_path, conv_bundle, edit, error, words):
    bad = _with_manifest(conv_bundle, tmp_path / "bad.edgepack", edit)
    with pytest.raises(error) as info:
        read_bundle(bad)
    assert words in str(info.value) and "bad.edgepack" in str(info.value)


def test_malformed_json(tmp_path, conv_bundle):
    members = _members(conv_bundle)
    members["manifest.json"] = b"{not json"
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_bundle(_write_zip(tmp_path / "b.edgepack", members))


def test_checksum_and_size_mismatch(tmp_path, conv_bundle):
    members = _members(conv_bundle)
    model = bytearray(members["model.onnx"])
    model[len(model) // 2] ^= 0x01
    with pytest.raises(ChecksumError, match="sha256"):
        read_bundle(_write_zip(tmp_path / "flip.edgepack", {**members, "model.onnx": bytes(model)}))
    with pytest.raises(ChecksumError, match="bytes"):
        read_bundle(_write_zip(tmp_path / "cut.edgepack",
                               {**members, "model.onnx": bytes(model[:-3])}))


def test_unlisted_and_missing_members(tmp_path, conv_bundle):
    members = _members(conv_bundle)
    with pytest.raises(UnlistedMemberError, match="extra.bin"):
        read_bundle(_write_zip(tmp_path / "u.edgepack", {**members, "extra.bin": b"1"}))
    del members["labels.txt"]
    with pytest.raises(MissingMemberError, match="labels.txt"):
        read_bundle(_write_zip(tmp_path / "m.edgepack", members))
    with pytest.raises(MissingMemberError, match="manifest.json"):
        read_bundle(_write_zip(tmp_path / "n.edgepack", {"model.onnx": b"x"}))


@pytest.mark.parametrize("name", ["/etc/passwd", "../evil", "a/../../evil", "a\\b", "./a", "C:x"])
def test_unsafe_member_names(tmp_path, conv_bundle, name):
    members = {**_members(conv_bundle), name: b"x"}
    with pytest.raises(UnsafeMemberError):
        read_bundle(_write_zip(tmp_path / "p.edgepack", members))


def test_links_are_refused(tmp_path, conv_bundle):
    members = {**_members(conv_bundle), "link": b"/etc/passwd"}
    attrs = {"link": (stat.S_IFLNK | 0o777) << 16}
    with pytest.raises(UnsafeMemberError, match="link"):
        read_bundle(_write_zip(tmp_path / "l.edgepack", members, attrs))
    directory = pack_bundle(tmp_path / "dir", read_bundle(conv_bundle).model_bytes(), name="d",
                            directory=True)
    os.symlink("/etc/passwd", directory / "labels.txt")
    with pytest.raises(UnsafeMemberError, match="symbolic link"):
        read_bundle(directory)


def test_size_limits_stop_zip_bombs(tmp_path, conv_bundle):
    with pytest.raises(BundleTooLargeError, match="per-member"):
        read_bundle(conv_bundle, limits=BundleLimits(max_member_bytes=100))
    with pytest.raises(BundleTooLargeError, match="add up"):
        read_bundle(conv_bundle, limits=BundleLimits(max_total_bytes=200))
    # A deflated member that inflates far beyond its compressed size, with a lying header.
    bomb = tmp_path / "bomb.edgepack"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", b"{}")
        z.writestr("model.onnx", b"\0" * (8 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(BundleTooLargeError):
        read_bundle(bomb, limits=BundleLimits(max_member_bytes=1 << 20))


def test_missing_hook_fails_at_load_not_first_request(tmp_path, conv_onnx):
    path = pack_bundle(tmp_path / "h.edgepack", conv_onnx, name="h",
                       preprocess={"x": [{"op": "hook", "name": "denoise", "strength": 2}]})
    with pytest.raises(HookError, match="denoise.*register"):
        load(path)
    seen = {}

    def denoise(x, strength):
        seen["strength"] = strength
        return np.asarray(x, np.float32) * 0

    with load(path, hooks={"denoise": denoise}) as model:
        out = model.predict(np.ones((1, 3, 8, 8), np.float32))
    assert seen == {"strength": 2}
    # zero input -> logits are the bias path only; equal to running zeros raw
    with load(path, hooks={"denoise": denoise}) as model:
        raw = model.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
    np.testing.assert_allclose(out["logits"], raw["logits"], rtol=0, atol=0)


def test_global_hook_decorator(tmp_path, conv_onnx):
    from edgepack.runtime import hook
    from edgepack.runtime.ops import unregister_hook
    path = pack_bundle(tmp_path / "g.edgepack", conv_onnx, name="g",
                       postprocess={"logits": [{"op": "hook", "name": "double"}]})
    try:
        @hook("double")
        def double(x):
            return x * 2
        with load(path) as model:
            x = np.ones((1, 3, 8, 8), np.float32)
            np.testing.assert_allclose(model.predict(x)["logits"], 2 * model.run({"x": x})["logits"])
    finally:
        unregister_hook("double")


def test_signature(tmp_path, conv_onnx):
    from edgepack.runtime.bundle import write_bundle
    from edgepack.runtime.signing import generate_keypair
    private, public = generate_keypair()
    _, other_public = generate_keypair()
    path = pack_bundle(tmp_path / "s.edgepack", conv_onnx, name="s")
    with pytest.raises(SignatureError, match="unsigned"):
        read_bundle(path, trusted_key=public)
    bundle = read_bundle(path)
    write_bundle(path, bundle.manifest, {"model.onnx": conv_onnx}, signing_key=private)
    assert read_bundle(path, trusted_key=public).manifest.name == "s"
    with pytest.raises(SignatureError, match="does not verify"):
        read_bundle(path, trusted_key=other_public)
    tampered = _with_manifest(path, tmp_path / "t.edgepack", lambda m: m.update(version="9"))
    members = _members(tampered)
    members["signature.ed25519"] = _members(path)["signature.ed25519"]
    with pytest.raises(SignatureError):
        read_bundle(_write_zip(tampered, members), trusted_key=public)


def test_not_a_bundle(tmp_path):
    (tmp_path / "x.edgepack").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BundleError, match="not a readable bundle"):
        read_bundle(tmp_path / "x.edgepack")
    with pytest.raises(BundleError, match="no such bundle"):
        read_bundle(tmp_path / "missing.edgepack")


def test_pack_rejects_bad_pipelines_before_writing(tmp_path, conv_onnx):
    from edgepack.runtime.errors import PipelineError
    target = tmp_path / "never.edgepack"
    with pytest.raises(PipelineError, match="unknown op 'blur'"):
        pack_bundle(target, conv_onnx, name="x", preprocess={"x": [{"op": "blur"}]})
    with pytest.raises(PipelineError, match="unknown parameter"):
        pack_bundle(target, conv_onnx, name="x", preprocess={"x": [{"op": "scale", "factor": 2, "ofset": 1}]})
    assert not target.exists()
