"""`edgepack compare`: a thin click wrapper over edgepack.compare."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from edgepack.devices.catalog import QUANTIZATIONS as MODES
from edgepack.devices.catalog import TARGETS


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise click.BadParameter(f"{text!r}: {what} must be some of {','.join(known)}")
    return values


def _style(text: str, role: str) -> str:
    colours = {"best": dict(fg="green", bold=True), "bad": dict(fg="yellow"),
               "pick": dict(fg="cyan", bold=True), "head": dict(bold=True)}
    return click.style(text, **colours.get(role, {}))


def _task_fields(pipeline_file: str | None, class_names: str | None) -> dict:
    """CompareConfig's task/decode/class_names from --pipeline and --class-names."""
    from edgepack.runtime.errors import InputError

    from ..packing import read_pipeline_file
    fields: dict = {}
    if pipeline_file:
        tables = read_pipeline_file(Path(pipeline_file))
        other = sorted(set(tables) - {"task", "decode"})
        if other:
            raise InputError(f"{pipeline_file}: compare --pipeline takes [task] and [[decode]]; "
                             f"{other} are not used by compare")
        fields = {key: tables[key] for key in ("task", "decode") if key in tables}
    if class_names:
        fields["class_names"] = [line.strip() for line in
                                 Path(class_names).read_text(encoding="utf-8").splitlines()
                                 if line.strip()]
    return fields


@click.command("compare")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".npy/.npz of model inputs (an .npz may hold 'labels'); split into "
                   "calibration and held-out parts.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="Integer class labels for DATA (.npy or one per line); gives accuracy.")
@click.option("--targets", default="onnx,tflite", show_default=True,
              help="Comma-separated targets.")
@click.option("--modes", default="none,fp16,dynamic,int8", show_default=True,
              help="Comma-separated quantization modes.")
@click.option("--device", help="Device profile: threads for latency and the check a pick must pass.")
@click.option("--max-drop", type=click.FloatRange(0.0, 100.0), default=1.0,
              show_default=True,
              help="Accuracy budget in points below the source (top-1 agreement without labels).")
@click.option("--holdout", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              default=0.3, show_default=True,
              help="Fraction of DATA held out for accuracy.")
@click.option("--weights", type=click.Path(exists=True), help="Weights for MODEL=module:factory.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
              help="Interleaved latency rounds.")
@click.option("--block", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed runs per bundle per round.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Engine threads (default: the device's recommendation).")
@click.option("--no-memory", is_flag=True, help="Skip the per-bundle memory subprocess.")
@click.option("--pick", "pick_out", type=click.Path(dir_okay=False),
              help="Copy the picked bundle here.")
@click.option("--keep", type=click.Path(file_okay=False),
              help="Keep every converted bundle in this directory.")
@click.option("--pipeline", "pipeline_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML/JSON with [task] and [[decode]] (as for pack --pipeline), written "
                   "into every bundle: a detect task is judged by detection agreement.")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one per line, written into every bundle as its labels.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML report.")
@click.option("--on-device", is_flag=True,
              help="Also run each bundle under qemu emulation of --device (outputs only; "
                   "emulated time is not latency).")
def compare_command(model, data, labels, targets, modes, device, max_drop, holdout, weights,
                    rounds, block, threads, no_memory, pick_out, pipeline_file, class_names,
                    keep, as_json, html_out, on_device):
    """Convert MODEL to every target x quantization, measure them side by side, pick one."""
    import os

    from edgepack.compare import (CompareConfig, LatencyConfig, compare, render_html,
                                  render_table)

    # TensorFlow's C++ banner and per-conversion INFO lines would bury the table; the
    # library leaves logging alone, the command quiets what the user did not ask for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    config = CompareConfig(
        targets=_names(targets, TARGETS, "--targets"), modes=_names(modes, MODES, "--modes"),
        device=device, max_drop=max_drop, holdout=holdout, memory=not no_memory,
        on_device=on_device, name=Path(model.split(":")[-1]).stem or "model",
        latency=LatencyConfig(rounds=rounds, block=block, threads=threads),
        **_task_fields(pipeline_file, class_names))
    if device:
        from edgepack.devices import load_profile
        load_profile(device)  # an unknown name fails now, not after every conversion
    progress = None if as_json else (lambda message: click.echo(message, err=True))
    with tempfile.TemporaryDirectory(prefix="edgepack-compare-") as tmp:
        result = compare(model, data, config, labels=labels, weights=weights,
                         work_dir=keep or tmp, progress=progress)
        if pick_out and result.pick.path is not None:
            shutil.copyfile(result.pick.path, pick_out)
        if not keep:  # the temporary bundles are deleted: report only what survives
            result = result.without_work_paths(pick_out)
    if html_out:
        Path(html_out).write_text(render_html(result), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_table(result, _style))
        if html_out:
            click.echo(f"wrote {html_out}")
    if pick_out:
        if result.pick.path is None:
            from edgepack.runtime.errors import ConversionError
            # No conversion met the budget: the conversion family (exit 6).
            raise ConversionError(f"nothing picked, {pick_out} not written: "
                                  f"{result.pick.reason}")
        if not as_json:
            click.echo(f"wrote {pick_out} ({result.pick.key})")


def register(cli: click.Group) -> None:
    """Add `compare` to the edgepack CLI group."""
    cli.add_command(compare_command)
