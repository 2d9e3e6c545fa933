"""The server itself running on emulated Raspberry Pi userlands (qemu-user), queried from here.

The guest has only what a minimal device install has (Python 3.11, numpy, one engine; no
click, no Pillow), so this checks that serving needs nothing more: aarch64 (Pi 4, ONNX
Runtime) with a hot update and a refused bad version, and armv7 (tflite-runtime 2.14 with
Debian's numpy 1.24). Uses the devices area's cached userlands; select with `-m emulated`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.runtime import load, pack_bundle
from serve_fixtures import call, make_adder, post_json

pytestmark = pytest.mark.emulated

if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")) \
        and not os.environ.get("CI"):  # in CI a missing qemu must fail, not skip
    pytest.skip("qemu-user is not installed (apt-get install -y qemu-user-static)",
                allow_module_level=True)

GUEST = """
import sys
from edgepack.runtime.serve import ModelServer, ServeConfig
server = ModelServer(sys.argv[1], ServeConfig(host="127.0.0.1", port=0, poll_interval=0.2,
                                              workers=2))
server.start()
print("PORT", server.port, flush=True)
server.serve_forever()
"""
START_TIMEOUT = 300.0


def _stage_runtime(work: Path) -> Path:
    """PYTHONPATH dir with `edgepack.runtime` only (serve is inside it), as on a device."""
    import edgepack.runtime

    src = work / "src"
    (src / "edgepack").mkdir(parents=True)
    (src / "edgepack" / "__init__.py").write_text("")
    (src / "edgepack" / "runtime").symlink_to(Path(edgepack.runtime.__file__).parent)
    return src


class Guest:
    """`edgepack.runtime.serve` under qemu for one device profile, serving `repo`."""

    def __init__(self, device: str, repo: Path, work: Path):
        from edgepack.devices.catalog import load_profile
        from edgepack.devices.emulation.environment import ensure_environment

        env_info = ensure_environment(load_profile(device))
        src = _stage_runtime(work)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "OPENBLAS", "LD_", "QEMU_"))}
        env.update(PYTHONPATH=f"{src}:{env_info.site}", PYTHONNOUSERSITE="1")
        self.proc = subprocess.Popen(
            [env_info.qemu, "-cpu", env_info.qemu_cpu, "-L", env_info.view, env_info.python,
             "-c", GUEST, str(repo)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or line.startswith("PORT "):
                break
        if not line.startswith("PORT "):
            self.close()
            raise AssertionError(f"guest server did not start: {self.proc.stderr.read()[-3000:]}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _wait_version(url: str, model: str, version: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = call("GET", f"{url}/v2/models/{model}")
        if status == 200 and json.loads(body)["versions"] == [version]:
            return
        time.sleep(0.5)
    raise AssertionError(f"{model} version {version} not served after {timeout} s")


def test_pi4_aarch64_serves_hot_swaps_and_refuses_a_bad_version(tmp_path):
    httpclient = pytest.importorskip("tritonclient.http")
    repo = tmp_path / "repo"
    make_adder(repo / "adder" / "1.edgepack", 1.0, version="1")
    guest = Guest("rpi4b", repo, tmp_path / "work")
    try:
        x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
        client = httpclient.InferenceServerClient(guest.url.removeprefix("http://"))
        try:
            inp = httpclient.InferInput("x", [3, 4], "FP32")
            inp.set_data_from_numpy(x)
            y = client.infer("adder", [inp]).as_numpy("y")
            np.testing.assert_array_equal(y, x + np.float32(1.0))     # one float add: exact
        finally:
            client.close()
        os.replace(make_adder(tmp_path / "staging" / "2.edgepack", 2.0, version="2"),
                   repo / "adder" / "2.edgepack")
        _wait_version(guest.url, "adder", "2")
        status, out = post_json(f"{guest.url}/v2/models/adder/infer", {"inputs": [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]})
        assert status == 200 and out["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
        (repo / "adder" / "3.edgepack").write_bytes(b"PK\x03\x04 truncated copy")
        deadline = time.monotonic() + 180
        rows = {}
        while time.monotonic() < deadline and rows.get("3") != "UNAVAILABLE":
            rows = {r["version"]: r["state"]
                    for r in json.loads(call("GET", f"{guest.url}/v2/repository/index")[2])}
            time.sleep(0.5)
        assert rows.get("3") == "UNAVAILABLE" and rows.get("2") == "READY"
        # No Pillow on the device: the image route says so instead of failing obscurely.
        status, _, body = call("POST", f"{guest.url}/v2/models/adder/predict", b"\xff\xd8jpeg",
                               {"Content-Type": "image/jpeg"})
        assert status == 415 and "Pillow" in json.loads(body)["error"]
    finally:
        guest.close()


def test_armv7_tflite_runtime_serves_what_the_host_computes(tmp_path, conv_tflite):
    repo = tmp_path / "repo"
    bundle = pack_bundle(repo / "conv" / "1.edgepack", conv_tflite, name="conv", version="1")
    with load(bundle) as model:
        spec, out_name = model.inputs[0], model.outputs[0].name
        shape = [1 if d < 0 else d for d in spec.shape]
        x = np.random.default_rng(1).normal(size=shape).astype(spec.dtype)
        expected = model.run({spec.name: x})[out_name]
    guest = Guest("generic-armv7l", repo, tmp_path / "work")
    try:
        status, out = post_json(f"{guest.url}/v2/models/conv/infer", {"inputs": [
            {"name": spec.name, "shape": shape, "datatype": "FP32",
             "data": x.ravel().tolist()}]})
        assert status == 200, out
        got = np.array(out["outputs"][0]["data"], np.float32).reshape(expected.shape)
        # tflite-runtime 2.14 on ARM vs LiteRT on x86: float kernels differ in the last bits.
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
    finally:
        guest.close()
