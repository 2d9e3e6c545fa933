"""serve's /predict takes text for a bundle that tokenizes, and answers its spans/labels."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from edgepack.runtime import load
from edgepack.runtime.serve import ModelServer, ServeConfig
from .test_text_steps import tagger  # noqa: F401  (the fixture: a tiny NER bundle)


def _post(url: str, body: bytes, ctype: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def text_server(tagger, tmp_path):  # noqa: F811
    repo = tmp_path / "repo" / "ner"
    repo.mkdir(parents=True)
    (repo / "1.edgepack").write_bytes(tagger.read_bytes())
    config = ServeConfig(host="127.0.0.1", port=0, workers=1, poll_interval=0.05,
                         engine_threads=1)
    with ModelServer(tmp_path / "repo", config) as srv:
        yield srv


def test_predict_takes_text_and_answers_what_predict_gives(text_server, tagger):  # noqa: F811
    url = f"{text_server.url}/v2/models/ner/predict"
    with load(tagger) as model:
        expected = model.predict("john smith lives in new york")
    status, plain = _post(url, b"john smith lives in new york", "text/plain")
    # /predict answers one request with one result: a batch of one is unwrapped, as for
    # top-k lists of images
    assert status == 200 and plain["outputs"] == {"spans": json.loads(json.dumps(expected))["spans"][0]}
    status, as_json = _post(url, json.dumps({"text": "john smith lives in new york"}).encode(),
                            "application/json")
    assert status == 200 and as_json["outputs"] == plain["outputs"]
    assert [s["text"] for s in plain["outputs"]["spans"]] == ["john smith", "new york"]


def test_bad_text_bodies_are_400_and_the_server_keeps_serving(text_server):
    url = f"{text_server.url}/v2/models/ner/predict"
    assert _post(url, b"\xff\xfe", "text/plain")[0] == 400
    assert _post(url, b"[" * 100_000, "application/json")[0] == 400
    assert _post(url, b'{"text": 3}', "application/json")[0] == 400
    assert _post(url, b"mary loves paris", "text/plain")[0] == 200
