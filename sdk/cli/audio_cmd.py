"""`edgepack listen`: events from a live audio stream, and WAV clips for `edgepack run`.

    arecord -f S16_LE -r 16000 -c 1 | edgepack listen kws.edgepack -
    edgepack listen vad.edgepack --mic            # needs pip install 'edgepack[microphone]'
    edgepack listen vad.edgepack clip.wav

One JSON line per event or segment, printed (and flushed) as soon as it is complete.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import click
import numpy as np

from edgepack.runtime import load
from edgepack.runtime.errors import DeviceError, InputError
from edgepack.runtime.ops.audio import PcmReader, read_wav, resample_audio
from edgepack.runtime.ops.audio.resample import StreamResampler
from edgepack.runtime.ops.audio.wav import PCM_FORMATS
from edgepack.runtime.stream import stream_clip

AUDIO_SUFFIXES = (".wav", ".wave")
MIC_HINT = "pip install 'edgepack[microphone]'"


def stream_rate(model) -> int:
    """The sample rate the bundle's (first) stream expects."""
    configs = getattr(model, "_configs", None)
    if configs:
        return configs[0].rate
    stream = model.manifest.stream or {}
    rate = stream.get("rate")
    if not isinstance(rate, int):
        raise InputError(f"bundle {model.name!r} declares no stream rate (manifest 'stream'); "
                         "it cannot take audio clips; pass tensors (.npy) instead")
    return rate


def read_clip(path: Path, rate: int) -> np.ndarray:
    """A WAV file as float32 mono samples at `rate` (resampled when the file differs)."""
    audio = read_wav(path)
    return audio.samples if audio.rate == rate else resample_audio(audio.samples, audio.rate, rate)


def audio_results(model, arguments: Sequence[str]) -> list[dict[str, Any]]:
    """`edgepack run BUNDLE clip.wav ...`: each clip streamed through the bundle ->
    {"segments": [...]} / {"events": [...]}; [] when the arguments are not WAV files."""
    if not arguments or not all(a.lower().endswith(AUDIO_SUFFIXES) for a in arguments):
        return []
    rate = stream_rate(model)
    results = []
    for argument in arguments:
        path = Path(argument)
        if not path.is_file():
            raise InputError(f"{path}: no such input file")
        results.append(stream_clip(model.stream(), read_clip(path, rate)))
    return results


def _stdin_chunks(reader: PcmReader, chunk_bytes: int) -> Iterator[np.ndarray]:
    fd = sys.stdin.buffer.fileno()
    while True:
        data = os.read(fd, chunk_bytes)  # returns as soon as some audio is there
        if not data:
            return
        samples = reader.feed(data)
        if len(samples):
            yield samples


def _resampled(chunks: Iterator[np.ndarray], resampler) -> Iterator[np.ndarray]:
    for samples in chunks:
        out = resampler.push(samples)
        if len(out):
            yield out
    tail = resampler.flush()
    if len(tail):
        yield tail


def _mic_chunks(rate: int, chunk: int, seconds: float | None) -> Iterator[np.ndarray]:
    try:
        import sounddevice
    except ImportError as e:
        raise DeviceError(f"listening to a microphone needs the sounddevice package; {MIC_HINT}") from e
    except OSError as e:  # the package is there but PortAudio is not
        raise DeviceError(f"sounddevice cannot load PortAudio ({e}); install libportaudio2") from e
    blocks: queue.Queue = queue.Queue(maxsize=256)

    def callback(indata, frames, when, status):  # audio thread: never block here
        try:
            blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:
            pass  # inference fell behind; drop the oldest audio rather than stall capture

    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        with sounddevice.InputStream(samplerate=rate, channels=1, dtype="int16",
                                     blocksize=chunk, callback=callback):
            while deadline is None or time.monotonic() < deadline:
                try:
                    yield blocks.get(timeout=0.5)
                except queue.Empty:
                    continue
    except sounddevice.PortAudioError as e:
        raise DeviceError(f"cannot open the microphone at {rate} Hz: {e}") from e


def _emit(event: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event), nl=True)
    elif "t_s" in event:
        click.echo(f"{event['t_s']:8.3f}s  {event['label']}  {event['score']:.3f}")
    else:
        click.echo(f"{event['start_s']:8.3f}s - {event['end_s']:.3f}s  {event['label']}  "
                   f"{event['score']:.3f}")
    sys.stdout.flush()


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("source", required=False)
@click.option("--mic", is_flag=True, help=f"Listen to the default microphone ({MIC_HINT}).")
@click.option("--rate", type=click.IntRange(min=1),
              help="Sample rate of the raw PCM on stdin, resampled to the bundle's as it "
                   "arrives [the bundle's stream rate].")
@click.option("--format", "fmt", type=click.Choice(PCM_FORMATS), default="s16le",
              show_default=True, help="Raw PCM sample format on stdin (arecord -f S16_LE).")
@click.option("--channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Interleaved channels on stdin (averaged to mono).")
@click.option("--chunk-ms", type=click.IntRange(min=1, max=1000), default=32, show_default=True,
              help="Audio read per step.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this long (microphone).")
@click.option("--threads", type=click.IntRange(min=1), help="Engine intra-op threads.")
@click.option("--json/--text", "as_json", default=True, show_default=True,
              help="One JSON object per line, or readable lines.")
def listen(bundle, source, mic, rate, fmt, channels, chunk_ms, seconds, threads, as_json):
    """Print events/segments of BUNDLE on live audio: SOURCE '-' reads raw PCM from stdin
    (arecord -f S16_LE -r 16000 -c 1 | edgepack listen kws.edgepack -), a .wav file is
    played through as a stream, --mic listens to the microphone."""
    if mic == (source is not None):
        raise click.UsageError("give SOURCE ('-' for raw PCM on stdin, or a .wav file) or --mic")
    with load(bundle, threads=threads) as model:
        model_rate = stream_rate(model)
        stream = model.stream()
        chunk = max(1, model_rate * chunk_ms // 1000)
        if mic:
            chunks = _mic_chunks(rate or model_rate, chunk, seconds)
            if rate and rate != model_rate:
                raise InputError(f"the bundle expects {model_rate} Hz; drop --rate for the "
                                 "microphone (it is opened at the bundle's rate)")
        elif source == "-":
            width = {"s16le": 2, "s32le": 4, "f32le": 4, "u8": 1, "s24le": 3}[fmt]
            in_rate = rate or model_rate
            chunks = _stdin_chunks(PcmReader(fmt, channels),
                                   max(1, in_rate * chunk_ms // 1000) * width * channels)
            if in_rate != model_rate:  # resampled as it arrives (same as resample_poly)
                chunks = _resampled(chunks, StreamResampler(in_rate, model_rate))
        else:
            clip = read_clip(Path(source), model_rate)
            # (not named `samples`: the loop below rebinds that name while this generator
            # still reads it, which fed every chunk after the first from the first chunk)
            chunks = (clip[i:i + chunk] for i in range(0, len(clip), chunk))
        try:
            for samples in chunks:
                for event in stream.push(samples):
                    _emit(event, as_json)
        except KeyboardInterrupt:
            pass
        for event in stream.flush():
            _emit(event, as_json)


@click.command("set-stream")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--pipeline", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML/JSON file with a [stream] table (and optional task, decode, examples).")
@click.option("--json", "as_json", is_flag=True, help="Print the new stream as JSON.")
def set_stream(bundle, pipeline, as_json):
    """Add or replace the stream (and task/decode/examples) of BUNDLE in place, e.g. of a
    bundle `edgepack convert` wrote; every member and record is kept (re-sign a signed one)."""
    from edgepack.runtime.stream import declare_stream
    from ..packing import read_pipeline_file
    tables = read_pipeline_file(pipeline)
    if "stream" not in tables:
        raise InputError(f"{pipeline}: no [stream] table (rate, window, hop, context, state)")
    declare_stream(bundle, tables["stream"], decode=tables.get("decode"), task=tables.get("task"),
                   examples=tables.get("examples"))
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle), "stream": tables["stream"]}))
    else:
        click.echo(f"updated {bundle}: stream {tables['stream']}")


# -- convert --stream FILE: the stream tables of an audio model, written by convert ---------
STREAM_META = "edgepack.convert.stream"


def _read_stream_file(ctx: click.Context, _param, value: Path | None):
    """Read and check the file before any conversion work (the manifest schema the runtime
    reads, via ConversionConfig); kept in ctx.meta for stream_tables()."""
    if value is None:
        return None
    from edgepack.converters.config import ConversionConfig
    from ..packing import read_pipeline_file
    tables = read_pipeline_file(value)
    if "stream" not in tables:
        raise InputError(f"{value}: no [stream] table (rate, window, hop, context, state)")
    extra = sorted(set(tables) - {"stream", "examples", "task", "decode"})
    if extra:
        raise InputError(f"{value}: convert --stream takes [stream], [examples], [task] and "
                         f"[[decode]]; {extra} belong in --preprocess/--postprocess or pack")
    ConversionConfig(stream=tables["stream"], examples=tables.get("examples"))
    ctx.meta[STREAM_META] = tables
    return value


stream_option = click.option(
    "--stream", "stream_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=_read_stream_file, expose_value=False,
    help="TOML/JSON file with a [stream] table (and optional [examples], [task], "
         "[[decode]]), as for pack --pipeline / set-stream: written into the bundle and "
         "checked against the converted model.")


def stream_tables() -> dict[str, Any]:
    """convert() keyword arguments from the --stream file (stream, examples, task, decode),
    or {} without one. convert packs them with the model: the stream is checked against the
    converted model before the bundle is written (PipelineError, exit 4, nothing written),
    the int8 speed check feeds the examples."""
    ctx = click.get_current_context(silent=True)
    tables = ctx.meta.get(STREAM_META) if ctx is not None else None
    if not tables:
        return {}
    return {key: tables[key] for key in ("stream", "examples", "task", "decode")
            if key in tables}


def register(cli: click.Group) -> None:
    cli.add_command(listen)
    cli.add_command(set_stream)


# -- pack: stream / state / stages from the pipeline file ------------------------------------
TASK_TABLES = ("task", "decode", "stream", "examples", "stages")


def pipeline_task_fields(tables: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """pack_bundle keyword arguments for the DESIGN §7 tables of a pipeline file.

    `stages` entries name their model file relative to the pipeline file (`model`; the
    first stage defaults to the packed MODEL); specs not given are read from each model.
    Returns e.g. {"stream": ..., "decode": ..., "stages": [...], "members": {...},
    "outputs": last stage's outputs}.
    """
    from edgepack.runtime import engines
    from edgepack.runtime.pack import detect_engine
    from edgepack.runtime.specs import TensorSpec
    from edgepack.runtime.stages import stage_entry

    out: dict[str, Any] = {k: tables[k] for k in ("task", "decode", "stream", "examples")
                           if k in tables}
    stages = tables.get("stages")
    if not stages:
        return out
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise InputError("pipeline file: stages must be a list of tables ([[stages]] in TOML)")
    entries, members = [], {}
    for i, stage in enumerate(stages):
        name = str(stage.get("name") or f"stage{i}")
        file = stage.get("model")
        if i == 0 and file is None:
            member, data = "model.onnx", None  # the packed MODEL (member set below)
        else:
            path = (base or Path(".")) / str(file)
            if not path.is_file():
                raise InputError(f"pipeline file: stages[{i}].model {file!r}: no such file")
            data = path.read_bytes()
            member = f"stages/{name}{path.suffix}"
            members[member] = data
        specs = {}
        for kind in ("inputs", "outputs"):
            if kind in stage:
                specs[kind] = [TensorSpec.from_dict(d, f"stages[{i}].{kind}") for d in stage[kind]]
        if data is not None and len(specs) < 2:
            probe = engines.open_engine(detect_engine(data), data)
            try:
                specs.setdefault("inputs", probe.inputs())
                specs.setdefault("outputs", probe.outputs())
            finally:
                probe.close()
        entries.append((stage, name, member, specs))
    out["stages_pending"] = entries
    out["members"] = members
    return out


def finish_stages(fields: dict[str, Any], model_member: str, inputs, outputs) -> dict[str, Any]:
    """Fill the first stage's member/specs from the packed model; top-level outputs = last's."""
    from edgepack.runtime.stages import stage_entry
    pending = fields.pop("stages_pending", None)
    if not pending:
        return fields
    stages = []
    for i, (stage, name, member, specs) in enumerate(pending):
        if i == 0 and "inputs" not in specs:
            member, specs = model_member, {"inputs": inputs, "outputs": outputs, **specs}
        entry = stage_entry(name, member, specs["inputs"], specs["outputs"],
                            stream=stage.get("stream") or {}, frames=stage.get("frames"),
                            preprocess=stage.get("preprocess"), postprocess=stage.get("postprocess"),
                            examples=stage.get("examples"))
        stages.append(entry)
    fields["stages"] = stages
    from edgepack.runtime.specs import TensorSpec
    fields["outputs"] = [TensorSpec.from_dict(d, "stages[-1].outputs") for d in stages[-1]["outputs"]]
    return fields


def stream_lines(manifest) -> Iterator[str]:
    """`inspect` lines for a bundle's stream, state and stages (nothing when it has none)."""
    def describe(stream: Any, unit: str) -> str:
        if not isinstance(stream, dict):
            return f"{stream!r}"
        parts = [f"{stream['rate']} Hz"] if "rate" in stream else []
        parts += [f"{k} {stream[k]}" for k in ("window", "hop", "context") if k in stream]
        text = ", ".join(parts) + (f" {unit}" if parts and "rate" not in stream else "")
        for pair in stream.get("state") or []:
            if isinstance(pair, dict):
                text += f"; state {pair.get('input')} <- {pair.get('output')} " \
                        f"(init {pair.get('init', 0.0)})"
        if stream.get("constants"):
            text += f"; constants {stream['constants']}"
        return text
    if manifest.stream:
        yield f"stream: {describe(manifest.stream, 'samples')}"
    for i, stage in enumerate(manifest.stages):
        names = lambda kind: ", ".join(str(s.get("name")) for s in stage.get(kind) or []  # noqa: E731
                                       if isinstance(s, dict))
        yield (f"stage {i} {stage.get('name', '?')}: {stage.get('model')} "
               f"({names('inputs')} -> {names('outputs')}); "
               f"stream {describe(stage.get('stream') or {}, 'frames')}")
