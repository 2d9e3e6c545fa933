"""Every error family reaches the user as one `error:` line and its own exit code, from
every command (issue 12 item 20): 2 input, 3 bundle, 4 pipeline, 5 engine, 6 conversion,
7 device, 8 serve. Commands never re-wrap errors (serve and optimize used to exit 1)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import invoke

from edgepack.cli.main import EXIT_CODES


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def assert_family(result, family: str, text: str) -> None:
    assert result.exit_code == EXIT_CODES[family], result.output
    lines = error_lines(result)
    assert len(lines) == 1 and text in lines[0], result.output
    assert "Traceback" not in result.output and "Error: " not in result.output


def test_family_numbers_are_stable():
    assert EXIT_CODES == {"input": 2, "bundle": 3, "pipeline": 4, "engine": 5,
                          "conversion": 6, "device": 7, "serve": 8, "registry": 9,
                          "mqtt": 10}


def test_input_family(cli_files):
    assert_family(invoke("convert", "nosuch.pt2", "-o", "o.edgepack"), "input",
                  "source model nosuch.pt2 does not exist")
    assert_family(invoke("pack", "m.onnx", "--layout", "HWC-NCHW", "-o", "l.edgepack"),
                  "input", "--layout 'HWC-NCHW' must look like HWC:NCHW")
    Path("bad.toml").write_text("[nonsense]\n")
    assert_family(invoke("pack", "m.onnx", "--pipeline", "bad.toml", "-o", "p.edgepack"),
                  "input", "unknown tables ['nonsense']")
    np.save("wrong.npy", np.zeros((2, 2), np.float32))
    assert_family(invoke("run", "m.edgepack", "wrong.npy", "--raw"), "input",
                  "expected shape [?, 3, 8, 8], got [2, 2]")


def test_input_family_of_optimize(cli_files):
    np.savez("nodata.npz", other=np.zeros(3))
    result = invoke("optimize", "prune", "tiny_models:make_torch_cnn", "--out", "p.pt",
                    "--data", "nodata.npz")
    assert_family(result, "input", "lacks x_train, y_train")


def test_bundle_family(cli_files):
    Path("junk.edgepack").write_bytes(b"junk")
    result = invoke("verify", "junk.edgepack")
    assert result.exit_code == EXIT_CODES["bundle"] and len(error_lines(result)) == 1


def test_pipeline_family(cli_files):
    Path("hook.json").write_text(json.dumps(
        {"preprocess": {"x": [{"op": "hook", "name": "mine"}]}}))
    assert invoke("pack", "m.onnx", "--pipeline", "hook.json", "-o", "h.edgepack").exit_code == 0
    assert_family(invoke("run", "h.edgepack", "x.npy"), "pipeline", "hook 'mine'")


def test_engine_family(cli_files):
    Path("garbage.onnx").write_bytes(b"not a model")
    assert_family(invoke("pack", "garbage.onnx"), "engine", "could not load the model")


def test_conversion_family(cli_files):
    assert_family(invoke("convert", "m.onnx", "-o", "o.edgepack", "-q", "int8"), "conversion",
                  "int8 quantization needs calibration data")


def test_device_family(cli_files):
    assert_family(invoke("check", "m.edgepack", "--device", "rpi9"), "device",
                  "unknown device 'rpi9'")


def test_serve_family(cli_files):
    Path("notes.txt").write_text("not a bundle")
    assert_family(invoke("serve", "notes.txt"), "serve",
                  "notes.txt is neither a .edgepack bundle nor a directory")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = invoke("serve", "m.edgepack", "--port", port, "--poll", "0",
                        "--no-smoke-test")
    assert_family(result, "serve", f"cannot listen on 127.0.0.1:{port}")


def test_serve_family_from_the_installed_command(cli_files):
    Path("notes.txt").write_text("not a bundle")
    exe = Path(sys.executable).with_name("edgepack")
    done = subprocess.run([exe, "serve", "notes.txt"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 8, done.stderr
    assert done.stderr.startswith("error: notes.txt is neither") and "Error:" not in done.stderr


@pytest.mark.parametrize("args", [
    ("bench", "m.edgepack", "--runs", "0"), ("bench", "m.edgepack", "--threads", "-1"),
    ("bench", "m.edgepack", "--warmup", "-1"), ("run", "m.edgepack", "x.npy", "--threads", "0"),
    ("convert", "m.onnx", "-o", "o.edgepack", "--opset", "99"),
    ("convert", "m.onnx", "-o", "o.edgepack", "--max-drop", "-1"),
    ("serve", "m.edgepack", "--port", "70000"),
    ("emulate", "m.edgepack", "--device", "rpi4b", "--threads", "0"),
])
def test_out_of_range_numbers_are_usage_errors(cli_files, args):
    result = invoke(*args)
    assert result.exit_code == 2 and "is not in the range" in result.output, result.output
    assert "Traceback" not in result.output


def test_convert_imports_factories_from_the_working_directory(cli_files, monkeypatch):
    # issue 12 item 17: convert agreed with optimize only when the package was installed
    import sys
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(cli_files))])
    (cli_files / "mypkg_item17").mkdir()
    (cli_files / "mypkg_item17" / "__init__.py").write_text("")
    (cli_files / "mypkg_item17" / "nets.py").write_text("def build():\n    return object()\n")
    result = invoke("convert", "mypkg_item17.nets:build", "-o", "o.edgepack")
    # imported and called: the object is refused for what it is, not for a failed import
    assert_family(result, "conversion", "cannot convert an object of type object")
