"""QAT where post-training int8 cannot keep agreement: the issue-18 stand-in (issue 18).

    .venv/bin/python benchmarks/qat_standin.py [--epochs 2] [--lr 1e-4]
                                               [--labels teacher|task]
                                               [--fresh-seeds 1234,5678] [--rounds 30]

The stand-in is benchmarks/int8_standin.py's MobileNetV2 (32x32 patches of scikit-learn's
two sample photos, 18 grid-cell classes; trained once and cached). Post-training int8 of it
stays at ~0.94 top-1 agreement with fp32 on unseen patches, with every layer int8
(docs/int8-accuracy.md). Here the same float model is fine-tuned with fake int8
quantization (`edgepack.optimize.quantization_aware`, the recipe of this machine) and
exported to an int8 bundle, and all int8 models are compared with the *original* fp32
model:

- loss: with --distill 1 (default) the fake-quant model learns the fp32 model's soft
  outputs at --temperature (`QATConfig.distill_alpha`: no labels needed, and agreement
  with the float model is what it optimizes); below 1, cross-entropy on the labels is
  mixed in: ``--labels teacher`` (the fp32 model's own top-1 of the training patches) or
  ``task`` (the grid-cell labels). Hard labels alone (--distill 0) lose the teacher's
  ranking of the look-alike classes: measured 0.874 agreement on fresh patches, below
  plain int8;
- agreement with fp32 on the held-out set (seed 2, the one int8_standin reports) and on
  fresh sets drawn from --fresh-seeds (nothing is chosen on them), pooled with its binomial
  standard error; accuracy on the task labels beside it;
- the bundle against its fake-quant model (the export's own check, in output steps);
- latency: int8/fp32 at 1 thread, CPU time of the calling thread, interleaved, for plain
  int8, the automatic PTQ and the QAT bundle (all-int8 graphs: their ops are printed).

Torch and onnxruntime use 1 thread (2 shared cores). Prints the CPU and the load average.

Measured (AMD EPYC, AVX512-VNNI, load 2.3-2.9, fresh seeds 1234 + 5678, 2048 patches), top-1
agreement with fp32, pooled: plain int8 0.925 (SE 0.006), automatic PTQ 0.952 (0.005);
QAT, 2 epochs at lr 1e-4: labels only 0.874, distillation 0.904, distillation + float
outputs 0.925 (= plain int8); 4 epochs at lr 5e-4 0.835 (the loss rose from 0.015 to 0.18
in the first epoch). QAT as built does not beat the post-training pass on this stand-in; it
does where one tensor's range wrecks PTQ (tests/optimize/test_qat.py: 0.302 -> 0.982).
With 8-bit logits the bundle and its fake-quant model disagreed on top-1 for 4.4 % of the
held-out patches (close classes tie on the 8-bit grid); with float outputs 1.3 %.

Session 12 (Intel Xeon, AVX512-VNNI + AMX; the instance trained on that CPU, automatic PTQ
0.935 pooled): with each residual Add fake-quantized as the quantizer does, the bundle and
its fake-quant model disagree on 0.1-0.4 % of held-out patches. `--fixed-ranges --lr 1e-5`:
3 epochs 0.928, 6 epochs 0.935 pooled, the automatic PTQ's figure (docs/qat.md).
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def op_counts(model_bytes: bytes) -> str:
    import onnx
    counts = collections.Counter(n.op_type for n in onnx.load_from_string(model_bytes).graph.node)
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--labels", choices=("teacher", "task"), default="teacher")
    parser.add_argument("--distill", type=float, default=1.0, metavar="ALPHA",
                        help="QATConfig.distill_alpha: weight of the float model's soft "
                             "outputs against the labels (0: labels only)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--int8-outputs", action="store_true",
                        help="requantize the logits to 8 bits (QATConfig.float_outputs off)")
    parser.add_argument("--train-patches", type=int, default=None, metavar="N",
                        help="QAT training patches (default: the stand-in's own 6144)")
    parser.add_argument("--fixed-ranges", action="store_true",
                        help="no learned clipping bounds (QATConfig.learn_ranges off): "
                             "every range is the float model's min/max")
    parser.add_argument("--fresh-seeds", default="1234,5678",
                        help="seeds of the fresh held-out sets (1024 patches each)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds")
    args = parser.parse_args(argv)

    import torch

    from edgepack.converters.int8 import AccuracyTarget, Int8Options, choose_recipe, \
        quantize_int8
    from edgepack.optimize import QATConfig, quantization_aware
    from edgepack.runtime.benchmark import cpu_description
    from edgepack.runtime.bundle import read_bundle
    from int8 import bundle, load_average, run_onnx as run, time_bundles
    from int8_standin import USED_SEEDS, StandinConfig, export, patches, train_standin

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.fresh_seeds.split(",") if s.strip()]
    config = StandinConfig()
    reserved = {config.seed + 1, config.seed + 2, config.seed + 100}
    if any(s in reserved for s in seeds):
        raise SystemExit(f"--fresh-seeds must not draw the calibration, held-out or training "
                         f"patches (seeds {sorted(reserved)})")
    print(cpu_description())
    print(f"load average {load_average()}; torch and onnxruntime 1 thread")
    reused = [s for s in seeds if s in USED_SEEDS]
    if reused:
        print(f"  note: fresh seed(s) {reused} were drawn before (int8_standin.USED_SEEDS)")
    start = time.perf_counter()
    model = train_standin(config)
    print(f"stand-in ready in {time.perf_counter() - start:.0f} s")
    calib, _ = patches(300, config.seed + 1, config)
    sets = {"held-out (seed 2)": patches(1024, config.seed + 2, config)}
    for s in seeds:
        sets[f"fresh (seed {s})"] = patches(1024, s, config)
    fp32 = export(model, calib[:2])
    refs = {name: run(fp32, x) for name, (x, _) in sets.items()}

    recipe = choose_recipe("onnxruntime")
    models: dict[str, bytes] = {}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    models["plain int8"] = quantize_int8(fp32, {"x": calib}, Int8Options(recipe=recipe)
                                         ).model_bytes
    seconds["plain int8"] = time.perf_counter() - t
    t = time.perf_counter()
    models["automatic PTQ"] = quantize_int8(fp32, {"x": calib}, Int8Options(
        recipe=recipe, accuracy=AccuracyTarget(0.95, max_float_layers=0))).model_bytes
    seconds["automatic PTQ"] = time.perf_counter() - t

    # the stand-in's training patches, or more of them drawn the same way (the first
    # config.train are the same patches; nothing held out is drawn from this seed)
    x_train, y_task = patches(args.train_patches or config.train, config.seed + 100, config)
    y = run(fp32, x_train).argmax(1) if args.labels == "teacher" else y_task
    print(f"QAT: {len(x_train)} training patches, {args.labels} labels "
          f"(teacher = task label on {np.mean(run(fp32, x_train).argmax(1) == y_task):.3f} "
          f"of them), distillation from fp32 alpha {args.distill:g} at T {args.temperature:g}, "
          f"{'8-bit' if args.int8_outputs else 'float'} outputs, {args.epochs} epochs, Adam lr "
          f"{args.lr:g}, recipe {recipe.name}",
          flush=True)
    t = time.perf_counter()
    result = quantization_aware(model, (x_train, y), QATConfig(
        epochs=args.epochs, lr=args.lr, calibration_samples=300, distill_alpha=args.distill,
        temperature=args.temperature, float_outputs=not args.int8_outputs,
        learn_ranges=not args.fixed_ranges))
    seconds["QAT"] = time.perf_counter() - t
    for e in result.history.epochs:
        print(f"  epoch {e.epoch}: loss {e.loss:.4f}, train accuracy {e.train_accuracy:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        held_x = sets["held-out (seed 2)"][0]
        # not accepted: the export's own check (one step, or for a deep net's rare
        # requantization ties a mean under 0.05 steps with top-1 >= 0.99) must pass here
        converted = result.export(Path(tmp) / "qat.edgepack", validation_data=held_x[:256],
                                  speed_check=False)
        models["QAT"] = read_bundle(converted.path).model_bytes()
        match = converted.quantization["qat"]["fake_quant_match"]
        step = match["max_abs"] / match["max_steps"] if match["max_steps"] else None
        with torch.no_grad():
            fake = result.model(torch.from_numpy(held_x)).numpy()
        got = run(models["QAT"], held_x)
        mean_steps = float(np.abs(got - fake).mean() / step) if step else float("nan")
        print(f"  QAT bundle vs its fake-quant model: {match['samples']} calibration samples "
              f"max {match['max_steps']:.4g} output steps, mean {match['mean_steps']:.3g}, "
              f"top-1 {match['top1_agreement']:.4f}; "
              f"held-out (seed 2) mean {mean_steps:.3g} steps, top-1 "
              f"{np.mean(got.argmax(1) == fake.argmax(1)):.4f}; QAT training "
              f"{seconds['QAT']:.0f} s")

        print("top-1 agreement with the original fp32 model (accuracy on the task labels)")
        fresh_names = [n for n in sets if n.startswith("fresh")]
        width = max(len(n) for n in models) + 2
        for name, m in models.items():
            cells, hits = [], []
            for set_name, (x, labels) in sets.items():
                got = run(m, x).argmax(1)
                same = got == refs[set_name].argmax(1)
                if set_name in fresh_names:
                    hits.append(same)
                cells.append(f"{set_name} {same.mean():.4f} ({np.mean(got == labels):.3f})")
            pooled = np.concatenate(hits) if hits else np.zeros(0)
            line = "; ".join(cells)
            if len(pooled):
                se = np.sqrt(pooled.mean() * (1 - pooled.mean()) / len(pooled))
                line += f"; fresh pooled {pooled.mean():.4f} (SE {se:.4f}, n {len(pooled)})"
            extra = f" [{seconds[name]:.0f} s]" if name in seconds else ""
            print(f"  {name:{width}s}{line}{extra}")
        print("  fp32 accuracy: " + "; ".join(
            f"{n} {np.mean(refs[n].argmax(1) == lab):.3f}" for n, (_, lab) in sets.items()))
        for name, m in models.items():
            print(f"  ops, {name}: {op_counts(m)}")

        paths = {"fp32": bundle(Path(tmp), "fp32", fp32)}
        for i, (name, m) in enumerate(models.items()):
            paths[name] = bundle(Path(tmp), f"m{i}", m)
        for repeat in range(2):
            ms = time_bundles(paths, 1, args.rounds, clock=time.thread_time)
            print(f"latency, 1 thread, CPU time, repeat {repeat + 1} (load average "
                  f"{load_average()}): " + ", ".join(
                      f"{n} {v:.3f} ms (x{v / ms['fp32']:.3f})" for n, v in ms.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
