"""Text commands: `edgepack convert-transformer` and the text part of `edgepack run`.

    edgepack convert-transformer my-model/ -o intent.edgepack --quantize dynamic
    edgepack run intent.edgepack --text "turn on the lights"
    cat sentences.txt | edgepack run intent.edgepack --text - --json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgepack.devices.catalog import QUANTIZATIONS as MODES
from edgepack.runtime import load
from edgepack.runtime.errors import InputError

BATCH = 32


def read_texts(texts: tuple[str, ...]) -> list[str]:
    """--text values; '-' reads one text per non-empty line of stdin."""
    out: list[str] = []
    for t in texts:
        if t == "-":
            out.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            out.append(t)
    if not out:
        raise InputError("no text given: pass --text \"...\" or pipe lines into --text -")
    return out


def split_rows(result: dict, n: int) -> list[dict]:
    """A batch result {"labels": [row, ...]} -> one {"labels": row} per text."""
    return [{k: (v[i] if isinstance(v, list) and len(v) == n else v) for k, v in result.items()}
            for i in range(n)]


def _describe(key: str, value) -> str:
    if key == "labels":
        return "  ".join(f"{d['label']} {d['score']:.3f}" for d in value)
    if key == "embedding":
        head = ", ".join(f"{x:.4f}" for x in value[:4])
        return f"[{head}, ...] ({len(value)} dims)"
    if key == "spans":
        return "  ".join(f"{s['text']!r}={s['label']} {s['score']:.2f}" for s in value) or "-"
    return str(value)


def run_texts(bundle: Path, texts: tuple[str, ...], threads: int | None, as_json: bool) -> None:
    """`edgepack run BUNDLE --text ...`: one result per text (batched through predict)."""
    items = read_texts(texts)
    with load(bundle, threads=threads) as model:
        if not model.manifest.encode:
            raise InputError(f"{bundle} has no text encode step (task "
                             f"{model.task or 'none'}); --text needs a text bundle")
        rows: list[dict] = []
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            rows.extend(split_rows(model.predict(chunk), len(chunk)))
    if as_json:
        click.echo(json.dumps([{"text": t, **r} for t, r in zip(items, rows)],
                              ensure_ascii=False))
        return
    for text, row in zip(items, rows):
        for key, value in row.items():
            click.echo(f"{text}: {key}: {_describe(key, value)}")


@click.command("convert-transformer")
@click.argument("source")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Bundle path to write.")
@click.option("--name", help="Bundle name [output stem].")
@click.option("--version", "version_", default="1.0.0", show_default=True)
@click.option("--quantize", type=click.Choice(MODES),
              default="dynamic", show_default=True,
              help="dynamic = int8 MatMul weights (the default for transformers).")
@click.option("--tokenizer", type=click.Path(exists=True, path_type=Path),
              help="tokenizer.json / vocab.txt [SOURCE/tokenizer.json].")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "cls", "max"]), default="mean",
              show_default=True, help="Embedding models: how token states become one vector.")
@click.option("--no-normalize", is_flag=True, help="Embedding models: skip L2 normalization.")
@click.option("--validation-texts", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out texts, one per line (default: a small built-in set).")
@click.option("--calibration-texts", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Texts for static int8 calibration, one per line.")
@click.option("--accuracy-target", type=click.FloatRange(0, 1, min_open=True),
              help="Static int8: top-1 agreement with the float model on the calibration "
                   "texts that edgepack's accuracy-aware int8 pass aims for.")
@click.option("--accept", is_flag=True, help="Write the bundle even if validation fails.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert_transformer_cmd(source, output, name, version_, quantize, tokenizer, max_length,
                            pooling, no_normalize, validation_texts, calibration_texts,
                            accuracy_target, accept, as_json):
    """Convert a Hugging Face transformer (a save_pretrained directory) into a text bundle."""
    from edgepack.converters.hf_onnx import TextConversionConfig, convert_transformer

    def lines(path):
        if path is None:
            return None
        return [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    _check_accuracy_target(accuracy_target, quantize)
    config = TextConversionConfig(name=name or output.stem, version=version_,
                                  quantization=quantize, max_length=max_length,
                                  pooling=pooling, normalize=not no_normalize, accept=accept,
                                  accuracy_target=accuracy_target)
    result = convert_transformer(source, output, config, tokenizer=tokenizer,
                                 validation_texts=lines(validation_texts),
                                 calibration_texts=lines(calibration_texts))
    v = result.validation
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "task": result.task,
                               "model_bytes": result.model_bytes, "validation": v}))
        return
    click.echo(f"wrote {result.path} ({result.task}, {quantize}, "
               f"{result.model_bytes / 1e6:.2f} MB); validation on {v['samples']} texts: "
               f"{_metric(v)}")


def _check_accuracy_target(target: float | None, mode: str) -> None:
    if target is not None and mode != "int8":
        raise InputError(f"--accuracy-target is for static int8 (--quantize int8 with "
                         f"calibration texts), not {mode!r}")


def _lines(path) -> list[str] | None:
    if path is None:
        return None
    return [t for t in Path(path).read_text(encoding="utf-8").splitlines() if t.strip()]


#: `edgepack convert` options that mean nothing for a transformer directory (image/tensor
#: calibration, shapes, steps): refused by name rather than silently ignored.
_NOT_FOR_TEXT = {"weights": "--weights", "input_shapes": "--input-shape",
                 "preprocess": "--preprocess", "postprocess": "--postprocess",
                 "labels": "--labels", "int8_io": "--int8-io",
                 "validation_samples": "--validation-samples", "max_drop": "--max-drop",
                 "device": "--device", "max_float_layers": "--max-float-layers",
                 "reconstruction": "--reconstruct"}


def convert_hf_directory(source: str, out: str, *, target: str | None, quantize: str | None,
                         calibration_data: str | None, validation_data: str | None,
                         accept: bool, name: str | None, bundle_version: str, opset: int,
                         per_tensor: bool, as_json: bool, **others) -> None:
    """`edgepack convert DIR` for a Hugging Face `save_pretrained` directory: the text path
    (as `convert-transformer`): tokenizer carried along, dynamic int8 by default. Text
    files (one text a line) stand in for --validation-data / --calibration-data."""
    from edgepack.converters.hf_onnx import TextConversionConfig, convert_transformer
    # by identity: 0 (--max-float-layers 0) is given, though 0 == False
    given = [flag for k, flag in _NOT_FOR_TEXT.items()
             if (v := others.get(k)) is not None and v is not False and v not in ((), [])]
    if given:
        flags = ", ".join(given)
        raise InputError(f"{source} is a Hugging Face model directory (text path); {flags} "
                         "do not apply to it (see edgepack convert-transformer --help)")
    if target not in (None, "onnx"):
        raise InputError(f"{source} is a Hugging Face model directory: transformers convert "
                         "to onnx only (-t onnx)")
    for what, path in (("--validation-data", validation_data),
                       ("--calibration-data", calibration_data)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} for a transformer is a text file, one text a line; "
                             f"{path} is not a file")
    mode = quantize or "dynamic"
    _check_accuracy_target(others.get("accuracy_target"), mode)
    config = TextConversionConfig(name=name or Path(out).stem, version=bundle_version,
                                  quantization=mode, accept=accept, opset=opset,
                                  per_channel=not per_tensor,
                                  accuracy_target=others.get("accuracy_target"))
    if not as_json:
        click.echo(f"converting {source} -> onnx ({mode}) as a Hugging Face transformer "
                   f"(save_pretrained directory) ...", err=True)
    result = convert_transformer(source, out, config,
                                 validation_texts=_lines(validation_data),
                                 calibration_texts=_lines(calibration_data))
    v = result.validation
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "task": result.task,
                               "model_bytes": result.model_bytes, "quantization": mode,
                               "validation": v}, indent=2))
        return
    click.echo(f"wrote {result.path} ({result.task}, {mode}, "
               f"{result.model_bytes / 1e6:.2f} MB); validation on {v['samples']} texts: "
               f"{_metric(v)}")


def _metric(v: dict) -> str:
    return (f"top-1 agreement {v['top1_agreement']:.3f}" if "top1_agreement" in v else
            f"embedding cosine min {v['embedding_cosine']['min']:.4f}"
            if "embedding_cosine" in v else
            f"token top-1 agreement {v.get('token_top1_agreement', 0):.3f}")


def register(cli: click.Group) -> None:
    cli.add_command(convert_transformer_cmd)
