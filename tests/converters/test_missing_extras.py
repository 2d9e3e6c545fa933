"""A missing optional module is one EngineNotInstalledError naming it and the extra that
installs it, whichever path needs it and however deep the import fails (issue 12 item 26b:
without onnxscript every PyTorch conversion said `torch.onnx.export failed: No module named
'onnxscript'`). Each case blocks one module in a fresh interpreter (sys.modules[name] = None
makes its import fail as if it were not installed)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    for name in {blocked!r}:
        sys.modules[name] = None
    sys.path[:0] = {paths!r}
    import numpy as np
    from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model
    source = {source}
    try:
        convert_model(source, "out.edgepack", ConversionConfig(
            target={target!r}, quantization=QuantizationConfig(mode={mode!r}), **{config}),
            **{kwargs})
        print(json.dumps(["ok", ""]))
    except Exception as e:
        print(json.dumps([type(e).__name__, str(e)]))
""")


def run_blocked(tmp_path, blocked, source, target="onnx", mode="none", kwargs="{}",
                config="{}"):
    code = SCRIPT.format(blocked=list(blocked), paths=[str(TESTS), str(TESTS / "converters")],
                         source=source, target=target, mode=mode, kwargs=kwargs, config=config)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def onnx_file(tmp_path):
    import models
    (tmp_path / "m.onnx").write_bytes(models.onnx_conv_classifier())
    return tmp_path


CASES = [
    # (blocked modules, source expression, target, mode, kwargs, module named, extra)
    (("onnxscript",), "__import__('tiny_models').make_torch_cnn()", "onnx", "none",
     "dict(example_inputs=np.zeros((2, 1, 8, 8), np.float32))", "onnxscript", "convert"),
    (("torch",), "'model.pt2'", "onnx", "none", "{}", "torch", "convert"),
    (("tensorflow", "keras"), "'model.keras'", "onnx", "none", "{}", None, "convert"),
    (("onnx",), "'m.onnx'", "onnx", "fp16", "{}", "onnx", "convert"),
    (("litert_torch", "ai_edge_torch"), "__import__('tiny_models').make_torch_cnn()",
     "tflite", "none", "dict(example_inputs=np.zeros((1, 1, 8, 8), np.float32))", None,
     "convert-torch-tflite"),
]


@pytest.mark.parametrize("blocked, source, target, mode, kwargs, module, extra", CASES,
                         ids=[c[0][0] for c in CASES])
def test_missing_module_names_its_extra(onnx_file, blocked, source, target, mode, kwargs,
                                        module, extra):
    for name in ("model.pt2", "model.keras"):
        (onnx_file / name).write_bytes(b"placeholder: the import fails before it is read")
    kind, message = run_blocked(onnx_file, blocked, source, target, mode, kwargs)
    assert kind == "EngineNotInstalledError", message
    assert f"pip install 'edgepack[{extra}]'" in message
    assert module is None or f"needs {module}," in message


def test_image_calibration_without_pillow(onnx_file):
    from PIL import Image
    folder = onnx_file / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    steps = ('dict(preprocess={"x": [{"op": "scale", "factor": 1 / 255}, '
             '{"op": "layout", "from": "HWC", "to": "NCHW"}]})')
    kind, message = run_blocked(onnx_file, ("PIL",), "'m.onnx'", "onnx", "int8",
                                "dict(calibration_data='images')", steps)
    assert kind == "EngineNotInstalledError", message
    assert "pip install 'edgepack[image]'" in message


def test_missing_module_walks_the_cause_chain():
    from edgepack.converters.extras import missing_module, not_installed
    try:
        try:
            raise ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript")
        except ImportError as inner:
            raise RuntimeError("export failed") from inner
    except RuntimeError as outer:
        assert missing_module(outer) == "onnxscript"
    assert missing_module(ValueError("x")) is None
    assert "no edgepack extra" in str(not_installed("timm", "this model"))
