"""A pretrained-weights-free stand-in for issue 18: int8 that loses accuracy on a real photo
task, and what edgepack's post-training fixes give back with no layer kept in float.

    python benchmarks/int8.py --only standin          # or: python benchmarks/int8_standin.py
    python benchmarks/int8_standin.py --fresh-seed 11   # the fresh set from another seed
    python benchmarks/int8_standin.py --diagnose        # where the all-int8 model loses
    python benchmarks/int8_standin.py --reconstruct 4242,9001   # + block reconstruction
    python benchmarks/int8_standin.py --reconstruct 31337,27182 --calibration 1024 \
        --samples 1024 --target 0.99       # more calibration patches

The model is MobileNetV2 1.0 (inverted residuals, linear bottlenecks, ReLU6; 2.2 M
parameters; built in code) at 32x32 input, trained from scratch (3 epochs, 1 thread: ~4 min
on a quiet core, 16 min on 2 cores shared with other jobs) on patches of the two photos
scikit-learn ships (china.jpg and flower.jpg, downscaled x2; nothing is downloaded). The
label is the cell of a 3x3 grid of the photo the patch is centred in (18 classes):
neighbouring cells of the sky, the petals or a wall look alike, so, as with real cameras,
many inputs are ambiguous (fp32 held-out accuracy ~0.47, 40 % of the patches with p >= 0.5)
and top-1 often sits on small margins: exactly where the issue's real models lose agreement.
Plain int8 of this model misses 0.95 agreement with no planting at all.
Calibration (300) and held-out (512) patches are drawn at other positions (other seeds) than
the training ones and than each other. The trained weights are cached (keyed by a hash of the
configuration and of the data/model code) under $EDGEPACK_BENCH_CACHE or
~/.cache/edgepack-bench, so a rerun starts in seconds.

`plant_outliers` (optional, `factor`) scales a few channels of the two linear bottlenecks
that feed the next conv directly, compensated exactly in that conv: the activation outliers
real nets grow, which cross-layer equalization undoes.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass(frozen=True)
class StandinConfig:
    size: int = 32          # input side (pixels)
    zoom: int = 2           # the photos are downscaled by this first (more context per patch)
    grid: int = 3           # grid x grid cells per photo -> 2 * grid^2 classes
    train: int = 6144       # training patches
    epochs: int = 3
    batch: int = 64
    lr: float = 3e-3
    width: float = 1.0      # MobileNetV2 width multiplier (tests use a smaller net)
    seed: int = 0
    instance: int = 0       # which trained instance: another init and batch order, same data


def photos() -> list[np.ndarray]:
    """The two photos scikit-learn ships, float32 [0, 1], HWC."""
    from sklearn.datasets import load_sample_images
    return [np.asarray(i, np.float32) / 255.0 for i in load_sample_images().images]


def _zoomed(zoom: int) -> list[np.ndarray]:
    out = []
    for img in photos():
        h, w = (img.shape[0] // zoom) * zoom, (img.shape[1] // zoom) * zoom
        out.append(img[:h, :w].reshape(h // zoom, zoom, w // zoom, zoom, 3).mean(axis=(1, 3)))
    return out


def patches(count: int, seed: int, config: StandinConfig) -> tuple[np.ndarray, np.ndarray]:
    """`count` normalized NCHW patches and their labels (photo, grid cell of the centre),
    with light augmentation (flip, brightness, contrast, noise)."""
    rng = np.random.default_rng(seed)
    images = _zoomed(config.zoom)
    size, grid = config.size, config.grid
    x = np.empty((count, 3, size, size), np.float32)
    y = np.empty(count, np.int64)
    for k in range(count):
        which = int(rng.integers(len(images)))
        img = images[which]
        h, w = img.shape[:2]
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        cy, cx = top + size // 2, left + size // 2
        label = which * grid * grid + min(cy * grid // h, grid - 1) * grid + \
            min(cx * grid // w, grid - 1)
        p = img[top:top + size, left:left + size]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        p = (p - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.1, 0.1)
        p = p + rng.normal(0, 0.02, p.shape)
        x[k] = ((p - 0.45) / 0.25).transpose(2, 0, 1)
        y[k] = label
    return x, y


def standin_model(num_classes: int, width: float = 1.0, init_seed: int = 0):
    """MobileNetV2 (inverted residuals, linear bottlenecks, ReLU6), `width` multiplier."""
    import torch
    from torch import nn

    def ch(c: int) -> int:
        return max(8, int(round(c * width / 8)) * 8)

    def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6(inplace=True)] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden, 1) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, act=False)
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    torch.manual_seed(init_seed)
    layers, cin = conv_bn(3, ch(32), 3, 2), ch(32)
    for expand, cout, repeats, stride in settings:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, ch(cout), stride if i == 0 else 1, expand))
            cin = ch(cout)
    last = max(1280, ch(1280)) if width >= 1 else ch(1280)
    layers += conv_bn(cin, last, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(last, num_classes))


def _cache_dir() -> Path:
    return Path(os.environ.get("EDGEPACK_BENCH_CACHE",
                               Path.home() / ".cache" / "edgepack-bench"))


#: Bump when train_standin's procedure changes (the data and model code are hashed).
TRAINING_VERSION = 1


def _key(config: StandinConfig) -> str:
    code = "".join(inspect.getsource(f) for f in (_zoomed, patches, standin_model))
    fields = asdict(config)
    if not fields["instance"]:      # instance 0 keeps the key (and cache) it had before
        del fields["instance"]
    return hashlib.sha256(f"{fields}{TRAINING_VERSION}{code}".encode()).hexdigest()[:16]


def train_standin(config: StandinConfig, log=print):
    """The trained model (eval mode), from the cache when the same configuration and code
    trained it before."""
    import torch
    torch.set_num_threads(1)   # measured: on 2 shared cores, 1 thread trains 2-7x faster
    classes = 2 * config.grid ** 2
    model = standin_model(classes, config.width, config.instance)
    path = _cache_dir() / f"int8-standin-{_key(config)}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    x, y = patches(config.train, config.seed + 100, config)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(config.seed + 7919 * config.instance)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * -(-len(xt) // config.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), config.batch):
            idx = perm[i:i + config.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"  training epoch {epoch + 1}/{config.epochs}: loss {total / len(xt):.3f} "
            f"[{time.perf_counter() - start:.0f} s]")
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def plant_outliers(model, factor: float, channels: int = 2):
    """A copy of `model` with `channels` output channels of each linear bottleneck that feeds
    the next conv directly (block 0's 16-channel projection -> block 1's expansion, the last
    block's 320-channel projection -> the 1280-channel conv) scaled by `factor`, and the conv
    reading them scaled by 1/factor. No activation lies between the two convs, so the float
    function is unchanged; the int8 scale of the tensor between them is `factor` times
    coarser for every other channel. The channels are the widest ones already (an outlier
    grows where a channel is wide, as in real nets)."""
    import copy

    import torch
    from torch import nn
    model = copy.deepcopy(model)
    blocks = [m for m in model if hasattr(m, "residual")]
    convs_after = [blocks[1].block[0], next(m for m in list(model)[list(model).index(blocks[-1]) + 1:]
                                            if isinstance(m, nn.Conv2d))]
    with torch.no_grad():
        for block, reader in ((blocks[0], convs_after[0]), (blocks[-1], convs_after[1])):
            bn = block.block[-1]
            wide = torch.argsort(bn.weight.abs(), descending=True)[:channels]
            bn.weight[wide] *= factor
            bn.bias[wide] *= factor
            reader.weight[:, wide] /= factor
    return model.eval()


def export(model, example: np.ndarray) -> bytes:
    """ONNX (opset 17, dynamic batch) through the TorchScript exporter: 4-6x faster than
    the dynamo one for this net on a loaded machine, the same graph after graph prep."""
    import io
    import warnings

    import torch
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(example),), buffer, dynamo=False,
                          input_names=["x"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def standin_section(rounds: int = 40, config: StandinConfig = StandinConfig(),
                    factor: float = 1.0, target: float = 0.95,
                    fresh_seed: int | None = None) -> dict:
    """Train (or load) the stand-in, quantize it plainly and with each PTQ improvement, and
    print held-out agreement with fp32 and latency ratios. Returns the figures.

    fresh_seed: the seed the fresh held-out set is drawn from (default config.seed + 3, the
    set of session 5); another seed gives a set no one has looked at, for a final check."""
    from dataclasses import replace

    import torch

    from edgepack.converters.int8 import (AccuracyTarget, Calibrated, CalibrationSettings,
                                          Int8Options, choose_recipe, quantize_int8)
    from edgepack.converters.int8.adaround import learn_rounding
    from edgepack.converters.int8.bias_correction import correct_biases
    from edgepack.converters.int8.calibration_choice import choose_calibration
    from edgepack.converters.int8.cle import equalize
    from edgepack.converters.int8.graph_prep import prepare_graph
    from edgepack.converters.int8.quantize import float_graph_outputs, weighted_nodes
    from edgepack.converters.int8.scoring import AgreementMeter
    from int8 import bundle, load_average, run_onnx, time_bundles

    print(f"\n== stand-in: MobileNetV2 (ReLU6, width {config.width}) at {config.size}x"
          f"{config.size}, {2 * config.grid ** 2} classes = {config.grid}x{config.grid} grid "
          f"cells of sklearn's 2 "
          f"photos (downscaled x{config.zoom}); {config.train} training patches, "
          f"{config.epochs} epochs", flush=True)
    start = time.perf_counter()
    trained = train_standin(config)
    print(f"  model ready in {time.perf_counter() - start:.0f} s (cache {_cache_dir()})")
    model = plant_outliers(trained, factor) if factor > 1 else trained
    calib, _ = patches(300, config.seed + 1, config)
    held, labels = patches(1024, config.seed + 2, config)
    # A second held-out set, drawn after the noise-aware choice was designed (the first
    # one had been looked at while designing it): the unbiased figure.
    fresh_seed = config.seed + 3 if fresh_seed is None else fresh_seed
    if fresh_seed in (config.seed + 1, config.seed + 2, config.seed + 100):
        raise SystemExit(f"--fresh-seed {fresh_seed} draws the calibration, held-out or "
                         "training patches; pick another seed")
    fresh, _ = patches(1024, fresh_seed, config)
    torch.set_num_threads(1)
    with torch.no_grad():
        same = np.abs(model(torch.from_numpy(held)).numpy() -
                      trained(torch.from_numpy(held)).numpy()).max()
    fp32 = export(model, calib[:2])
    ref = run_onnx(fp32, held)
    ref_fresh = run_onnx(fp32, fresh)
    prob = np.exp(ref - ref.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    confident = prob.max(1) >= 0.5
    print(f"  fp32 held-out accuracy {np.mean(ref.argmax(1) == labels):.4f} ({len(held)} "
          f"patches; {confident.mean():.0%} with p >= 0.5); planted outliers x{factor:g} "
          f"(float change {same:.2g})")
    recipe = choose_recipe("onnxruntime")
    settings = CalibrationSettings()
    cal = {"x": calib}
    prepared = prepare_graph(fp32).model_bytes
    models: dict[str, bytes] = {}
    timings: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    with Calibrated(prepared, cal, settings) as plain_cal:
        plain = timed("plain int8", lambda: plain_cal.quantize(recipe))
        models["plain int8"] = plain
        meter = AgreementMeter("onnxruntime", prepared, {"x": calib[:256]})
        choice = timed("calibration choice", lambda: choose_calibration(
            prepared, cal, recipe, meter, settings, reuse=plain_cal,
            reuse_measured=(plain, meter(plain))))
        models[f"calibration choice ({choice.chosen})"] = choice.model_bytes
        models["float outputs (logits not requantized)"] = float_graph_outputs(plain)
        floated = replace(settings, float_outputs=True)
        with Calibrated.with_ranges(prepared, cal, floated, plain_cal.ranges()) as fo_cal:
            fo = fo_cal.quantize(recipe)
            both = timed("float outputs + calibration choice", lambda: choose_calibration(
                prepared, cal, recipe, meter, floated, reuse=fo_cal,
                reuse_measured=(fo, meter(fo))))
            models[f"float outputs + calibration choice ({both.chosen})"] = both.model_bytes
            if both.calibrated is not fo_cal:
                both.calibrated.close()
        if choice.calibrated is not plain_cal:
            choice.calibrated.close()

        def biased():
            corrected = correct_biases(prepared, plain, cal)
            with Calibrated.with_ranges(corrected.model_bytes, cal, settings,
                                        plain_cal.ranges()) as c:
                return c.quantize(recipe)
        models["bias correction"] = timed("bias correction", biased)

        def rounded():
            names = [n for n, _ in weighted_nodes(prepared)]
            learned = learn_rounding(prepared, plain, cal, names)
            with Calibrated.with_ranges(learned.apply(prepared), cal, settings,
                                        plain_cal.ranges()) as c:
                return c.quantize(recipe)
        models["AdaRound (all layers, 30 s budget)"] = timed("AdaRound", rounded)

    def equalized():
        with Calibrated(equalize(prepared).model_bytes, cal, settings) as c:
            return c.quantize(recipe)
    models["cross-layer equalization"] = timed("CLE", equalized)

    # The improved PTQ alone (max_float_layers=0: every layer int8), then the whole pass
    # (the layer search too, if the PTQ result misses the target on the calibration set).
    aware = AccuracyTarget(min_agreement=target, max_float_layers=0)
    t = time.perf_counter()
    auto = quantize_int8(fp32, cal, Int8Options(recipe=recipe, accuracy=aware))
    auto_seconds = time.perf_counter() - t
    record = auto.record["accuracy_aware"]
    kept_methods = [m["method"] for m in record["methods"] if m["kept"]]
    models[f"automatic PTQ ({' + '.join(kept_methods) or 'none'})"] = auto.model_bytes
    t = time.perf_counter()
    full = quantize_int8(fp32, cal, Int8Options(recipe=recipe,
                                                accuracy=AccuracyTarget(target)))
    full_seconds = time.perf_counter() - t
    full_record = full.record["accuracy_aware"]
    models[f"whole pass ({len(full_record['kept_float'])} layers float)"] = full.model_bytes

    figures = {"fp32_accuracy": float(np.mean(ref.argmax(1) == labels)),
               "auto_seconds": auto_seconds, "kept_float": len(record["kept_float"]),
               "full_seconds": full_seconds, "full_kept_float": len(full_record["kept_float"])}
    print(f"  held-out agreement with fp32 (recipe {recipe.name}, {len(calib)} calibration "
          f"patches, {len(held)} held-out, and {len(fresh)} fresh held-out, seed "
          f"{fresh_seed}):")
    for name, m in models.items():
        got = run_onnx(m, held)
        a = _agreement(ref, got)
        figures[name] = a
        figures[f"{name} [fresh]"] = b = _agreement(ref_fresh, run_onnx(m, fresh))
        extra = f"  [{timings[name.split(' (')[0]]:.1f} s]" if name.split(" (")[0] in timings \
            else ""
        print(f"    {name:48s} {a:.4f}  fresh {b:.4f}  accuracy "
              f"{np.mean(got.argmax(1) == labels):.4f}{extra}")
    print(f"  automatic PTQ (target {target} on the calibration set, no layer float): "
          f"{auto_seconds:.1f} s wall, calibration-set agreement "
          f"{record['agreement_all_int8']:.4f} -> {record['agreement']:.4f}")
    print(f"  whole pass (PTQ, then the layer search: {full_record['method']}): "
          f"{full_seconds:.1f} s wall, calibration-set agreement "
          f"{full_record['agreement_all_int8']:.4f} -> {full_record['agreement']:.4f}, "
          f"layers kept float: {[k['node'] for k in full_record['kept_float']]}, load "
          f"average {load_average()}")
    for m in record["methods"]:
        branch = f" [{m['branch']}]" if m.get("branch") else ""
        if "skipped" in m:
            print(f"      {m['method'] + branch:60s} skipped: {m['skipped']}")
            continue
        print(f"      {m['method'] + branch:60s} {m['agreement_before']:.4f} -> "
              f"{m['agreement_after']:.4f} {'kept' if m['kept'] else 'undone'}"
              f"{' (' + m['chosen'] + ')' if m.get('chosen') else ''}: "
              f"{m.get('decided_by', '')}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": bundle(Path(tmp), "fp32", fp32)}
        for i, (name, m) in enumerate(models.items()):
            paths[name] = bundle(Path(tmp), f"m{i}", m)
        for threads in (1, 2):
            for repeat in range(2):
                print(f"  latency, {threads} thread(s), repeat {repeat + 1}, load average "
                      f"{load_average()}:")
                ms = time_bundles(paths, threads, rounds)
                for name, value in ms.items():
                    print(f"    {name:48s} {value:7.3f} ms  ratio {value / ms['fp32']:.3f}")
                    figures[f"ratio {threads}t r{repeat} {name}"] = value / ms["fp32"]
    return figures


def _session(model_bytes: bytes, optimized: bool = True):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimized:   # QDQ nodes run as written: float arithmetic on dequantized values
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _bias_inputs(qdq: bytes):
    """The QDQ model with every Conv/Gemm bias fed as a float graph input and every such
    node's output exposed, and [(node name, output, bias int32 initializer, bias scale,
    current float bias)] in graph order."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load_from_string(qdq)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    layers = []
    for node in model.graph.node:
        dq = producer.get(node.input[2]) if node.op_type in ("Conv", "Gemm") and \
            len(node.input) > 2 else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        scale = inits[dq.input[1]].astype(np.float64)
        bias = inits[dq.input[0]].astype(np.float64) * scale
        node.input[2] = f"{node.name}__bias"
        model.graph.input.append(helper.make_tensor_value_info(
            node.input[2], onnx.TensorProto.FLOAT, [len(bias)]))
        model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
        layers.append((node.name, node.output[0], dq.input[0], scale, bias))
    return model.SerializeToString(), layers


def sequential_bias_correction(qdq: bytes, float_model: bytes, x: np.ndarray) -> bytes:
    """Empirical bias correction in graph order against the *quantized* model's inputs:
    layer by layer, the per-channel mean of (float output - int8 output) on `x`, with
    every earlier layer already corrected, is added to the layer's int32 bias (the QDQ
    graph is otherwise unchanged). This absorbs the mean shift of activation rounding and
    clipping, not only of the weights' (bias_correction.py corrects (W_q - W) E[x] from
    float inputs)."""
    import onnx
    from onnx import numpy_helper
    probe_bytes, layers = _bias_inputs(qdq)
    probe = _session(probe_bytes, optimized=False)
    reference = onnx.load_from_string(float_model)
    names = {n.name: n.output[0] for n in reference.graph.node}
    for name, *_ in layers:
        reference.graph.output.append(onnx.ValueInfoProto(name=names[name]))
    wanted = [names[name] for name, *_ in layers]
    targets = dict(zip(wanted, _session(reference.SerializeToString()).run(wanted, {"x": x})))

    def channel_mean(a):
        return a.astype(np.float64).mean(axis=(0,) + tuple(range(2, a.ndim)))
    biases = {name: bias for name, _, _, _, bias in layers}
    for name, output, _, scale, _ in layers:
        feeds = {"x": x, **{f"{n}__bias": b.astype(np.float32) for n, b in biases.items()}}
        got = probe.run([output], feeds)[0]
        shift = channel_mean(targets[names[name]]) - channel_mean(got)
        biases[name] = np.round((biases[name] + shift) / scale) * scale
    model = onnx.load_from_string(qdq)
    inits = {i.name: i for i in model.graph.initializer}
    for name, _, int_name, scale, _ in layers:
        inits[int_name].CopyFrom(numpy_helper.from_array(
            np.round(biases[name] / scale).astype(np.int32), int_name))
    return model.SerializeToString()


def float_weights(qdq: bytes, float_model: bytes) -> bytes:
    """The QDQ model with every Conv/Gemm reading the float model's weights and biases
    (activations still quantized): what the weights' int8 rounding costs."""
    import onnx
    model = onnx.load_from_string(qdq)
    source = onnx.load_from_string(float_model)
    by_name = {n.name: n for n in source.graph.node}
    weights = {i.name: i for i in source.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name not in by_name:
            continue
        for k in (1, 2):
            dq = producer.get(node.input[k]) if len(node.input) > k else None
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(weights[by_name[node.name].input[k]])
            copy.name = f"{node.name}__float{k}"
            model.graph.initializer.append(copy)
            node.input[k] = copy.name
    return model.SerializeToString()


def diagnose_section(config: StandinConfig = StandinConfig(),
                     fresh_seed: int | None = None) -> dict:
    """Where the all-int8 stand-in loses agreement, on the held-out and fresh sets (nothing
    is chosen here): the automatic PTQ's pipeline (float outputs + calibration choice) with
    (a) its graph run as written (fake quantization) and as onnxruntime fuses it, (b) float
    weights with int8 activations, (c) every activation range scaled by 0.9 and 1.1,
    (d) sequential empirical bias correction against quantized inputs (64 and 128
    calibration samples). Top-1 agreement and mean KL divergence from fp32."""
    from dataclasses import replace

    from edgepack.converters.int8 import Calibrated, CalibrationSettings, choose_recipe
    from edgepack.converters.int8.calibration_choice import choose_calibration
    from edgepack.converters.int8.graph_prep import prepare_graph
    from edgepack.converters.int8.scoring import AgreementMeter, row_kl
    model = train_standin(config)
    calib, _ = patches(300, config.seed + 1, config)
    held, _ = patches(1024, config.seed + 2, config)
    fresh_seed = config.seed + 3 if fresh_seed is None else fresh_seed
    fresh, _ = patches(1024, fresh_seed, config)
    prepared = prepare_graph(export(model, calib[:2])).model_bytes
    recipe = choose_recipe("onnxruntime")
    cal = {"x": calib}
    floated = CalibrationSettings(float_outputs=True)
    meter = AgreementMeter("onnxruntime", prepared, {"x": calib[:256]})
    with Calibrated(prepared, cal, floated) as plain_cal:
        plain = plain_cal.quantize(recipe)
        choice = choose_calibration(prepared, cal, recipe, meter, floated, reuse=plain_cal,
                                    reuse_measured=(plain, meter(plain)))
        base, ranges = choice.model_bytes, choice.calibrated.ranges()
        if choice.calibrated is not plain_cal:
            choice.calibrated.close()

    def rescaled(factor: float) -> bytes:
        scaled = {t: (lo * factor, hi * factor) for t, (lo, hi) in ranges.items()}
        with Calibrated.with_ranges(prepared, cal, replace(floated, method="minmax"),
                                    scaled) as c:
            return c.quantize(recipe)

    sets = {"held-out": held, f"fresh (seed {fresh_seed})": fresh}
    refs = {n: _session(prepared).run(None, {"x": x})[0] for n, x in sets.items()}
    variants = {
        f"float outputs + calibration choice ({choice.chosen})": (base, True),
        "  the same graph run as written (fake quantization)": (base, False),
        "  float weights, int8 activations (as written)": (float_weights(base, prepared),
                                                            False),
        "  activation ranges x0.9": (rescaled(0.9), True),
        "  activation ranges x1.1": (rescaled(1.1), True),
    }
    for count in (64, 128):
        t = time.perf_counter()
        corrected = sequential_bias_correction(base, prepared, calib[:count])
        variants[f"  + sequential bias correction ({count} samples, "
                 f"{time.perf_counter() - t:.0f} s)"] = (corrected, True)
    print(f"\n== where the all-int8 stand-in loses agreement (agreement / mean KL from fp32;"
          f" calibration set {meter.count})")
    figures = {}
    for name, (m, optimized) in variants.items():
        row = [f"cal {meter(m).agreement:.4f}"] if optimized else ["cal    -  "]
        for set_name, x in sets.items():
            out = _session(m, optimized).run(None, {"x": x})[0]
            a = float(np.mean(out.argmax(1) == refs[set_name].argmax(1)))
            kl = float(np.mean(row_kl(refs[set_name], out)))
            figures[f"{name.strip()} [{set_name}]"] = (a, kl)
            row.append(f"{set_name} {a:.4f} / {kl:.5f}")
        print(f"  {name:62s} {'   '.join(row)}")
    return figures


#: Seeds that draw the calibration, held-out, design-time and earlier fresh sets: a fresh
#: set for a final check must come from another seed.
#: 4242 and 9001: session 7's fresh sets; 31337 and 27182: session 8's (int8 pass); 1234 and
#: 5678: session 8's benchmarks/qat_standin.py; 4711 and 8128: session 8's second instance
#: (--instance 1); 2718 and 6022: session 14's (instance 0, AMD EPYC).
USED_SEEDS = (1, 2, 3, 50, 100, 777, 4242, 9001, 31337, 27182, 1234, 5678, 4711, 8128,
              2718, 6022)


def reconstruction_section(fresh_seeds: tuple[int, ...] = (4242, 9001), rounds: int = 40,
                           config: StandinConfig = StandinConfig(), settings=None,
                           target: float = 0.95, calibration: int = 300,
                           samples: int = 256, rerun: bool = False) -> dict:
    """The automatic PTQ (max_float_layers=0) without and with block reconstruction
    (AccuracyTarget(reconstruction=...): BRECQ/QDrop-style, fitted on the first 2/3 of the
    `calibration` patches, kept only if better on the last 1/3), scored on the held-out set
    and on fresh sets from `fresh_seeds` (never used before: nothing is chosen on them;
    `rerun` repeats a recorded run on seeds already used), with the binomial SE of each
    figure and of the pooled fresh figure, the fitted method's record, the conversion
    times, and int8/fp32 latency at 1 thread beside plain int8 in the same run.

    calibration: patches drawn from the calibration seed (the first 300 are the default
    set's); samples: how many of them the pass measures its candidates on
    (AccuracyTarget.samples; the fitted methods' split uses all of them)."""
    from edgepack.converters.int8 import reconstruction
    import torch

    from edgepack.converters.int8 import (AccuracyTarget, Calibrated, Int8Options,
                                          choose_recipe, quantize_int8)
    from edgepack.converters.int8.graph_prep import prepare_graph
    from edgepack.converters.int8.reconstruction import ReconstructionSettings
    from edgepack.converters.int8.scoring import row_kl
    from int8 import bundle, load_average, run_onnx, time_bundles
    bad = [s for s in fresh_seeds if s in USED_SEEDS]
    if bad and not rerun:
        raise SystemExit(f"fresh seeds {bad} draw sets already used; pick others")
    settings = settings or ReconstructionSettings()
    torch.set_num_threads(1)
    model = train_standin(config)
    calib, _ = patches(calibration, config.seed + 1, config)
    sets = {"held-out (seed 2)": patches(1024, config.seed + 2, config)[0]}
    for seed in fresh_seeds:
        sets[f"fresh (seed {seed})"] = patches(1024, seed, config)[0]
    fp32 = export(model, calib[:2])
    recipe = choose_recipe("onnxruntime")
    cal = {"x": calib}
    print(f"\n== block reconstruction on the stand-in ({calibration} calibration patches, "
          f"target {target}, torch threads 1, load average {load_average()}); {settings}")
    models, seconds, records = {}, {}, {}
    with Calibrated(prepare_graph(fp32).model_bytes, cal) as plain_cal:
        models["plain int8"] = plain_cal.quantize(recipe)
    # Whatever the held-back samples decide, the reconstructed model itself is scored
    # too (what it gives had it been kept): the pass's first quantization after the
    # reconstruction is that model (fitted_trials.try_reconstruction).
    itself: list[bytes] = []
    fitted: list = []
    real_reconstruct, real_quantize = reconstruction.reconstruct, Calibrated.quantize

    def remembering_reconstruct(*args, **kwargs):
        fitted.append(real_reconstruct(*args, **kwargs))
        return fitted[-1]

    def remembering_quantize(self, *args, **kwargs):
        out = real_quantize(self, *args, **kwargs)
        if fitted and not itself:
            itself.append(out)
        return out
    for name, rebuild in (("automatic PTQ", None), ("automatic PTQ + reconstruction", settings)):
        t = time.perf_counter()
        reconstruction.reconstruct, Calibrated.quantize = remembering_reconstruct, \
            remembering_quantize
        try:
            result = quantize_int8(fp32, cal, Int8Options(recipe=recipe, accuracy=AccuracyTarget(
                target, max_float_layers=0, reconstruction=rebuild, samples=samples)))
        finally:
            reconstruction.reconstruct, Calibrated.quantize = real_reconstruct, real_quantize
        seconds[name] = time.perf_counter() - t
        models[name] = result.model_bytes
        records[name] = result.record["accuracy_aware"]
        assert not result.record["accuracy_aware"]["kept_float"]
    for name, record in records.items():
        print(f"  {name}: " + "; ".join(
            f"{m['method']} "
            f"{'not tried' if 'skipped' in m else 'kept' if m.get('kept') else 'undone'}"
            + (f" ({m['chosen']})" if "chosen" in m else "") for m in record["methods"]))
    rec = next((m for m in records["automatic PTQ + reconstruction"]["methods"]
                if m["method"] == "block_reconstruction"), None)
    print(f"  reconstruction record: {rec}")
    if itself and not (rec and rec["kept"]):      # kept: it is the pass's result
        models["the reconstructed model itself"] = itself[0]
    figures: dict = {"seconds": seconds, "record": rec}
    refs = {n: run_onnx(fp32, x) for n, x in sets.items()}
    print("  agreement with fp32 (SE), 1024 patches per set; times of the conversion:")
    for name, m in models.items():
        row, pooled = [], []
        for set_name, x in sets.items():
            out = run_onnx(m, x)
            hits = out.argmax(1) == refs[set_name].argmax(1)
            a = float(hits.mean())
            kl = float(np.mean(row_kl(refs[set_name], out)))
            figures[f"{name} [{set_name}]"] = (a, kl)
            row.append(f"{set_name} {a:.4f} ({np.sqrt(a * (1 - a) / len(hits)):.4f}) "
                       f"KL {kl:.5f}")
            if set_name.startswith("fresh"):
                pooled.append(hits)
        pool = np.concatenate(pooled)
        p = float(pool.mean())
        figures[f"{name} [fresh pooled]"] = p
        took = f"  [{seconds[name]:.1f} s]" if name in seconds else ""
        print(f"    {name:32s} {'  '.join(row)}  fresh pooled {p:.4f} "
              f"({np.sqrt(p * (1 - p) / len(pool)):.4f}){took}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": bundle(Path(tmp), "fp32", fp32)}
        for i, (name, m) in enumerate(models.items()):
            paths[name] = bundle(Path(tmp), f"m{i}", m)
        for repeat in range(2):
            ms = time_bundles(paths, 1, rounds)
            print(f"  latency, 1 thread, repeat {repeat + 1}, load average {load_average()}: "
                  + ", ".join(f"{n} {v:.3f} ms (x{v / ms['fp32']:.3f})" for n, v in ms.items()))
            for n, v in ms.items():
                figures[f"ratio 1t r{repeat} {n}"] = v / ms["fp32"]
    return figures


def search_section(target: float = 0.99, repeats: int = 2,
                   config: StandinConfig = StandinConfig()) -> list[float]:
    """Time the whole accuracy-aware pass (PTQ methods, one-pass ranking, block search,
    pruning) on the stand-in with a target PTQ cannot reach, so every stage runs; `repeats`
    times. Returns the wall times (s)."""
    from edgepack.converters.int8 import AccuracyTarget, Int8Options, choose_recipe, \
        quantize_int8
    from int8 import load_average
    model = train_standin(config)
    calib, _ = patches(300, config.seed + 1, config)
    fp32 = export(model, calib[:2])
    recipe = choose_recipe("onnxruntime")
    times = []
    print(f"\n== accuracy-aware pass on the stand-in (MobileNetV2 at {config.size}x"
          f"{config.size}), target {target}: every stage runs")
    for repeat in range(repeats):
        before = load_average()
        t = time.perf_counter()
        result = quantize_int8(fp32, {"x": calib},
                               Int8Options(recipe=recipe, accuracy=AccuracyTarget(target)))
        times.append(time.perf_counter() - t)
        record = result.record["accuracy_aware"]
        print(f"  run {repeat + 1}: {times[-1]:.1f} s wall (load average {before} -> "
              f"{load_average()}), calibration agreement {record['agreement_all_int8']:.4f}"
              f" -> {record['agreement']:.4f}, met {record['met']}, kept float "
              f"{[k['node'] for k in record['kept_float']]}, returned to int8 "
              f"{len(record['returned_to_int8'])}")
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--fresh-seed", type=int, default=None,
                        help="seed of the fresh held-out set (default 3, session 5's set)")
    parser.add_argument("--diagnose", action="store_true",
                        help="only the diagnosis: where the all-int8 model loses agreement")
    parser.add_argument("--reconstruct", metavar="SEEDS", default=None,
                        help="only the automatic PTQ without and with block reconstruction, "
                             "on the held-out set and fresh sets of these comma-separated "
                             "seeds (e.g. 4242,9001)")
    parser.add_argument("--calibration", type=int, default=300,
                        help="with --reconstruct: calibration patches (default 300)")
    parser.add_argument("--samples", type=int, default=256,
                        help="with --reconstruct: calibration patches the pass measures on")
    parser.add_argument("--target", type=float, default=0.95,
                        help="with --reconstruct: the pass's agreement target")
    parser.add_argument("--rounding-only", action="store_true",
                        help="with --reconstruct: learn the weights' rounding only, not the "
                             "activation steps (session 7's reconstruction)")
    parser.add_argument("--mixes", type=int, default=None,
                        help="with --reconstruct: convex mixes per fit sample (default 7)")
    parser.add_argument("--instance", type=int, default=0,
                        help="with --reconstruct: another trained instance of the stand-in "
                             "(initialization and batch order; the same data)")
    parser.add_argument("--rerun", action="store_true",
                        help="with --reconstruct: allow fresh seeds already used (to "
                             "repeat a recorded run)")
    args = parser.parse_args(argv)
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.diagnose:
        diagnose_section(fresh_seed=args.fresh_seed)
        return 0
    if args.reconstruct:
        from dataclasses import replace

        from edgepack.converters.int8.reconstruction import ReconstructionSettings
        settings = replace(ReconstructionSettings(), learn_ranges=not args.rounding_only,
                           **({"mixes": args.mixes} if args.mixes is not None else {}))
        reconstruction_section(tuple(int(s) for s in args.reconstruct.split(",")),
                               args.rounds, settings=settings, target=args.target,
                               calibration=args.calibration, samples=args.samples,
                               rerun=args.rerun,
                               config=replace(StandinConfig(), instance=args.instance))
        return 0
    standin_section(args.rounds, fresh_seed=args.fresh_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
