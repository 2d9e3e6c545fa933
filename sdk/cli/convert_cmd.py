"""`edgepack convert`: a thin click wrapper over edgepack.convert."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgepack.devices.catalog import QUANTIZATIONS as MODES
from edgepack.runtime.errors import ValidationError

from .audio_cmd import stream_option, stream_tables


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"{text!r}: dimensions must be positive integers")
    return dims


def _json_file(path: str | None, what: str):
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise click.BadParameter(f"cannot read {what} JSON {path}: {e}") from None


@click.command("convert")
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=True),
              help="Bundle to write (.edgepack).")
@click.option("-t", "--target", type=click.Choice(["onnx", "tflite"]),
              help="Default: the --device recommendation, else onnx.")
@click.option("-q", "--quantize", type=click.Choice(MODES),
              help="Default: the --device recommendation, else none.")
@click.option("--calibration-data", type=click.Path(exists=True),
              help=".npy/.npz file or image folder (int8).")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              default="minmax", show_default=True)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=200,
              show_default=True)
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weights.")
@click.option("--int8-io", is_flag=True, help="int8 model inputs/outputs (with -q int8).")
@click.option("--full-range-weights", is_flag=True,
              help="ONNX: 8-bit instead of 7-bit weights (ARM-only deployments; x86 int8 "
                   "kernels without VNNI saturate). Default: the device's int8 recipe.")
@click.option("--accuracy-target", type=click.FloatRange(0.0, 1.0, min_open=True),
              help="int8: keep the most sensitive layers in float until top-1 agreement "
                   "with the source on the calibration data reaches this (e.g. 0.99).")
@click.option("--max-float-layers", type=click.IntRange(min=0),
              help="int8 with --accuracy-target: keep at most this many layers float "
                   "[8]; 0 = every layer int8 (post-training methods only).")
@click.option("--reconstruct", is_flag=True,
              help="int8 with --accuracy-target (ONNX): also try block reconstruction "
                   "(about a minute more on a small CNN; kept only if better).")
@click.option("--no-speed-check", is_flag=True,
              help="int8: skip timing int8 against fp32 on this machine.")
@click.option("--validation-data", type=click.Path(exists=True),
              help="Held-out .npz (inputs + 'labels') or .npy or image folder.")
@click.option("--validation-samples", type=click.IntRange(min=1),
              help="Compare at most this many held-out samples [all, up to 10000].")
@click.option("--max-drop", type=click.FloatRange(0.0, 100.0),
              help="Allowed accuracy drop in points.")
@click.option("--accept", is_flag=True, help="Keep the bundle even if validation fails.")
@click.option("--weights", type=click.Path(exists=True), help="Weights for module:factory.")
@click.option("--input-shape", "input_shapes", multiple=True, type=_shape, metavar="SHAPE",
              help="Example input shape, e.g. 1,3,224,224 (repeat per input).")
@click.option("--name", help="Bundle name (default: output file stem).")
@click.option("--version", "bundle_version", default="1.0.0", show_default=True)
@click.option("--labels", type=click.Path(exists=True), help="Text file, one label per line.")
@click.option("--preprocess", type=click.Path(exists=True),
              help="JSON {input: [steps]} stored in the manifest.")
@click.option("--postprocess", type=click.Path(exists=True),
              help="JSON {output: [steps]} stored in the manifest.")
@click.option("--opset", type=click.IntRange(13, 23), default=18, show_default=True)
@click.option("--static-batch", is_flag=True, help="Do not export a dynamic batch axis.")
@click.option("--device", help="Device profile (e.g. rpi4b): its defaults and refusals.")
@stream_option  # --stream FILE: an audio model's stream/examples (sdk/cli/audio_cmd.py)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert_command(source, out, target, quantize, calibration_data, calibration_method,
                    calibration_samples, per_tensor, int8_io, full_range_weights,
                    accuracy_target, max_float_layers, reconstruct, no_speed_check,
                    validation_data, validation_samples, max_drop,
                    accept, weights, input_shapes, name, bundle_version, labels, preprocess,
                    postprocess, opset, static_batch, device, as_json):
    """Convert SOURCE (model file, module:factory, or a Hugging Face save_pretrained
    directory: the text path, as convert-transformer) into a validated bundle."""
    from edgepack.converters.hf_source import is_hf_directory
    if is_hf_directory(source):  # config.json + weights: tokenizer, text steps (issue 15)
        from .text_cmd import convert_hf_directory
        return convert_hf_directory(
            source, out, target=target, quantize=quantize, calibration_data=calibration_data,
            validation_data=validation_data, accept=accept, name=name,
            bundle_version=bundle_version, opset=opset, per_tensor=per_tensor,
            as_json=as_json, weights=weights, input_shapes=input_shapes,
            preprocess=preprocess, postprocess=postprocess, labels=labels, int8_io=int8_io,
            accuracy_target=accuracy_target, validation_samples=validation_samples,
            max_drop=max_drop, device=device, max_float_layers=max_float_layers,
            reconstruction=reconstruct)
    from edgepack.conversion import convert
    from edgepack.converters.progress import reporting
    from edgepack.converters.validation import format_table

    from .workdir import import_from_working_directory
    import_from_working_directory()  # `convert mypkg.nets:build` as `optimize` does
    label_list = None
    if labels:
        label_list = [line.strip() for line in Path(labels).read_text(encoding="utf-8")
                      .splitlines() if line.strip()]
    from edgepack.conversion import resolve_defaults
    if not as_json:
        chosen_target, chosen_mode = resolve_defaults(target, quantize, device)
        origin = f"the {device} profile" if device else "the default"
        chosen = [what for what, given in (("target", target), ("quantization", quantize))
                  if given is None]
        why = f" ({' and '.join(chosen)} from {origin})" if chosen else ""
        click.echo(f"converting {source} -> {chosen_target} ({chosen_mode}){why} ...", err=True)
    progress = None if as_json else _Progress()
    try:
        with reporting(progress):
            result = convert(
                source, out, target=target, quantize=quantize, weights=weights,
                input_shapes=list(input_shapes) or None, calibration_data=calibration_data,
                calibration_method=calibration_method, calibration_samples=calibration_samples,
                per_channel=not per_tensor, int8_io=int8_io,
                reduce_range=False if full_range_weights else None,
                accuracy_target=accuracy_target, max_float_layers=max_float_layers,
                reconstruction=reconstruct, speed_check=not no_speed_check,
                validation_data=validation_data, validation_samples=validation_samples,
                max_drop=max_drop, accept=accept, name=name, version=bundle_version,
                labels=label_list, preprocess=_json_file(preprocess, "preprocess"),
                postprocess=_json_file(postprocess, "postprocess"), opset=opset,
                dynamic_batch=not static_batch, device=device, **stream_tables())
    except ValidationError as e:
        if progress is not None:
            progress.close()
        if e.report:
            click.echo(json.dumps(e.report, indent=2) if as_json else format_table(e.report),
                       err=True)
        raise
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "model_bytes": result.model_bytes,
                               "quantization": result.quantization,
                               "validation": result.validation, "notes": list(result.notes)},
                              indent=2))
        return
    click.echo(format_table(result.validation))
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.path} (model {result.model_bytes} bytes)")


class _Progress:
    """Each stage on stderr (a spinner with the elapsed time on a terminal, one line per
    stage otherwise); while calibrating, a bar on a terminal, else one closing line."""

    def __init__(self):
        from .progress import StageProgress
        self._bar = None
        self._shown = 0
        self._stages = StageProgress()
        self._tty = self._stages._tty

    def close(self) -> None:
        self._stages.close()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != "calibrate":
            if done == 0:
                self._stages.start(stage)
            return
        self._stages.pause()
        if self._tty and self._bar is None and done < total:
            self._bar = click.progressbar(length=total, label="calibrate",
                                          file=sys.stderr)
            self._bar.__enter__()
            self._shown = 0
        if self._bar is not None:
            self._bar.update(done - self._shown)
            self._shown = done
        if done >= total:
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
                self._bar = None
            click.echo(f"calibrate: {total} samples, 100%", err=True)


def register(cli: click.Group) -> None:
    """Add `convert` to the edgepack CLI group."""
    cli.add_command(convert_command)
