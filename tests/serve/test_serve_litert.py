"""Serving a LiteRT (TFLite) int8 bundle: same bytes out as in-process, under concurrency."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edgepack.runtime import load, pack_bundle
from edgepack.runtime.serve import ModelServer, ServeConfig

httpclient = pytest.importorskip("tritonclient.http")


@pytest.mark.slow
def test_litert_int8_bundle_serves_exactly_what_it_computes_in_process(tmp_path,
                                                                       conv_tflite_int8):
    pytest.importorskip("ai_edge_litert")
    bundle = pack_bundle(tmp_path / "repo" / "conv" / "1.edgepack", conv_tflite_int8,
                         name="conv", version="1")
    with load(bundle) as model:
        spec = model.inputs[0]
        assert model.engine_name == "litert" and spec.dtype == "int8"
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        rng = np.random.default_rng(0)
        samples = [rng.integers(-128, 128, size=shape, dtype=np.int8) for _ in range(4)]
        expected = [model.run({spec.name: s})[model.outputs[0].name] for s in samples]
    config = ServeConfig(host="127.0.0.1", port=0, workers=4, poll_interval=0)
    with ModelServer(tmp_path / "repo", config) as server:
        meta = server.manager.snapshot()["conv"]["1"]
        assert meta.model.engine_name == "litert"
        errors: list[str] = []

        def client(i: int) -> None:
            c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
            try:
                for _ in range(25):
                    inp = httpclient.InferInput(spec.name, list(shape), "INT8")
                    inp.set_data_from_numpy(samples[i])
                    out = c.infer("conv", [inp]).as_numpy(model.outputs[0].name)
                    if out.dtype != expected[i].dtype or not np.array_equal(out, expected[i]):
                        errors.append(f"client {i}: {out} != {expected[i]}")
            except Exception as exc:  # collected; asserted empty below
                errors.append(f"client {i}: {type(exc).__name__}: {exc}")
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:3]
        text = server.metrics.render()
        assert 'edgepack_requests_total{model="conv",version="1"} 100' in text
