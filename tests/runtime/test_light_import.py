"""The device runtime must stay numpy + one engine: nothing heavy at import or at load."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "tensorflow", "keras", "onnx", "click", "onnxruntime", "ai_edge_litert",
         "tflite_runtime", "jax", "PIL", "cv2"]


def _modules_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_runtime_is_light():
    loaded = _modules_after("import edgepack.runtime")
    assert not {m for m in HEAVY if m in loaded}
    assert not any(m.startswith("edgepack.converters") for m in loaded)


def test_import_edgepack_is_light():
    loaded = _modules_after("import edgepack")
    assert not {m for m in HEAVY if m in loaded}


def test_loading_an_onnx_bundle_does_not_pull_the_other_engine(conv_bundle):
    loaded = _modules_after(f"import edgepack.runtime as r\nr.load({str(conv_bundle)!r})")
    assert "onnxruntime" in loaded
    assert not {m for m in ("tensorflow", "torch", "ai_edge_litert", "onnx", "click") if m in loaded}
