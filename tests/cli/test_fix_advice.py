"""The fixes edgepack suggests are the right ones (issue 12 item 21): a float tensor for an
int8 input under --raw is told to quantize with the input's scale and zero point (not just
`astype('int8')`), a tensor file failing an image pipeline is told about --raw, and the
dynamic-int8 warning says its figures are MobileNetV2's, not the model's."""
from __future__ import annotations

import numpy as np

from cli_helpers import invoke

from edgepack.runtime import pack_bundle


def test_raw_float_on_int8_io_says_quantize(cli_files, conv_tflite_int8):
    pack_bundle("q.edgepack", conv_tflite_int8, name="q")
    np.save("f.npy", np.zeros((1, 8, 8, 3), np.float32))
    result = invoke("run", "q.edgepack", "f.npy", "--raw")
    assert result.exit_code == 2, result.output
    assert "is int8 quantized (scale " in result.output
    assert "quantize it first (round(x / scale) + zero_point, clipped to int8), or drop " \
           "--raw so predict() quantizes it" in result.output
    assert "astype" not in result.output


def test_tensor_file_through_an_image_pipeline_mentions_raw(cli_files, conv_onnx):
    pack_bundle("img.edgepack", conv_onnx, name="img",
                preprocess={"x": [{"op": "color", "from": "RGB", "to": "BGR"},
                                  {"op": "layout", "from": "HWC", "to": "NCHW"}]})
    result = invoke("run", "img.edgepack", "x.npy")
    assert result.exit_code == 4, result.output
    assert "x.npy is a tensor file: if it holds the model's input, pass --raw" in result.output
    assert invoke("run", "img.edgepack", "x.npy", "--raw").exit_code == 0


def test_dynamic_warning_names_where_its_figures_come_from():
    from edgepack.converters.int8.recipes import dynamic_refusal
    for engine in ("onnxruntime", "litert"):
        message = dynamic_refusal(["Conv", "Conv", "CONV_2D", "CONV_2D", "Gemm"],
                                  asked_explicitly=False, engine=engine)
        assert "MobileNetV2" in message and "not on this model" in message
        assert "edgepack bench" in message
