"""Keras text classifiers (Embedding + pooling + Dense over token ids) -> TFLite text bundle.

The model takes int32 token ids of a fixed length; the bundle carries the tokenizer
(tokenizer.json or vocab.txt) and pads/truncates every text to that length, so the app on
the device passes strings. Validation runs the Keras model and the bundle on the same
tokenized texts (top-1 agreement, recorded in the manifest).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .hf_onnx import DEFAULT_TEXTS
from .text_validation import raise_if_failed
from .validation import output_stats

log = logging.getLogger(__name__)


def convert_keras_text(model: Any, out: str | Path, *, name: str, tokenizer: bytes,
                       labels: Sequence[str], max_length: int, quantization: str = "none",
                       validation_texts: Sequence[str] | None = None,
                       min_agreement: float = 0.98, accept: bool = False) -> Path:
    """Convert a Keras model mapping [batch, max_length] int32 ids -> [batch, classes]."""
    import tensorflow as tf

    from edgepack.runtime import load, pack_bundle
    if quantization not in ("none", "dynamic", "fp16"):
        raise ConversionError(f"Keras text models convert with quantization none, fp16 or "
                              f"dynamic, not {quantization!r}")
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 2 or shape[1] != max_length:
        raise ConversionError(f"the Keras model must take [batch, {max_length}] token ids, "
                              f"takes {shape}")
    # from_keras_model: a concrete function over the same model gave NaN outputs here
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    try:
        tflite = converter.convert()
    except Exception as e:
        raise ConversionError(f"TFLite conversion failed: {str(e).splitlines()[0]}") from e
    from edgepack.runtime.engines import open_engine
    probe = open_engine("litert", tflite)
    input_name = probe.inputs()[0].name
    probe.close()
    encode = [{"op": "tokenize", "asset": "tokenizer", "max_length": max_length,
               "padding": "max_length", "inputs": {input_name: "ids"}}]
    decode = [{"op": "text_labels", "top_k": min(5, len(labels))}]
    member = "tokenizer.json" if tokenizer.lstrip()[:1] == b"{" else "vocab.txt"
    common = dict(name=name, labels=list(labels), task={"kind": "classify_text"},
                  encode=encode, decode=decode, assets={"tokenizer": (member, tokenizer)},
                  source={"framework": "keras", "framework_version": tf.__version__,
                          "converter": "tf.lite.TFLiteConverter"},
                  quantization={"mode": quantization} if quantization != "none" else None)
    out = Path(out)
    pack_bundle(out, tflite, **common)
    texts = list(validation_texts or DEFAULT_TEXTS)
    with load(out) as bundle:
        ref, got = [], []
        for text in texts:
            feeds = bundle.preprocess(bundle._encode(text, None))
            ids = next(iter(feeds.values()))
            ref.append(np.asarray(model(ids.astype(np.int32), training=False))[0])
            got.append(np.asarray(bundle.run({input_name: ids})[bundle.outputs[0].name])[0])
    ref, got = np.stack(ref), np.stack(got)
    agreement = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    record = {"samples": len(texts), "data": "held-out text", "task": "classify_text",
              "top1_agreement": agreement, "outputs": {"logits": output_stats(ref, got)},
              "failures": [] if agreement >= min_agreement else
              [f"top-1 agreement {agreement:.3f} < {min_agreement}"]}
    record["passed"] = not record["failures"]
    raise_if_failed(record, accept)
    return pack_bundle(out, tflite, validation=record, **common)
