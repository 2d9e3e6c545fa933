"""PyTorch -> TFLite from an exported program (.pt2), not only from an nn.Module (issue 12
item 15: `litert-torch failed: Calling eval() is not supported yet.`)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")

from tiny_models import make_torch_cnn  # noqa: E402


@pytest.mark.slow  # litert-torch lowering through jax: ~30-60 s on this machine
def test_pt2_converts_to_tflite(tmp_path):
    from edgepack.converters import ConversionConfig, convert_model
    from edgepack.runtime import load
    model = make_torch_cnn()
    program = torch.export.export(model, (torch.zeros(1, 1, 8, 8),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    result = convert_model(str(tmp_path / "m.pt2"), tmp_path / "m.edgepack",
                           ConversionConfig(target="tflite"))
    assert result.validation["passed"] is True
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    with load(result.path) as bundle:
        (out,) = bundle.run({bundle.inputs[0].name: x}).values()
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
