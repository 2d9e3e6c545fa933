"""CLI: click's runner for behaviour, a subprocess for the installed entry point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli


@pytest.fixture
def onnx_file(tmp_path, conv_onnx) -> Path:
    path = tmp_path / "net.onnx"
    path.write_bytes(conv_onnx)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\nfish\n")
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_pack_inspect_run_bench(tmp_path, onnx_file, conv_onnx):
    result = invoke("pack", onnx_file, "--labels", tmp_path / "labels.txt", "--resize", "8,8",
                    "--scale", 1 / 255, "--layout", "HWC:NCHW", "--softmax", "--topk", 3)
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "net.edgepack"
    shown = invoke("inspect", bundle)
    assert "onnxruntime" in shown.output and "resize -> scale -> layout" in shown.output
    manifest = json.loads(invoke("inspect", bundle, "--json").output)
    assert manifest["model"]["opset"] == 17 and manifest["inputs"][0]["layout"] == "NCHW"

    from PIL import Image
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    ran = invoke("run", bundle, tmp_path / "img.png", "--json")
    assert ran.exit_code == 0, ran.output
    top = json.loads(ran.output)[0]["logits"][0]
    assert len(top) == 3 and top[0]["label"] in {"cat", "dog", "bird", "fish"}
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]

    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    raw = json.loads(invoke("run", bundle, tmp_path / "x.npy", "--raw", "--json").output)
    from onnx.reference import ReferenceEvaluator
    expected = ReferenceEvaluator(conv_onnx).run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0]
    np.testing.assert_allclose(raw[0]["logits"], expected, rtol=1e-5, atol=1e-6)

    bench = json.loads(invoke("bench", bundle, "--runs", 30, "--warmup", 3, "--threads", 1,
                              "--json").output)
    assert bench["runs"] == 30 and 0 < bench["p50_ms"] <= bench["p99_ms"]
    assert bench["peak_rss_mb"] > 10


def test_bench_passes_spin_wait_to_the_runtime(tmp_path, onnx_file, monkeypatch):
    assert invoke("pack", onnx_file).exit_code == 0
    from edgepack.cli import runtime_cmds
    from edgepack.runtime import load
    seen = []

    def recording_load(path, **kwargs):
        seen.append(kwargs)
        return load(path, **kwargs)

    monkeypatch.setattr(runtime_cmds, "load", recording_load)
    for flag, expected in ((None, None), ("--no-spin-wait", False), ("--spin-wait", True)):
        args = ["bench", tmp_path / "net.edgepack", "--runs", 3, "--warmup", 1, "--threads", 2]
        result = invoke(*args, *([flag] if flag else []))
        assert result.exit_code == 0, result.output
        assert seen[-1] == {"threads": 2, "spin_wait": expected}


def test_verify_sign_and_tamper(tmp_path, onnx_file):
    invoke("pack", onnx_file)
    bundle = tmp_path / "net.edgepack"
    assert "ok:" in invoke("verify", bundle).output
    invoke("keygen", tmp_path / "k")
    assert invoke("sign", bundle, "--key", tmp_path / "k.key").exit_code == 0
    assert invoke("verify", bundle, "--key", tmp_path / "k.pub").exit_code == 0
    invoke("keygen", tmp_path / "other")
    wrong = invoke("verify", bundle, "--key", tmp_path / "other.pub")
    assert wrong.exit_code == 3 and "signature does not verify" in wrong.output


def test_errors_are_one_line_with_exit_code(tmp_path, onnx_file):
    invoke("pack", onnx_file)
    bad = invoke("run", tmp_path / "net.edgepack", tmp_path / "missing.npy")
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "no such input file" in bad.output
    (tmp_path / "junk.edgepack").write_bytes(b"junk")
    junk = invoke("inspect", tmp_path / "junk.edgepack")
    assert junk.exit_code == 3 and "Traceback" not in junk.output


def test_installed_entry_point_as_subprocess(tmp_path, onnx_file):
    exe = Path(sys.executable).with_name("edgepack")
    assert exe.exists()
    packed = subprocess.run([exe, "pack", onnx_file, "--topk", "1"], capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr
    (tmp_path / "junk.edgepack").write_bytes(b"junk")
    failed = subprocess.run([exe, "verify", tmp_path / "junk.edgepack"], capture_output=True, text=True)
    assert failed.returncode == 3
    assert failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr
    debug = subprocess.run([exe, "--debug", "verify", tmp_path / "junk.edgepack"],
                           capture_output=True, text=True)
    assert "Traceback" in debug.stderr
