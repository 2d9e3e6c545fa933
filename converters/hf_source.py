"""Hugging Face sources: a live `transformers` model or a `save_pretrained` directory.

What the text converter needs from a source: the torch module, which task it does
(sequence classification -> classify_text, token classification -> tag_tokens, a bare
encoder -> embed), its labels (config.id2label), which of input_ids / attention_mask /
token_type_ids its forward takes, and the tokenizer as `tokenizer.json` text (or a
`vocab.txt`), carried into the bundle as an asset.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.runtime.errors import ConversionError

log = logging.getLogger(__name__)

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class HFSource:
    """A loaded transformer and everything the bundle needs about it."""

    model: Any                      # transformers.PreTrainedModel, eval mode
    task: str                       # classify_text | tag_tokens | embed
    labels: tuple[str, ...] | None
    input_names: tuple[str, ...]
    tokenizer_member: str           # "tokenizer.json" or "vocab.txt"
    tokenizer_bytes: bytes
    framework_version: str
    origin: str | None = None


#: Weight files `save_pretrained` writes (sharded saves write the index next to shards).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


def is_hf_directory(path: Any) -> bool:
    """A directory written by `save_pretrained`: config.json and PyTorch weights."""
    try:
        p = Path(path)
    except TypeError:
        return False
    return p.is_dir() and (p / "config.json").is_file() and \
        any((p / w).is_file() for w in WEIGHT_FILES)


def is_hf_model(obj: Any) -> bool:
    return any(c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
               for c in type(obj).__mro__)


def task_of(model: Any) -> str:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return "classify_text"
    if name.endswith("ForTokenClassification"):
        return "tag_tokens"
    if name.endswith("Model"):
        return "embed"
    raise ConversionError(
        f"{name} is not a text classifier, token classifier or encoder; edgepack converts "
        "*ForSequenceClassification, *ForTokenClassification and base *Model encoders")


def _tokenizer_data(tokenizer: Any, directory: Path | None) -> tuple[str, bytes]:
    if tokenizer is None and directory is not None:
        for member in ("tokenizer.json", "vocab.txt"):
            if (directory / member).is_file():
                return member, (directory / member).read_bytes()
        raise ConversionError(f"{directory} has no tokenizer.json or vocab.txt; save the "
                              "tokenizer with tokenizer.save_pretrained(...) next to the model")
    if tokenizer is None:
        raise ConversionError("a live transformers model needs its tokenizer: pass "
                              "tokenizer= (a tokenizers.Tokenizer, a fast transformers "
                              "tokenizer, or a tokenizer.json / vocab.txt path)")
    if isinstance(tokenizer, (str, Path)):
        p = Path(tokenizer)
        if p.is_dir():
            return _tokenizer_data(None, p)
        if not p.is_file():
            raise ConversionError(f"tokenizer file {p} does not exist")
        return ("vocab.txt" if p.suffix == ".txt" else "tokenizer.json"), p.read_bytes()
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # transformers fast tokenizer
    to_str = getattr(backend, "to_str", None)
    if to_str is None:
        raise ConversionError(f"cannot read a tokenizer.json from {type(tokenizer).__name__}; "
                              "pass a fast tokenizer or a tokenizer.json path")
    return "tokenizer.json", to_str().encode("utf-8")


def load_hf(source: Any, tokenizer: Any = None) -> HFSource:
    """Load `source` (a PreTrainedModel or a save_pretrained directory) for conversion."""
    try:
        import transformers
    except ImportError as e:
        raise ConversionError("converting Hugging Face models needs transformers: "
                              "pip install 'edgepack[convert]' transformers") from e
    directory = None
    if is_hf_directory(source):
        directory = Path(source)
        config = transformers.AutoConfig.from_pretrained(directory)
        arch = (config.architectures or [""])[0]
        loaders = [("ForSequenceClassification", transformers.AutoModelForSequenceClassification),
                   ("ForTokenClassification", transformers.AutoModelForTokenClassification)]
        loader = next((cls for suffix, cls in loaders if arch.endswith(suffix)),
                      transformers.AutoModel)
        try:
            model = loader.from_pretrained(directory, attn_implementation="eager")
        except Exception as e:
            raise ConversionError(f"transformers could not load {directory}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                  ) from e
    elif is_hf_model(source):
        model = source
    elif isinstance(source, (str, Path)) and (Path(source) / "config.json").is_file():
        raise ConversionError(f"{source} has a config.json but no model weights (one of "
                              f"{', '.join(WEIGHT_FILES)}); save the model with "
                              "model.save_pretrained(...)")
    else:
        raise ConversionError(f"not a Hugging Face model: {type(source).__name__} (pass a "
                              "transformers PreTrainedModel or a save_pretrained directory)")
    model.eval()
    task = task_of(model)
    labels = None
    if task != "embed":
        id2label = getattr(model.config, "id2label", None) or {}
        labels = tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}")))
                       for i in range(int(model.config.num_labels)))
    accepted = inspect.signature(model.forward).parameters
    names = tuple(n for n in TEXT_INPUTS if n in accepted)
    if "input_ids" not in names:
        raise ConversionError(f"{type(model).__name__}.forward takes no input_ids")
    member, data = _tokenizer_data(tokenizer, directory)
    return HFSource(model, task, labels, names, member, data, transformers.__version__,
                    str(directory) if directory else None)
