"""Bundles as OCI artifacts through the reference registry (Debian docker-registry)."""
from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from edgepack.runtime.oci import ARTIFACT_TYPE, Reference, RegistryClient, RegistryError
from services import EDGEPACK, free_port, port_open, stop, wait_until


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_push_pull_round_trip_is_byte_identical_and_verified(registry, adders, tmp_path):
    address, _ = registry
    ref = f"{address}/models/adder:v1"
    pushed = run("push", adders[1.0], ref, "--json")
    assert pushed.exit_code == 0, pushed.output
    digest = json.loads(pushed.stdout)["digest"]

    # The manifest as the registry stores it: OCI 1.1 artifact with our annotations.
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{address}/v2/models/adder/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})) as resp:
        manifest = json.loads(resp.read())
        assert resp.headers["Docker-Content-Digest"] == digest
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [ARTIFACT_TYPE]
    notes = manifest["annotations"]
    import hashlib
    data = adders[1.0].read_bytes()
    assert notes["io.edgepack.sha256"] == hashlib.sha256(data).hexdigest()
    assert (notes["io.edgepack.name"], notes["org.opencontainers.image.version"],
            notes["io.edgepack.engine"]) == ("adder", "1.0.0", "onnxruntime")
    assert notes["io.edgepack.requires.engines"] == "onnxruntime>=1.17"

    out = tmp_path / "pulled.edgepack"
    pulled = run("pull", ref, "-o", out)
    assert pulled.exit_code == 0, pulled.output
    assert "verified" in pulled.stdout
    assert out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pulled.edgepack"]  # no temporaries

    # Verified like any bundle: with a trusted key, an unsigned bundle is refused.
    from edgepack.runtime.signing import generate_keypair
    key = tmp_path / "release.pub"
    key.write_text(generate_keypair()[1])
    refused = run("pull", ref, "-o", tmp_path / "signed.edgepack", "--trusted-key", key)
    assert refused.exit_code == 3, refused.output
    assert not (tmp_path / "signed.edgepack").exists()


def test_a_tampered_blob_is_refused(registry, tmp_path):
    address, storage = registry
    ref = f"{address}/models/tamper:v1"
    # A bundle of its own: blobs are shared by digest, and this test damages its blob.
    from services import make_adder
    own = make_adder(tmp_path / "src" / "seven.edgepack", 7.0, version="7.0.0")
    assert run("push", own, ref).exit_code == 0
    digest = RegistryClient().resolve(Reference.parse(ref)).layer["digest"]
    hexdigest = digest.split(":", 1)[1]
    blob = storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF                                   # one flipped byte, same size
    blob.write_bytes(bytes(data))
    out = tmp_path / "tampered.edgepack"
    result = run("pull", ref, "-o", out)
    assert result.exit_code == 3, result.output          # the bundle family: integrity
    (tmp_path / "src" / "seven.edgepack").unlink()
    (tmp_path / "src").rmdir()
    assert "blob does not match its manifest" in result.stderr
    assert "tampered with or corrupted; refused" in result.stderr
    assert list(tmp_path.iterdir()) == []                # nothing written, not even a .part


def test_references_and_unreachable_registries_are_clear_errors():
    with pytest.raises(RegistryError, match="is not an OCI reference"):
        Reference.parse("just-a-name")
    ref = Reference.parse("oci://127.0.0.1:5000/models/digits@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "models/digits", None)
    assert str(Reference.parse("localhost:5000/x")) == "localhost:5000/x:latest"
    port = free_port()
    result = run("pull", f"127.0.0.1:{port}/models/x:v1", "-o", "x.edgepack")
    assert result.exit_code == 9, result.output
    assert f"cannot reach registry 127.0.0.1:{port}" in result.stderr


def test_serve_follows_a_retagged_version_within_two_poll_periods(registry, adders, tmp_path):
    address, _ = registry
    ref = f"{address}/models/follow:stable"
    assert run("push", adders[1.0], ref).exit_code == 0
    repo = tmp_path / "models"
    repo.mkdir()
    port, period = free_port(), 1.5
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([EDGEPACK, "serve", str(repo), "--port", str(port), "--poll", "0.2",
                             "--workers", "1", "--threads", "1", "--pull", ref,
                             "--pull-poll", str(period)], stdout=log, stderr=log)
    try:
        wait_until(lambda: port_open(port), 30, "serve --pull", proc)
        wait_until(lambda: _answer(port) == [2.0] * 4, 30, "version 1 pulled and READY", proc)
        assert run("push", adders[2.0], ref).exit_code == 0          # retag :stable
        # The follower notices within two of its poll periods (bounded wait, not a timing
        # assertion: a slower follower fails here, a faster one passes either way).
        wait_until(lambda: (repo / "adder" / "2.edgepack").exists(), 2 * period + 1.0,
                   "version 2 pulled", proc)
        wait_until(lambda: _answer(port) == [3.0] * 4, 30, "version 2 READY", proc)
        state = json.loads((repo / "adder" / ".oci-follow.json").read_text())
        assert state["version"] == 2 and state["reference"] == ref
        assert (repo / "adder" / "2.edgepack").read_bytes() == adders[2.0].read_bytes()
    finally:
        stop(proc)
        log.close()


def _answer(port: int):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1.0] * 4}]}).encode()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/adder/infer",
                                     data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())["outputs"][0]["data"]
    except OSError:
        return None


def test_serve_pull_needs_a_repository_directory(adders):
    result = run("serve", adders[1.0], "--pull", "127.0.0.1:1/x:y")
    assert result.exit_code == 2
    assert "--pull needs PATH to be a model repository directory" in result.output


def test_artifacts_interoperate_with_the_oras_client(registry, adders, tmp_path, monkeypatch):
    """What edgepack pushes, ORAS pulls (and the reverse): one artifact format, not ours alone."""
    oras_client = pytest.importorskip("oras.client")
    from edgepack.runtime.oci import pull_bundle
    address, _ = registry
    client = oras_client.OrasClient(hostname=address, insecure=True)
    assert run("push", adders[3.0], f"{address}/models/interop:v3").exit_code == 0
    files = client.pull(target=f"{address}/models/interop:v3", outdir=str(tmp_path / "oras"))
    assert [Path(f).name for f in files] == ["adder3.edgepack"]      # the title annotation
    assert Path(files[0]).read_bytes() == adders[3.0].read_bytes()

    staged = tmp_path / "stage"
    staged.mkdir()
    (staged / "x.edgepack").write_bytes(adders[1.0].read_bytes())
    monkeypatch.chdir(staged)                  # oras takes paths relative to the cwd
    client.push(target=f"{address}/models/from-oras:v1",
                files=[f"x.edgepack:{ARTIFACT_TYPE}"])
    result = pull_bundle(Reference.parse(f"{address}/models/from-oras:v1"),
                         tmp_path / "back.edgepack")
    assert (tmp_path / "back.edgepack").read_bytes() == adders[1.0].read_bytes()
    assert result.digest.startswith("sha256:")


def test_the_device_side_client_is_standard_library_only():
    code = ("import sys, edgepack.runtime.oci; "
            "heavy = [m for m in ('click', 'oras', 'requests', 'onnx', 'torch', 'yaml') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([str(Path(EDGEPACK).with_name("python")), "-c", code],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_a_registry_that_needs_a_login(adders, tmp_path):
    """Basic auth (the registry's htpasswd backend): refused without, works with credentials."""
    import warnings
    with warnings.catch_warnings():     # deprecated since 3.11, still the stdlib's bcrypt
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    from services import start_registry
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)       # cost 4: quick in a test
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"robot:{crypt.crypt('s3cret', salt)}\n")
    address, _, proc = start_registry(tmp_path / "reg", htpasswd=htpasswd)
    try:
        ref = f"{address}/models/private:v1"
        anonymous = CliRunner().invoke(cli, ["push", str(adders[1.0]), ref],
                                       env={"EDGEPACK_REGISTRY_USERNAME": None})
        assert anonymous.exit_code == 9, anonymous.output
        assert "set EDGEPACK_REGISTRY_USERNAME and EDGEPACK_REGISTRY_PASSWORD" in anonymous.stderr
        login = {"EDGEPACK_REGISTRY_USERNAME": "robot", "EDGEPACK_REGISTRY_PASSWORD": "s3cret"}
        pushed = CliRunner().invoke(cli, ["push", str(adders[1.0]), ref], env=login)
        assert pushed.exit_code == 0, pushed.output
        out = tmp_path / "private.edgepack"
        pulled = CliRunner().invoke(cli, ["pull", ref, "-o", str(out)], env=login)
        assert pulled.exit_code == 0, pulled.output
        assert out.read_bytes() == adders[1.0].read_bytes()
        wrong = CliRunner().invoke(cli, ["pull", ref, "-o", str(out)],
                                   env={**login, "EDGEPACK_REGISTRY_PASSWORD": "nope"})
        assert wrong.exit_code == 9 and "HTTP 401" in wrong.stderr, wrong.output
    finally:
        stop(proc)
