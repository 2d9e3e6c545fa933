"""The one registry of conversion paths, keyed by (source framework, target format).

Entries name their implementing module as a string so that looking up a path imports
nothing heavy; the module is imported only when the path is actually used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from edgepack.runtime.errors import ConversionError

from .config import MODES


@dataclass(frozen=True)
class ConverterEntry:
    """One path: `module:function` implements it; `extra` is the pip extra it needs."""

    source: str
    target: str
    implementation: str
    tool: str
    extra: str = "convert"
    modes: tuple[str, ...] = MODES

    def load(self) -> Callable:
        module_name, _, function = self.implementation.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, function)


_REGISTRY: dict[tuple[str, str], ConverterEntry] = {}


def register(entry: ConverterEntry) -> None:
    """Add (or replace) the converter for entry.source -> entry.target."""
    _REGISTRY[(entry.source, entry.target)] = entry


def known_pairs() -> list[tuple[str, str]]:
    """Every registered (source, target), sorted."""
    return sorted(_REGISTRY)


def check_mode(entry: ConverterEntry, mode: str) -> None:
    """Refuse a quantization mode the path cannot produce, before any work starts."""
    if mode not in entry.modes:
        raise ConversionError(
            f"{entry.source}->{entry.target} supports quantization {', '.join(entry.modes)}, "
            f"not {mode!r}; convert from the original PyTorch/Keras model to quantize")


def get_converter(source: str, target: str) -> ConverterEntry:
    """The entry for (source, target); an unknown pair raises ConversionError listing the known ones."""
    try:
        return _REGISTRY[(source, target)]
    except KeyError:
        known = ", ".join(f"{s}->{t}" for s, t in known_pairs())
        raise ConversionError(
            f"no converter from {source!r} to {target!r}; known paths: {known}") from None


_PKG = "edgepack.converters"
for _entry in (
    ConverterEntry("pytorch", "onnx", f"{_PKG}.torch_onnx:convert", "torch.onnx"),
    ConverterEntry("pytorch", "tflite", f"{_PKG}.torch_tflite:convert", "litert-torch",
                   extra="convert-torch-tflite"),
    ConverterEntry("keras", "tflite", f"{_PKG}.keras_tflite:convert", "tf.lite.TFLiteConverter"),
    ConverterEntry("keras", "onnx", f"{_PKG}.keras_onnx:convert", "tf2onnx"),
    ConverterEntry("onnx", "onnx", f"{_PKG}.wrap:convert_onnx", "onnxruntime.quantization"),
    # Text transformers run end to end in hf_onnx.convert(source, out, TextConversionConfig)
    # (the tokenizer, task steps and text validation travel with the model).
    ConverterEntry("transformers", "onnx", f"{_PKG}.hf_onnx:convert", "torch.onnx"),
    # A .tflite is already quantized (or not) by whatever made it; re-quantizing needs the
    # float graph, so only wrapping is offered.
    ConverterEntry("tflite", "tflite", f"{_PKG}.wrap:convert_tflite", "wrap", modes=("none",)),
):
    register(_entry)
