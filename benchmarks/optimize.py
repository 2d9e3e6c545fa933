"""Pruning and distillation on scikit-learn digits, measured end to end on the runtime.

    python benchmarks/optimize.py [--seeds 5] [--repeats 400] [--threads 1] [--json out.json]

1. Train the digits CNN (32x32 input, conv 32-64-128-128), prune 50% of the channels of
   every prunable layer (L1), fine-tune; compare test accuracy.
2. Convert both to int8 ONNX bundles with `edgepack.convert`, load them with
   `edgepack.runtime.load`, and time them interleaved in one loop (batch 1 and 32);
   print size, parameter and latency ratios.
   With --magnitude, a 50% magnitude-pruned model is converted and timed as well: its
   zeros do not make a dense engine faster, which is why structured pruning exists.
3. Distill the CNN into a student of ~2% of its parameters and train the same student from
   the same initialization alone, over several seeds; print both accuracies, once on the
   whole train split and once on a 300-sample labeled budget.
"""
from __future__ import annotations

import argparse
import copy
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
    trained = {"unpruned": base, "pruned": pruned}
    if args.magnitude:
        # zeros alone: same shapes, so a dense engine does the same work
        sparse = copy.deepcopy(base)
        masks = optimize.prune_magnitude(sparse, optimize.MagnitudePruneConfig(0.5)).masks
        optimize.fine_tune(sparse, (x_train, y_train), d.FINE_TUNE, masks=masks)
        trained["magnitude"] = sparse
    bundles = {n: workdir / f"{n}.edgepack" for n in trained}
    conversions = {n: d.int8_bundle(m, bundles[n], x_train, x_test, y_test)
                   for n, m in trained.items()}
    models = {name: load(path, threads=args.threads) for name, path in bundles.items()}
    out = {
        "torch_params": {n: optimize.count_parameters(m) for n, m in trained.items()},
        "torch_nonzero": {n: optimize.count_nonzero(m) for n, m in trained.items()},
        "onnx_params": {n: d.onnx_parameter_count(p) for n, p in bundles.items()},
        "onnx_bytes": {n: c.model_bytes for n, c in conversions.items()},
        "bundle_bytes": {n: p.stat().st_size for n, p in bundles.items()},
        "torch_accuracy": {n: optimize.evaluate(m, (x_test, y_test))[1]
                           for n, m in trained.items()},
        "int8_accuracy": {n: d.bundle_accuracy(m, x_test, y_test) for n, m in models.items()},
        "latency_s": {},
    }
    for batch in (1, 32):
        out["latency_s"][f"batch{batch}"] = d.interleaved_latency(
            models, x_test[:batch], args.repeats, threads=args.threads)
    for m in models.values():
        m.close()
    return out


def distillation(args, data, teacher) -> dict:
    x_train, y_train, x_test, y_test = data
    seeds = list(range(args.seeds))
    n = d.TRANSFER_SAMPLES
    regimes = {
        f"full train split ({len(y_train)} samples, {d.DISTILL.epochs} epochs)":
            d.distill_vs_alone(teacher, x_train, y_train, x_test, y_test, seeds, d.DISTILL),
        f"{n} labeled samples ({d.DISTILL_TRANSFER.epochs} epochs)":
            d.distill_vs_alone(teacher, x_train[:n], y_train[:n], x_test, y_test, seeds,
                               d.DISTILL_TRANSFER),
    }
    return {"teacher_params": optimize.count_parameters(teacher),
            "student_params": optimize.count_parameters(d.student_cnn(0)),
            "teacher_accuracy": optimize.evaluate(teacher, (x_test, y_test))[1],
            "temperature": d.DISTILL.temperature, "alpha": d.DISTILL.alpha, "seeds": seeds,
            "regimes": {name: {"distilled": [r[0] for r in rows], "alone": [r[1] for r in rows]}
                        for name, rows in regimes.items()}}


def report(p: dict, k: dict | None) -> None:
    names = list(p["torch_params"])  # unpruned first

    def row(label, table, fmt, ratio_word="ratio"):
        cells = "  ".join(f"{n} {fmt(table[n])}" for n in names)
        ratios = "  ".join(f"{n} {table['unpruned'] / table[n]:.2f}x" for n in names[1:])
        print(f"{label:<18}{cells}   {ratio_word} {ratios}")

    print("\n== 50% structured pruning + fine-tune, int8 ONNX bundles on edgepack.runtime")
    for key, label in (("torch_accuracy", "accuracy (torch)"), ("int8_accuracy", "accuracy (int8)")):
        print(f"{label:<18}" + "  ".join(f"{n} {p[key][n]:.4f}" for n in names))
    for key, label in (("torch_params", "torch parameters"), ("torch_nonzero", "torch non-zero"),
                       ("onnx_params", "ONNX parameters"), ("onnx_bytes", "ONNX model bytes"),
                       ("bundle_bytes", "bundle bytes")):
        row(label, p[key], lambda v: f"{v:>9}")
    for batch, lat in p["latency_s"].items():
        row(f"latency {batch}", lat, lambda v: f"{v * 1e3:8.3f} ms", "speed-up")
    if k is None:
        return
    print(f"\n== distillation (T={k['temperature']}, alpha={k['alpha']}): student "
          f"{k['student_params']} params = {k['student_params'] / k['teacher_params']:.1%} of the "
          f"teacher ({k['teacher_params']}, test accuracy {k['teacher_accuracy']:.4f})")
    for name, r in k["regimes"].items():
        print(f"-- students see the {name}")
        for seed, a, b in zip(k["seeds"], r["distilled"], r["alone"]):
            print(f"seed {seed}: distilled {a:.4f}  alone {b:.4f}  diff {(a - b) * 100:+.2f} pts")
        wins = sum(a > b for a, b in zip(r["distilled"], r["alone"]))
        losses = sum(a < b for a, b in zip(r["distilled"], r["alone"]))
        print(f"mean: distilled {statistics.mean(r['distilled']):.4f}  alone "
              f"{statistics.mean(r['alone']):.4f}  (distilled better on {wins}, worse on "
              f"{losses} of {len(k['seeds'])} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1, help="engine threads")
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument("--magnitude", action="store_true",
                        help="also time a 50%% magnitude-pruned (zeros only) bundle")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}", flush=True)
    torch.set_num_threads(1)  # same as the tests (d.one_torch_thread): reproducible, no spinning
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
