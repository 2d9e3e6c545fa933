"""Block reconstruction with activation quantization in the loop (BRECQ / QDrop-style).

Layer-local fixes (bias correction, AdaRound from float inputs) correct the *weights'*
rounding error. On depthwise-separable nets most of the int8 loss is the *activations'*
8-bit rounding noise, spread over every tensor (docs/int8-accuracy.md). Block
reconstruction (Li et al., "BRECQ", 2021; Wei et al., "QDrop", 2022) lets the weights learn
to tolerate that noise without training the model:

- the QDQ model the recipe produced is read as it runs (its QuantizeLinear/DequantizeLinear
  pairs, scales and zero points, its per-channel weight grids) and simulated in torch;
- blocks are cut at the tensors every path goes through (an inverted residual with its
  skip is one block; consecutive single-path layers are merged up to `block_layers`);
- block by block in graph order, the block's weights are rounded up or down on their int8
  grid by learned soft rounding (AdaRound's rectified sigmoid, annealed to 0/1) and its
  biases may move, so that the block's output, with every activation inside fake-quantized
  and its input taken from the *already reconstructed* quantized blocks before it, matches
  the float model's output of the block;
- during the fit each activation element is fake-quantized only with probability
  1 - `drop` and otherwise only clipped to its range (QDrop): the result is flat with
  respect to the activation noise instead of fitted to one draw of it;
- optionally (`learn_ranges`) each activation's quantization step inside the block is
  learned too (LSQ, as QDrop does) and exported as the activation range the quantizer
  recomputes that very step from (`reconstruction_export.exported_range`).

The weights come out on the grid the quantizer computes anyway (each channel's largest
|w| keeps its nearest rounding, so the per-channel scales are recomputed unchanged): the
rewritten float model goes through the SAME quantizer call with the same activation ranges
(`Calibrated.replace_model`), every layer stays int8, and the graph (and so the latency)
is that of plain int8. What is fitted on calibration samples is judged on calibration
samples it was not fitted on (selection.FittedSplit).

The QDQ model is read and simulated by qdq_simulation.py; this module fits it block by block.
Torch is used (converters may import it); one thread unless told otherwise.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .qdq_simulation import QdqGraph, QdqSimulator
from .reconstruction_export import exported_range, rewritten_float_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructionSettings:
    """iterations: optimizer steps per block; batch: samples per step; drop: probability
    that an activation element skips its rounding during the fit (QDrop; 0 = BRECQ);
    regularization: weight of the push of the soft rounding to 0/1 (relative to the
    block's normalized reconstruction error); bias: learn the biases too (learning rate
    relative to each channel's weight scale); block_layers: single-path layers merged into
    one block; seconds: wall-clock budget (blocks left when it runs out keep
    round-to-nearest); threads: torch threads."""

    iterations: int = 150
    batch: int = 16
    learning_rate: float = 3e-2
    drop: float = 0.5
    regularization: float = 0.01
    bias: bool = False
    bias_learning_rate: float = 5e-4
    block_layers: int = 3
    seconds: float = 600.0
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounding not in ("adaround", "grid"):
            raise ConversionError(f"unknown reconstruction rounding {self.rounding!r}; use "
                                  "adaround or grid")
        if not 0.0 <= self.drop < 1.0:
            raise ConversionError(f"reconstruction drop must be in [0, 1), got {self.drop}")

    #: Extra fit inputs per calibration sample: convex mixes of two calibration samples
    #: (weight uniform in [0, 1]), which the float model labels itself (the targets are
    #: its outputs, not labels). A late block sees only one row per sample (1x1 spatial)
    #: for hundreds of thousands of rounding choices: without more inputs the rounding
    #: fits the samples, not the noise.
    mixes: int = 7
    #: Mirror images (last axis flipped) as further fit inputs, for 4-D image inputs.
    flips: bool = False
    #: "adaround": each weight rounds up or down (soft rounding annealed to 0/1);
    #: "grid": each weight is a free value on its fixed per-channel grid (straight-through
    #: rounding, `grid_learning_rate` in grid steps per step), so it may move several steps.
    rounding: str = "adaround"
    grid_learning_rate: float = 1e-2
    #: LSQ-style (Esser et al. 2020, as QDrop does): each activation's quantization step
    #: inside the block is learned jointly with the rounding (log space, Adam at
    #: `range_learning_rate`; the zero point stays). The learned steps are exported as the
    #: activation ranges the quantizer then uses (`Reconstruction.ranges`), chosen so that
    #: it recomputes exactly the step and zero point the fit used.
    learn_ranges: bool = True
    range_learning_rate: float = 1e-2


@dataclass(frozen=True)
class ReconstructedBlock:
    layers: tuple[str, ...]
    error_before: float         # block output error vs float (relative), round-to-nearest
    error_after: float          # the same after reconstruction
    flipped: int                # weights rounded the other way than nearest


@dataclass(frozen=True)
class Reconstruction:
    """The float model rewritten with reconstructed weights (on their int8 grid) and
    biases: quantize it with the same ranges to get the reconstructed int8 model."""

    model_bytes: bytes
    blocks: tuple[ReconstructedBlock, ...]
    seconds: float
    samples: int
    #: tensor -> (low, high): the activation ranges whose steps were learned
    #: (`learn_ranges`); quantize with these in place of the calibrated ones.
    ranges: Mapping[str, tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.ranges is None:
            object.__setattr__(self, "ranges", {})

    def to_record(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return float(f"{np.mean(values):.4g}") if values else None
        return {"blocks": len(self.blocks), "samples_fitted": self.samples,
                "seconds": round(self.seconds, 1),
                "flipped": int(sum(b.flipped for b in self.blocks)),
                "block_error_before": mean([b.error_before for b in self.blocks]),
                "block_error_after": mean([b.error_after for b in self.blocks]),
                **({"ranges_learned": len(self.ranges)} if self.ranges else {})}


def reconstruct(float_model: bytes, qdq_model: bytes, samples: Mapping[str, np.ndarray],
                settings: ReconstructionSettings = ReconstructionSettings()) -> Reconstruction:
    """Block reconstruction of `qdq_model` (the recipe's all-int8 QDQ model of
    `float_model`, the prepared float graph) on `samples` (fit samples only). Returns the
    float model with the learned weights and biases. Raises ConversionError for a graph
    the simulation does not cover (the caller then skips the method)."""
    import torch

    started = time.monotonic()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        graph = QdqGraph(qdq_model, float_model)
        blocks = graph.blocks(settings.block_layers)
        sim = QdqSimulator(graph)
        x = fit_inputs(np.asarray(samples[graph.input], np.float32), settings)
        wanted = [graph.reference_name(o) for _, _, _, o in blocks]
        targets = _float_values(float_model, wanted, graph.input, x)
        gen = torch.Generator().manual_seed(settings.seed)
        current = torch.tensor(x)          # the block input through the quantized blocks
        done = []
        for index, (start, end, tin, tout) in enumerate(blocks):
            layers = tuple(n.name for n in graph.nodes[start:end] if n.op in ("Conv", "Gemm"))
            target = targets[graph.reference_name(tout)]
            norm = float(torch.mean(target ** 2)) or 1.0

            def output(inp, quantize=True, drop=0.0, batch=None):
                return sim.run(start, end, {tin: inp}, quantize, drop, gen)[tout]

            with torch.no_grad():
                before = float(torch.mean((output(current) - target) ** 2)) / norm
            if time.monotonic() - started > settings.seconds:
                log.info("reconstruction: %.0f s budget spent; %s and later keep nearest "
                         "rounding", settings.seconds, layers[0])
                with torch.no_grad():
                    current = output(current)
                continue
            grid = settings.rounding == "grid"
            for name in layers:
                sim.params[name]["mode"] = "grid" if grid else "soft"
            opt_v = torch.optim.Adam([sim.params[n]["u" if grid else "v"] for n in layers],
                                     lr=settings.grid_learning_rate if grid
                                     else settings.learning_rate)
            opt_b = torch.optim.Adam([sim.params[n]["bias"] for n in layers],
                                     lr=settings.bias_learning_rate) if settings.bias else None
            quantized = [n.inputs[0] for n in graph.nodes[start:end]
                         if n.op == "FQ" and n.inputs[0] not in sim.shared_steps] \
                if settings.learn_ranges else []
            for tensor in quantized:
                step = sim.steps[tensor]
                step["learn"] = True
                with torch.no_grad():
                    step["log_s"].fill_(float(np.log(step["s"])))
            opt_s = torch.optim.Adam([sim.steps[t]["log_s"] for t in quantized],
                                     lr=settings.range_learning_rate) if quantized else None
            count = len(current)
            warmup = settings.iterations // 5
            for step in range(settings.iterations):
                pick = torch.randint(0, count, (min(settings.batch, count),), generator=gen)
                got = output(current[pick], drop=settings.drop)
                rec = torch.mean((got - target[pick]) ** 2) / norm
                loss = rec
                if step >= warmup and not grid:
                    frac = (step - warmup) / max(1, settings.iterations - warmup)
                    beta = 20.0 + (2.0 - 20.0) * frac
                    reg = sum(torch.sum(1 - torch.abs(2 * sim.h(n) - 1) ** beta)
                              for n in layers) / sum(sim.params[n]["v"].numel() for n in layers)
                    loss = rec + settings.regularization * reg
                for opt in (opt_v, opt_b, opt_s):
                    if opt:
                        opt.zero_grad()
                loss.backward()
                for opt in (opt_v, opt_b, opt_s):
                    if opt:
                        opt.step()
            for name in layers:
                sim.params[name]["mode"] = "grid_hard" if grid else "hard"
            for tensor in quantized:
                step = sim.steps[tensor]
                step["learn"] = False
                # the step the quantizer will recompute from the exported range
                step["s"] = exported_range(float(torch.exp(step["log_s"].detach())), step)[2]
            with torch.no_grad():
                after = float(torch.mean((output(current) - target) ** 2)) / norm
                if after >= before:     # no better than nearest on the fit samples: undone
                    for name in layers:
                        p = sim.params[name]
                        p["mode"] = "nearest"
                        p["bias"].copy_(torch.tensor(p["bias0"], dtype=torch.float32))
                    for tensor in quantized:
                        sim.steps[tensor]["s"] = sim.steps[tensor]["s0"]
                    after = before
                flipped = sum(int(torch.sum(sim.h(n) != sim.params[n]["nearest_h"]))
                              for n in layers)
                current = output(current)
            done.append(ReconstructedBlock(layers, before, after, flipped))
            log.info("reconstruction: block %d/%d (%s): output error %.3g -> %.3g, %d weights "
                     "flipped [%.0f s]", index + 1, len(blocks), ", ".join(layers), before,
                     after, flipped, time.monotonic() - started)
        model = rewritten_float_model(float_model, graph, sim)
        ranges = {t: exported_range(st["s"], st)[:2] for t, st in sim.steps.items()
                  if st["s"] != st["s0"]}
    finally:
        torch.set_num_threads(previous_threads)
    return Reconstruction(model, tuple(done), time.monotonic() - started, len(x), ranges)


def fit_inputs(x: np.ndarray, settings: ReconstructionSettings) -> np.ndarray:
    """The calibration samples, their mirror images (`flips`, 4-D inputs) and `mixes`
    convex mixes per sample of two of them (seeded: the same inputs every run)."""
    rng = np.random.default_rng(settings.seed)
    parts = [x]
    if settings.flips and x.ndim == 4:
        parts.append(x[..., ::-1])
    base = np.concatenate(parts)
    if settings.mixes > 0:
        count = settings.mixes * len(x)
        a, b = rng.integers(0, len(base), count), rng.integers(0, len(base), count)
        w = rng.uniform(0, 1, (count,) + (1,) * (x.ndim - 1)).astype(np.float32)
        parts.append(w * base[a] + (1 - w) * base[b])
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


def _float_values(float_model: bytes, tensors: Sequence[str], input_name: str,
                  x: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """The float model's values of `tensors` on every sample of `x`, as torch tensors."""
    import torch

    from .probe import probe_session
    session = probe_session(float_model, tensors)
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0 and len(x) % fixed:
        raise ConversionError(f"block reconstruction: the model takes batches of {fixed}")
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    names = list(dict.fromkeys(tensors))
    chunks = [session.run(names, {input_name: x[i:i + step]}) for i in range(0, len(x), step)]
    return {n: torch.tensor(np.concatenate([c[k] for c in chunks]))
            for k, n in enumerate(names)}
