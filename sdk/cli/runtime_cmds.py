"""Bundle commands: pack, inspect, verify, run, bench, sign, keygen."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click
import numpy as np

from edgepack.runtime import engines, load, pack_bundle, read_bundle
from edgepack.runtime.errors import EdgepackError, HookError, InputError, PipelineError
from edgepack.runtime.pack import detect_engine
from edgepack.runtime.specs import format_shape

from edgepack.runtime.benchmark import benchmark
from ..inputs import input_sets
from ..packing import (ImagePipeline, check_labels, check_pipeline, onnx_opset, read_labels,
                       read_pipeline_file)
from .describe_quantization import guarded_lines, quantization_lines
from .detection_options import apply_detection, detection_options, draw_results, geometry_flags
from .values import height_width


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} must be comma-separated numbers") from None




@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle path [MODEL.edgepack].")
@click.option("--name", help="Bundle name [model file stem].")
@click.option("--version", "version_", default="1.0.0", show_default=True)
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file, one label per line.")
@click.option("--pipeline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML/JSON file with preprocess/postprocess/layouts tables.")
@click.option("--resize", help="Resize images to HEIGHT,WIDTH.")
@click.option("--resize-reference", type=click.Choice(["pillow", "opencv"]), default="pillow",
              show_default=True, help="Library whose resize semantics to reproduce.")
@click.option("--color", type=click.Choice(["RGB", "BGR", "GRAY"]), help="Convert RGB input to this.")
@click.option("--scale", type=click.FloatRange(min=0.0, min_open=True),
              help="Multiply pixels by this (e.g. 0.00392157).")
@click.option("--mean", help="Per-channel mean, comma-separated.")
@click.option("--std", help="Per-channel std, comma-separated.")
@click.option("--layout", help="Input layout change, e.g. HWC:NCHW.")
@click.option("--softmax", is_flag=True, help="Apply softmax to the output.")
@click.option("--topk", type=click.IntRange(min=1), help="Report the top K classes with labels.")
@click.option("--directory", is_flag=True, help="Write an unpacked bundle directory.")
@detection_options
def pack(model, output, name, version_, labels, pipeline, resize, resize_reference, color, scale,
         mean, std, layout, softmax, topk, directory, **detection):
    """Wrap an existing .onnx or .tflite MODEL into a bundle (specs read from the model)."""
    data = model.read_bytes()
    flags = ImagePipeline(resize=height_width(resize, "--resize"), reference=resize_reference, color=color,
                          scale=scale, mean=_floats(mean), std=_floats(std), layout=layout,
                          softmax=softmax, topk=topk, **geometry_flags(detection))
    tables = read_pipeline_file(pipeline) if pipeline else {}
    preprocess, postprocess = dict(tables.get("preprocess", {})), dict(tables.get("postprocess", {}))
    # Read the specs once here: the flags apply to the single input/output and need its name.
    engine = engines.open_engine(detect_engine(data), data)
    inputs, outputs = engine.inputs(), engine.outputs()
    engine.close()
    for steps, specs, table, kind in ((flags.preprocess_steps(), inputs, preprocess, "input"),
                                      (flags.postprocess_steps(), outputs, postprocess, "output")):
        if steps:
            if len(specs) != 1:
                raise click.UsageError(f"the model has several {kind}s; use --pipeline FILE")
            table.setdefault(specs[0].name, steps)
    layouts = dict(tables.get("layouts", {}))
    if layout and len(inputs) == 1:
        layouts.setdefault(inputs[0].name, layout.partition(":")[2])
    from .audio_cmd import finish_stages, pipeline_task_fields  # stream/decode/stages tables
    task_fields = finish_stages(pipeline_task_fields(tables, pipeline.parent if pipeline else None),
                                "model" + (".tflite" if detect_engine(data) == "litert" else ".onnx"),
                                inputs, outputs)
    outputs = task_fields.pop("outputs", outputs)
    postprocess, task_fields = apply_detection(detection, outputs, postprocess, task_fields)
    label_list = read_labels(labels) if labels else None
    if not task_fields.get("decode"):  # with decode steps the decoder places the classes
        check_labels(label_list, outputs, str(labels))
    out = pack_bundle(output or model.with_suffix(".edgepack"), data, name=name or model.stem,
                **task_fields,
                version=version_, inputs=inputs, outputs=outputs, preprocess=preprocess,
                postprocess=postprocess, labels=label_list,
                layouts=layouts or None, opset=onnx_opset(data) if model.suffix == ".onnx" else None,
                source={"framework": model.suffix.lstrip("."), "converter": "edgepack pack"},
                directory=directory)
    try:  # a pipeline that cannot produce the model's input is refused now, not at `run`
        with load(out) as packed:
            check_pipeline(packed, str(out))
    except HookError:
        pass  # it calls the application's hooks, registered where it runs: not checkable here
    except EdgepackError:
        shutil.rmtree(out) if Path(out).is_dir() else Path(out).unlink()
        raise
    click.echo(f"wrote {out}")


def _spec_rows(specs):
    for s in specs:
        quant = ""
        if s.quantization:
            q = s.quantization
            quant = f"scale={q.scale[0]:.4g} zp={q.zero_point[0]}" + (
                f" (+{len(q.scale) - 1} ch)" if len(q.scale) > 1 else "")
        yield f"  {s.name:<24} {s.dtype:<8} {format_shape(s.shape):<18} {s.layout or '':<6} {quant}"


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--key", "trusted_key", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key to check the signature with [EDGEPACK_TRUSTED_KEY].")
def inspect(bundle, as_json, trusted_key):
    """Show what a bundle holds: specs, pipelines, labels, provenance, how it was
    quantized, accuracy kept, whether it is signed and by which key."""
    b = read_bundle(bundle, trusted_key=trusted_key)
    m = b.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    size = m.files[m.model.path].bytes
    click.echo(f"{m.name} {m.version}  ({m.model.engine}, {m.model.path}, {size / 1024:.1f} KiB"
               + (f", opset {m.model.opset}" if m.model.opset else "") + ")")
    click.echo(f"created {m.created}; source: " + ", ".join(f"{k}={v}" for k, v in m.source.items()))
    click.echo(f"signature: {_signature_state(b)}")
    click.echo("inputs:")
    for row in _spec_rows(m.inputs):
        click.echo(row)
    click.echo("outputs:")
    for row in _spec_rows(m.outputs):
        click.echo(row)
    for kind, table in (("preprocess", m.preprocess), ("postprocess", m.postprocess)):
        for tensor, steps in table.items():
            click.echo(f"{kind} {tensor}: " + " -> ".join(
                s["op"] if s["op"] != "hook" else f"hook:{s.get('name')}" for s in steps))
    from .audio_cmd import stream_lines  # stream, state and stages (DESIGN §7)
    for line in stream_lines(m):
        click.echo(line)
    from ..detection import task_lines  # task kind, decode steps and their parameters
    for line in task_lines(m):
        click.echo(line)
    labels = b.labels()
    if labels:
        click.echo(f"labels: {len(labels)} ({', '.join(labels[:5])}{', …' if len(labels) > 5 else ''})")
    for line in quantization_lines(m.quantization):
        click.echo(line)
    if m.validation:
        for line in guarded_lines("validation", m.validation, _validation_lines):
            click.echo(line)


def _signature_state(b) -> str:
    if b.signature is None:
        return "none (unsigned)"
    if b.signed_by is None:
        return "signed (key unknown; check it with --key PUB)"
    return f"ok (key {b.signed_by})"


def _validation_lines(validation: dict):
    """The accuracy a bundle kept, as recorded by the converter."""
    yield (f"validation: {validation.get('samples', '?')} samples ({validation.get('data', '?')}), "
           f"{'passed' if validation.get('passed', True) else 'ACCEPTED OUTSIDE TOLERANCE'}")
    for name, numbers in (validation.get("outputs") or {}).items():
        if isinstance(numbers, dict):
            shown = "  ".join(f"{k} {v:.4g}" for k, v in numbers.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool))
            yield f"  {name}: {shown}"
    task = validation.get("task")
    if isinstance(task, dict) and "source" in task:
        yield (f"  {task.get('metric', 'metric')}: source {task['source']:.4f} -> bundle "
               f"{task.get('bundle', float('nan')):.4f}")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "trusted_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trusted Ed25519 public key: the signature must verify.")
@click.option("--no-run", is_flag=True, help="Check files only; do not open the engine.")
def verify(bundle, trusted_key, no_run):
    """Verify checksums, manifest and (with --key) signature; then load and run once."""
    b = read_bundle(bundle, trusted_key=trusted_key)
    click.echo(f"signature ok (key {b.signed_by})" if b.signed_by else
               "signature: none" if b.signature is None else
               "signature present but not checked (pass --key PUB)")
    if no_run:
        click.echo(f"ok: {bundle} ({len(b.members)} members verified)")
        return
    with load(b) as model:
        for line in check_pipeline(model, str(bundle)):
            click.echo(f"pipeline {line}")
        if not b.manifest.decode:  # a decoder places the classes (yolo: 4 + C rows)
            check_labels(b.labels(), model.outputs, str(bundle))
        outputs = model.run(model.example_feeds())
        for stage in getattr(model, "stages", [])[1:]:  # chained models: every stage alone
            outputs.update(stage.run(stage.example_feeds()))
    bad = [n for n, v in outputs.items()
           if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v))]
    if bad:
        raise InputError(f"{bundle}: outputs {bad} are not finite on a random input; the model is broken")
    click.echo(f"ok: {bundle} ({len(b.members)} members verified, one inference on "
               f"{model.engine_name})")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        flat = value.reshape(-1)[:8]
        return f"{value.dtype} {list(value.shape)} [{', '.join(f'{v:.4g}' for v in flat.tolist())}" \
               f"{', …' if value.size > 8 else ''}]"
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and value and isinstance(value[0], dict) and "start_s" in value[0]:
        return "  ".join(f"{d['start_s']:.2f}-{d['end_s']:.2f}s {d['label']} {d['score']:.3f}"
                         for d in value)  # audio segments
    if isinstance(value, list) and value and isinstance(value[0], dict) and "t_s" in value[0]:
        return "  ".join(f"{d['t_s']:.2f}s {d['label']} {d['score']:.3f}" for d in value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "  ".join(f"{d['label']} {d['score']:.3f}" for d in value)
    return str(value)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1)
@click.option("--raw", is_flag=True, help="Feed tensors as they are (no pre/post-processing).")
@click.option("--threads", type=click.IntRange(min=1), help="Engine intra-op threads.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--draw", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the input photo with its detections (boxes, labels, scores) here.")
@click.option("--text", "texts", multiple=True,
              help="Text for a text bundle (repeatable; '-' reads one text per stdin line).")
def run(bundle, inputs, raw, threads, as_json, draw, texts):
    """Run BUNDLE on INPUTS (.npy, .npz, images, .wav clips; name=path for several inputs)."""
    if texts:
        from .text_cmd import run_texts  # text bundles: tokenizer inside (issue 15)
        return run_texts(bundle, texts, threads, as_json)
    if not inputs:
        raise click.UsageError("Missing argument 'INPUTS...' (or --text for a text bundle).")
    from .audio_cmd import audio_results  # WAV clips stream through the bundle (segments/events)
    with load(bundle, threads=threads) as model:
        results = [] if raw else audio_results(model, inputs)
        tensor_files = [a for a in inputs if str(a).endswith((".npy", ".npz"))]
        for feeds in ([] if results else input_sets(inputs, model.inputs)):
            if raw:
                _check_raw_quantized(model, feeds)
                results.append(model.run(feeds))
                continue
            try:
                results.append(model.predict(feeds))
            except PipelineError as e:
                if not tensor_files:
                    raise
                # Same family (4), one more fact: tensors may already be the model's input.
                raise PipelineError(f"{e}. {tensor_files[0]} is a tensor file: if it holds "
                                    "the model's input, pass --raw to skip the bundle's "
                                    "preprocessing") from e
    if draw:
        draw_results(draw, inputs, results)
    if as_json:
        click.echo(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in results]))
        return
    for argument, result in zip(inputs, results):
        for name, value in result.items():
            click.echo(f"{argument}: {name}: {_describe(value)}")


def _check_raw_quantized(model, feeds) -> None:
    """--raw feeds go to the engine as they are: a float array for an int8/uint8 input must
    be quantized with that input's scale and zero point, not merely cast."""
    for spec in model.inputs:
        value = feeds.get(spec.name)
        if spec.is_quantized and isinstance(value, np.ndarray) and \
                np.issubdtype(value.dtype, np.floating):
            q = spec.quantization
            raise InputError(
                f"input {spec.name!r} is {spec.dtype} quantized (scale {q.scale[0]:.6g}, "
                f"zero_point {q.zero_point[0]}) but the file holds {value.dtype}: quantize it "
                f"first (round(x / scale) + zero_point, clipped to {spec.dtype}), or drop "
                "--raw so predict() quantizes it with the bundle's own parameters")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1),
              help="Engine intra-op threads [engine default].")
@click.option("--spin-wait/--no-spin-wait", default=None,
              help="Engine worker threads spin (or sleep) between runs [engine default].")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch for dynamic dims.")
@click.option("--json", "as_json", is_flag=True)
def bench(bundle, runs, warmup, threads, spin_wait, batch, as_json):
    """Measure latency (p50/p90/p99), throughput and peak memory of BUNDLE."""
    cores = os.cpu_count() or 1
    warnings = []
    if threads is not None and threads > cores:
        warnings.append(f"--threads {threads} is more than this machine's {cores} cores: the "
                        "engine's threads compete for cores and the timings measure that "
                        "contention, not the model")
    with load(bundle, threads=threads, spin_wait=spin_wait) as model:
        feeds = model.example_feeds(batch=batch)
        result = benchmark(lambda: model.run(feeds), runs=runs, warmup=warmup, threads=threads)
    if result.skewed:
        warnings.append(f"the mean ({result.mean_ms:.3f} ms) is above p90: a few runs were "
                        f"much slower (max {result.max_ms:.3f} ms), e.g. other processes "
                        "loading the CPU; quote p50 and re-run on a quiet machine")
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle), **result.to_dict(),
                               "cores": cores, "warnings": warnings}))
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{bundle}: {runs} runs after {warmup} warm-up, threads={threads or 'default'}")
    click.echo(f"  latency ms  p50 {result.p50_ms:.3f}  p90 {result.p90_ms:.3f}  "
               f"p99 {result.p99_ms:.3f}  mean {result.mean_ms:.3f}")
    click.echo(f"  spread ms   min {result.min_ms:.3f}  max {result.max_ms:.3f}  "
               f"std {result.std_ms:.3f}")
    click.echo(f"  throughput  {result.throughput_per_s * batch:.1f} samples/s   "
               f"peak RSS {result.peak_rss_mb:.1f} MB")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--key", "private_key", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key file (from `edgepack keygen`).")
def sign(bundle, private_key):
    """Sign BUNDLE's manifest in place (detached signature.ed25519)."""
    from edgepack.runtime.bundle import write_bundle
    from edgepack.runtime.signing import fingerprint, load_private_key
    key = load_private_key(private_key)   # a public or malformed key fails before any write
    b = read_bundle(bundle)
    members = {name: b.read(name) for name in b.members}
    write_bundle(bundle, b.manifest, members, directory=bundle.is_dir(), signing_key=private_key)
    click.echo(f"signed {bundle} (key {fingerprint(key)})")


@click.command()
@click.argument("prefix", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing key pair (the old key is lost).")
def keygen(prefix, force):
    """Write an Ed25519 key pair: PREFIX.key (private, 0600) and PREFIX.pub (public, 0644)."""
    from edgepack.runtime.signing import write_keypair
    key, pub, fp = write_keypair(prefix, force=force)
    click.echo(f"wrote {key} and {pub} (key {fp})")


def register(cli: click.Group) -> None:
    for command in (pack, inspect, verify, run, bench, sign, keygen):
        cli.add_command(command)
