"""A Keras Embedding + pooling classifier over a WordPiece vocabulary -> TFLite text bundle."""
from __future__ import annotations

import numpy as np
import pytest

from tests.text import corpus


@pytest.mark.slow
def test_keras_embedding_classifier_to_tflite_text_bundle(tmp_path, trained_json):
    tf = pytest.importorskip("tensorflow")
    from edgepack.converters.keras_text import convert_keras_text
    from edgepack.runtime import load
    from edgepack.runtime.text import Padding, Tokenizer, Truncation
    js = trained_json("wordpiece")
    tok = Tokenizer.from_json(js)
    vocab = len(tok.model.vocab)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((16,), dtype="int32"),
        tf.keras.layers.Embedding(vocab, 16),
        tf.keras.layers.GlobalAveragePooling1D(),
        tf.keras.layers.Dense(3)])
    texts = corpus.sample("de", 20, seed=2) + corpus.sample("ru", 20, seed=2)
    path = convert_keras_text(model, tmp_path / "k.edgepack", name="k", tokenizer=js.encode(),
                              labels=["a", "b", "c"], max_length=16, validation_texts=texts)
    with load(path) as bundle:
        assert bundle.engine_name == "litert" and bundle.task == "classify_text"
        assert bundle.manifest.validation["top1_agreement"] == 1.0
        result = bundle.predict(texts[0])["labels"][0]
    enc = tok.encode(texts[0], truncation=Truncation(16), padding=Padding(16))
    logits = np.asarray(model(np.array([enc.ids], np.int32)))[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert result[0]["index"] == int(p.argmax())
    assert abs(result[0]["score"] - p.max()) < 1e-4
