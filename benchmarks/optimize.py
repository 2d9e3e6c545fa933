"""Pruning and distillation on scikit-learn digits, measured end to end on the runtime.

    python benchmarks/optimize.py [--seeds 5] [--repeats 400] [--threads 1] [--json out.json]

1. Train the digits CNN (32x32 input, conv 32-64-128-128), prune 50% of the channels of
   every prunable layer (L1), fine-tune; compare test accuracy.
2. Convert both to int8 ONNX bundles with `edgepack.convert`, load them with
   `edgepack.runtime.load`, and time them interleaved in one loop (batch 1 and 32);
   print size, parameter and latency ratios.
3. Distill the CNN into a student of ~2% of its parameters and train the same student from
   the same initialization alone, over several seeds; print both accuracies.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "optimize"))

import torch  # noqa: E402

import optimize_digits as d  # noqa: E402
from edgepack.converters import optimize  # noqa: E402
from edgepack.runtime import load  # noqa: E402


def pruning(args, data, base, workdir: Path) -> dict:
    x_train, y_train, x_test, y_test = data
    t0 = time.time()
    pruned, result = d.prune_and_fine_tune(base, x_train, y_train)
    print(f"pruned + fine-tuned in {time.time() - t0:.0f} s")
    for c in result.pruned:
        print(f"  {c.name:>3} {c.kind}: {c.before} -> {c.after} channels "
              f"(also rewrote {', '.join(c.consumers)})")
    acc = {"unpruned": optimize.evaluate(base, (x_test, y_test))[1],
           "pruned": optimize.evaluate(pruned, (x_test, y_test))[1]}

    bundles = {"unpruned": workdir / "unpruned.edgepack", "pruned": workdir / "pruned.edgepack"}
    conversions = {name: d.int8_bundle(model, bundles[name], x_train, x_test, y_test)
                   for name, model in (("unpruned", base), ("pruned", pruned))}
    models = {name: load(path, threads=args.threads) for name, path in bundles.items()}
    out = {
        "torch_params": {"unpruned": result.params_before, "pruned": result.params_after},
        "onnx_params": {n: d.onnx_parameter_count(p) for n, p in bundles.items()},
        "onnx_bytes": {n: c.model_bytes for n, c in conversions.items()},
        "bundle_bytes": {n: p.stat().st_size for n, p in bundles.items()},
        "torch_accuracy": acc,
        "int8_accuracy": {n: d.bundle_accuracy(m, x_test, y_test) for n, m in models.items()},
        "latency_s": {},
    }
    for batch in (1, 32):
        out["latency_s"][f"batch{batch}"] = d.interleaved_latency(
            models, x_test[:batch], args.repeats)
    for m in models.values():
        m.close()
    return out


def distillation(args, data, teacher) -> dict:
    x_train, y_train, x_test, y_test = data
    seeds = list(range(args.seeds))
    rows = d.distill_vs_alone(teacher, x_train, y_train, x_test, y_test, seeds)
    return {"teacher_params": optimize.count_parameters(teacher),
            "student_params": optimize.count_parameters(d.student_cnn(0)),
            "teacher_accuracy": optimize.evaluate(teacher, (x_test, y_test))[1],
            "seeds": seeds, "distilled": [r[0] for r in rows], "alone": [r[1] for r in rows]}


def report(p: dict, k: dict | None) -> None:
    def ratio(table):
        return table["unpruned"] / table["pruned"]

    print("\n== 50% structured pruning + fine-tune, int8 ONNX bundles on edgepack.runtime")
    print(f"accuracy (torch)  unpruned {p['torch_accuracy']['unpruned']:.4f}  "
          f"pruned {p['torch_accuracy']['pruned']:.4f}")
    print(f"accuracy (int8)   unpruned {p['int8_accuracy']['unpruned']:.4f}  "
          f"pruned {p['int8_accuracy']['pruned']:.4f}")
    for key, label in (("torch_params", "torch parameters"), ("onnx_params", "ONNX parameters"),
                       ("onnx_bytes", "ONNX model bytes"), ("bundle_bytes", "bundle bytes")):
        print(f"{label:<18}unpruned {p[key]['unpruned']:>9}  pruned {p[key]['pruned']:>9}  "
              f"ratio {ratio(p[key]):.2f}x")
    for batch, lat in p["latency_s"].items():
        print(f"latency {batch:<9} unpruned {lat['unpruned'] * 1e3:8.3f} ms  pruned "
              f"{lat['pruned'] * 1e3:8.3f} ms  speed-up {ratio(lat):.2f}x")
    if k is None:
        return
    print(f"\n== distillation: student {k['student_params']} params = "
          f"{k['student_params'] / k['teacher_params']:.1%} of the teacher "
          f"({k['teacher_params']}, test accuracy {k['teacher_accuracy']:.4f})")
    for seed, a, b in zip(k["seeds"], k["distilled"], k["alone"]):
        print(f"seed {seed}: distilled {a:.4f}  alone {b:.4f}  diff {(a - b) * 100:+.2f} pts")
    wins = sum(a > b for a, b in zip(k["distilled"], k["alone"]))
    print(f"mean: distilled {statistics.mean(k['distilled']):.4f}  alone "
          f"{statistics.mean(k['alone']):.4f}  (distilled better on {wins}/{len(k['seeds'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="engine threads")
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared host: one training thread avoids spin-wait contention
    data = d.digits_split()
    t0 = time.time()
    base = d.digits_cnn()
    optimize.fine_tune(base, data[:2], d.BASE_TRAIN)
    print(f"trained the unpruned CNN in {time.time() - t0:.0f} s")
    with tempfile.TemporaryDirectory(prefix="edgepack-opt-") as tmp:
        p = pruning(args, data, base, Path(tmp))
    k = distillation(args, data, base) if not args.no_distill else None
    report(p, k)
    if args.json:
        args.json.write_text(json.dumps({"pruning": p, "distillation": k}, indent=2))


if __name__ == "__main__":
    main()
