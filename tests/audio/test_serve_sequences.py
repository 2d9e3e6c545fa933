"""serve: a stateful model over V2 with Triton's sequence parameters; state per sequence,
bounded in number and idle time."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

import toys
from edgepack.runtime import pack_bundle
from edgepack.runtime.serve import ModelServer, ServeConfig
from edgepack.runtime.serve.protocol import InferRequest
from edgepack.runtime.serve.errors import RequestError
from edgepack.runtime.serve.sequences import SequenceTable

STREAM = {"rate": 16000, "window": 4,
          "state": [{"input": "state", "output": "stateN", "init": 0.0}]}


@pytest.fixture
def server(tmp_path):
    repo = tmp_path / "repo"
    pack_bundle(repo / "acc" / "1.edgepack", toys.accumulator(), name="acc", stream=STREAM,
                examples={"input": {"shape": [1, 4]}})
    config = ServeConfig(host="127.0.0.1", port=0, workers=2, poll_interval=0.05, engine_threads=1)
    with ModelServer(repo, config) as srv:
        yield srv


def infer(server, values, **params):
    body = {"inputs": [{"name": "input", "shape": [1, len(values)], "datatype": "FP32",
                        "data": values}], "parameters": params}
    req = urllib.request.Request(f"{server.url}/v2/models/acc/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_state_is_kept_per_sequence(server):
    assert infer(server, [1, 2, 3, 4], sequence_id=1, sequence_start=True)[1]["outputs"][0]["data"] == [10]
    assert infer(server, [5, 0, 0, 0], sequence_id=2, sequence_start=True)[1]["outputs"][0]["data"] == [5]
    status, body = infer(server, [1, 1, 1, 1], sequence_id=1)
    assert status == 200 and body["outputs"][0]["data"] == [14]
    assert [o["name"] for o in body["outputs"]] == ["total"]  # state stays on the server
    assert infer(server, [1, 0, 0, 0], sequence_id=2, sequence_end=True)[1]["outputs"][0]["data"] == [6]
    status, body = infer(server, [1, 0, 0, 0], sequence_id=2)
    assert status == 400 and "sequence 2 of model 'acc' is not running" in body["error"]
    # restart resets to init
    assert infer(server, [1, 0, 0, 0], sequence_id=1, sequence_start=True)[1]["outputs"][0]["data"] == [1]
    status, body = infer(server, [1, 0, 0, 0], sequence_id=True)
    assert status == 400 and "sequence_id" in body["error"]


def _request(sid, start=False):
    from edgepack.runtime.serve.protocol import decode_infer_request
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}],
            "parameters": {"sequence_id": sid, "sequence_start": start}}
    return decode_infer_request(json.dumps(body).encode(), None)


def test_bounded_number_and_idle_time(tmp_path):
    from edgepack.runtime import load
    path = pack_bundle(tmp_path / "acc.edgepack", toys.accumulator(), name="acc", stream=STREAM)
    now = [0.0]
    table = SequenceTable(max_sequences=2, idle_s=10.0, clock=lambda: now[0])
    with load(path) as model:
        table.run("acc", "1", model, _request(1, True))
        table.run("acc", "1", model, _request(2, True))
        with pytest.raises(RequestError) as e:
            table.run("acc", "1", model, _request(3, True))
        assert e.value.status == 429
        now[0] = 5.0
        table.run("acc", "1", model, _request(1))     # 1 used at t=5, 2 idle since t=0
        now[0] = 12.0
        table.run("acc", "1", model, _request(3, True))  # 2 expired (idle 12 s > 10 s)
        assert len(table) == 2
        with pytest.raises(RequestError, match="idle over 10 s"):
            table.run("acc", "1", model, _request(2))
        out = table.run("acc", "1", model, _request(1))
        assert out[0][1].tolist() == [[12.0]]  # 4 + 4 + 4: state carried across requests
    path2 = pack_bundle(tmp_path / "plain.edgepack", toys.accumulator(), name="plain")
    with load(path2) as model:
        with pytest.raises(RequestError, match="keeps no state"):
            table.run("plain", "1", model, _request(9, True))
