"""A bundle whose decode steps end with a detection decoder (no `nms`) is refused when it
loads, with one PipelineError naming the fix: in the library, `edgepack run --json` (exit
code 4, pipeline) and serve (the version is refused, /predict answers 503 with the reason).
Before, predict returned a CandidateBatch of numpy arrays that no JSON encoder could write."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli.main import cli
from edgepack.runtime import load, pack_bundle
from edgepack.runtime.errors import PipelineError
from tests.detection.test_readme_detection import CANDIDATES, constant_onnx

MESSAGE = ("decode[0] (yolo) is the last decode step: it yields candidate boxes for 'nms', "
           "not detections; add {\"op\": \"nms\"} after it")
PREPROCESS = {"images": [{"op": "letterbox", "size": [64, 64]},
                         {"op": "scale", "factor": 1 / 255},
                         {"op": "layout", "from": "HWC", "to": "CHW"}]}


def bundle(tmp_path, decode, name="det"):
    """A detector bundle with these decode steps. pack_bundle refuses a decode that ends
    without nms, so such a bundle (made by another tool, or edited) is written by packing
    it with nms and rewriting its manifest: the manifest carries no checksum of itself."""
    constant_onnx(tmp_path / "det.onnx", {"images": (1, 3, 64, 64)},
                  {"output0": CANDIDATES.T[None]})
    ends_with_nms = bool(decode) and decode[-1].get("op") == "nms"
    path = pack_bundle(tmp_path / f"{name}.edgepack", (tmp_path / "det.onnx").read_bytes(),
                       name=name, labels=["rectangle", "disc"], preprocess=PREPROCESS,
                       task={"kind": "detect"},
                       decode=decode if ends_with_nms else [*decode, {"op": "nms"}])
    if not ends_with_nms:
        with zipfile.ZipFile(path) as z:
            members = {i.filename: z.read(i) for i in z.infolist()}
        manifest = json.loads(members["manifest.json"])
        manifest["decode"] = decode
        members["manifest.json"] = json.dumps(manifest).encode()
        with zipfile.ZipFile(path, "w") as z:
            for member, data in members.items():
                z.writestr(member, data)
    return path


YOLO = {"op": "yolo", "coordinates": "normalized"}


def test_pack_refuses_a_decoder_without_nms(tmp_path):
    constant_onnx(tmp_path / "det.onnx", {"images": (1, 3, 64, 64)},
                  {"output0": CANDIDATES.T[None]})
    with pytest.raises(PipelineError) as info:
        pack_bundle(tmp_path / "bad.edgepack", (tmp_path / "det.onnx").read_bytes(),
                    name="bad", labels=["rectangle", "disc"], preprocess=PREPROCESS,
                    task={"kind": "detect"}, decode=[YOLO])
    assert MESSAGE in str(info.value)
    assert not (tmp_path / "bad.edgepack").exists()


def test_library_load_refuses_a_decoder_without_nms(tmp_path):
    path = bundle(tmp_path, [YOLO])
    with pytest.raises(PipelineError) as info:
        load(path)
    assert MESSAGE in str(info.value)
    # with nms the same bundle loads and predict returns JSON-able detections
    good = bundle(tmp_path, [YOLO, {"op": "nms"}], name="good")
    with load(good) as model:
        result = model.predict(np.zeros((48, 64, 3), np.uint8))
    assert json.loads(json.dumps(result)) == result
    assert [d["label"] for d in result["detections"]] == ["rectangle", "disc"]


def test_run_json_exits_with_the_pipeline_code(tmp_path):
    path = bundle(tmp_path, [YOLO])
    photo = tmp_path / "photo.npy"
    np.save(photo, np.zeros((48, 64, 3), np.uint8))
    result = CliRunner().invoke(cli, ["run", str(path), str(photo), "--json"])
    assert result.exit_code == 4, result.output
    assert MESSAGE in result.output
    assert "Traceback" not in result.output


def test_serve_refuses_the_version_and_predict_names_the_reason(tmp_path):
    from edgepack.runtime.serve import ModelServer, ServeConfig
    repo = tmp_path / "repo"
    (repo / "det").mkdir(parents=True)
    bundle(repo / "det", [YOLO], name="1")
    config = ServeConfig(host="127.0.0.1", port=0, workers=1, poll_interval=0.05,
                         engine_threads=1)
    with ModelServer(repo, config) as server:
        with urllib.request.urlopen(f"{server.url}/v2/repository/index", timeout=10) as r:
            index = json.loads(r.read())
        assert [(e["name"], e["state"]) for e in index] == [("det", "UNAVAILABLE")]
        assert MESSAGE in index[0]["reason"]
        request = urllib.request.Request(f"{server.url}/v2/models/det/predict",
                                         data=np.zeros(4, np.uint8).tobytes(), method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 503
