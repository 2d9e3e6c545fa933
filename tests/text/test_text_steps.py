"""The text encode/decode steps on tiny ONNX models built here (Gather from a table keyed
by token id, so every expected number is computed by hand in numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtime import load, pack_bundle
from edgepack.runtime.errors import InputError, PipelineError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "john", "smith", "lives", "in", "new", "york",
         "##s", "and", "mary", "loves", "paris", ".", "the", "city"]
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TAGS = {"john": 1, "smith": 2, "mary": 1, "new": 3, "york": 4, "paris": 3}


def _gather_model(table: np.ndarray, out_name: str, reduce: bool = False) -> bytes:
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])
    dims = ["b", table.shape[1]] if reduce else ["b", "s", table.shape[1]]
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, dims)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["g" if reduce else out_name]),
             helper.make_node("Cast", ["attention_mask"], ["unused"], to=TensorProto.FLOAT)]
    if reduce:
        nodes.append(helper.make_node("ReduceMean", ["g", "axes"], [out_name], keepdims=0))
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "g", [ids, mask], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _vocab_bytes() -> bytes:
    return ("\n".join(VOCAB) + "\n").encode()


@pytest.fixture
def tagger(tmp_path):
    table = np.full((len(VOCAB), len(LABELS)), -2.0)
    for i, tok in enumerate(VOCAB):
        table[i, TAGS.get(tok.lstrip("#"), 0)] = 3.0
    return pack_bundle(tmp_path / "ner.edgepack", _gather_model(table, "logits"), name="ner",
                       labels=LABELS, task={"kind": "tag_tokens"},
                       encode=[{"op": "tokenize", "max_length": 32}],
                       decode=[{"op": "token_spans"}], assets={"tokenizer": _vocab_bytes()})


def test_token_spans_merge_bio_labels_into_character_spans(tagger):
    text = "John Smith lives in New York and Mary loves Paris."
    with load(tagger) as model:
        spans = model.predict(text)["spans"]
    assert [(s["text"], s["label"], s["start"], s["end"]) for s in spans[0]] == [
        ("John Smith", "PER", 0, 10), ("New York", "LOC", 20, 28), ("Mary", "PER", 33, 37),
        ("Paris", "LOC", 44, 49)]
    p = np.exp(3.0) / (np.exp(3.0) + 4 * np.exp(-2.0))
    assert all(abs(s["score"] - p) < 1e-9 for s in spans[0])


def test_a_batch_gives_one_span_list_per_text(tagger):
    with load(tagger) as model:
        spans = model.predict(["mary", "the city", "paris and new york"])["spans"]
    assert [[s["text"] for s in row] for row in spans] == [["mary"], [], ["paris", "new york"]]


def test_pool_mean_over_the_mask_and_l2(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.standard_normal((len(VOCAB), 8))
    bundle = pack_bundle(tmp_path / "emb.edgepack", _gather_model(table, "last_hidden_state"),
                         name="emb", task={"kind": "embed"},
                         encode=[{"op": "tokenize"}],
                         decode=[{"op": "pool", "mode": "mean"}, {"op": "l2_normalize"}],
                         assets={"tokenizer": _vocab_bytes()})
    texts = ["john lives in paris", "mary"]
    with load(bundle) as model:
        got = np.asarray(model.predict(texts)["embedding"])
    ids = [[2, 4, 6, 7, 14, 3], [2, 12, 3]]
    expected = np.stack([table[i].mean(0) for i in ids])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_pool_cls_and_max(tmp_path, mode):
    table = np.random.default_rng(1).standard_normal((len(VOCAB), 4))
    bundle = pack_bundle(tmp_path / "e.edgepack", _gather_model(table, "h"), name="e",
                         encode=[{"op": "tokenize"}], decode=[{"op": "pool", "mode": mode}],
                         assets={"tokenizer": _vocab_bytes()})
    with load(bundle) as model:
        got = np.asarray(model.predict(["john smith", "mary"])["embedding"])
    rows = [[2, 4, 5, 3], [2, 12, 3]]
    expected = [table[r[0]] if mode == "cls" else table[r].max(0) for r in rows]
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-6)


def test_text_labels_softmax_top_k(tmp_path):
    table = np.zeros((len(VOCAB), 3))
    table[VOCAB.index("paris"), 2] = 6.0
    bundle = pack_bundle(tmp_path / "c.edgepack", _gather_model(table, "logits", reduce=True),
                         name="c", labels=["a", "b", "city"], task={"kind": "classify_text"},
                         encode=[{"op": "tokenize"}], decode=[{"op": "text_labels", "top_k": 2}],
                         assets={"tokenizer": _vocab_bytes()})
    with load(bundle) as model:
        out = model.predict("paris")["labels"]
        assert model.predict(np.array(["paris", "mary"], dtype=object))["labels"][0] == out[0]
        assert model.predict([b"paris"])["labels"] == out
    logits = np.array([0.0, 0.0, 6.0 / 3])  # mean over [CLS] paris [SEP]
    p = np.exp(logits) / np.exp(logits).sum()
    assert [d["label"] for d in out[0]] == ["city", "a"]
    assert abs(out[0][0]["score"] - p[2]) < 1e-6 and len(out[0]) == 2


def test_bad_text_inputs_are_input_errors(tagger):
    with load(tagger) as model:
        with pytest.raises(InputError, match="text input must be a str"):
            model.predict(42)
        with pytest.raises(InputError, match="no text to tokenize"):
            model.predict([])
        with pytest.raises(InputError, match="not UTF-8"):
            model.predict(b"\xff\xfe")


def test_tokenize_step_checks_its_parameters(tmp_path):
    model = _gather_model(np.zeros((len(VOCAB), 2)), "logits")
    with pytest.raises(PipelineError, match="'max_length' must be an integer >= 2"):
        pack_bundle(tmp_path / "x.edgepack", model, name="x", assets={"tokenizer": _vocab_bytes()},
                    encode=[{"op": "tokenize", "max_length": 1}])
    with pytest.raises(PipelineError, match="asset 'tokenizer' is not in this bundle"):
        pack_bundle(tmp_path / "y.edgepack", model, name="y", encode=[{"op": "tokenize"}])
    with pytest.raises(PipelineError, match="unknown parameter"):
        pack_bundle(tmp_path / "z.edgepack", model, name="z", assets={"tokenizer": _vocab_bytes()},
                    encode=[{"op": "tokenize", "maxlen": 8}])


def test_fast_path_is_used_only_when_identical(tmp_path, trained_json):
    pytest.importorskip("tokenizers")
    from edgepack.runtime.text import Padding, Tokenizer, Truncation
    from edgepack.runtime.text.fast import fast_encoder
    js = trained_json("bpe")
    tok = Tokenizer.from_json(js)
    fast = fast_encoder(js, tok, Truncation(16), Padding(None, 1, 0, "<pad>"))
    assert fast is not None
    texts = ["hello there", "Сегодня хорошая погода и солнце светит ярко"]
    assert [e.ids for e in fast(texts)] == [e.ids for e in tok.encode_batch(
        texts, truncation=Truncation(16), padding=Padding(None, 1, 0, "<pad>"))]
    # a different tokenizer behind the same json: the self-check refuses it
    other = Tokenizer.from_json(trained_json("wordpiece"))
    assert fast_encoder(js, other, None, None) is None


def test_parse_text_body_for_http():
    from edgepack.runtime.text.steps import parse_text_body
    assert parse_text_body(b'"hi"', "application/json") == "hi"
    assert parse_text_body(b'["a", "b"]', "application/json; charset=utf-8") == ["a", "b"]
    assert parse_text_body(b'{"text": ["x"]}', "application/json") == ["x"]
    assert parse_text_body("héllo".encode(), "text/plain") == "héllo"
    with pytest.raises(InputError, match="not UTF-8"):
        parse_text_body(b"\xff", "text/plain")
    with pytest.raises(InputError, match="is not text"):
        parse_text_body(b"x", "image/png")
    with pytest.raises(InputError, match="does not parse"):
        parse_text_body(b"{", "application/json")


def test_static_int8_of_transformers_needs_calibration_texts():
    from edgepack.converters.hf_onnx import TextConversionConfig, convert_transformer
    from edgepack.runtime.errors import ConversionError
    with pytest.raises(ConversionError, match=r"static int8 needs calibration texts "
                                              r"\(calibration_texts= / --calibration-texts"):
        convert_transformer(object(), "x.edgepack",
                            TextConversionConfig(name="x", quantization="int8"))
