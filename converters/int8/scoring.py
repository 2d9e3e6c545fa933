"""How close a quantized model is to the float one: the scores every int8 decision uses.

`AgreementMeter` runs candidate models on fixed samples through edgepack's engine and scores
them against the float model (`score`): top-1 agreement, normalized output error and the KL
divergence of the class scores (`row_kl`), or a task's own agreement in place of top-1
(`with_task_metric`, e.g. detection agreement). The layer search (layer_search.py), the
fitted methods (selection.py) and the TFLite path all compare candidates by these scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError


@dataclass(frozen=True)
class Score:
    """How close a quantized model is to the float one on the measurement samples.

    agreement: top-1 agreement of the first 2-D output (1.0 when there is none), or the
        task metric's value when the meter has one (detection agreement for detectors).
    error: mean over outputs of ||q - f||^2 / ||f||^2 (normalized squared error).
    divergence: mean KL(softmax(f) || softmax(q)) over samples of the agreement output
        (nan when there is none): a continuous, low-variance companion of agreement that
        sees how close the ambiguous inputs are to flipping (selection.py).
    hits: per-sample agreement (1/0, or a task metric's per-sample values), for the
        standard error of a difference in agreement between two candidates; None when
        only the aggregate is known.
    """

    agreement: float
    error: float
    divergence: float = float("nan")
    hits: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: Per-sample KL divergences whose mean `divergence` is (None without class scores).
    divergences: np.ndarray | None = field(default=None, compare=False, repr=False)



class AgreementMeter:
    """Scores models against a reference model on fixed samples, run in batches through
    edgepack's own engine for them (what devices run).

    meter = AgreementMeter("onnxruntime", float_model, samples); meter(int8_model) -> Score.
    Outputs are matched by name, so a converter that reorders them is still compared
    output for output. `samples` are keyed by input name; if the names do not match the
    model's (no usable signature), they are fed by position.
    """

    def __init__(self, engine: str, reference_model: bytes,
                 samples: Mapping[str, np.ndarray], threads: int | None = None,
                 batch: int = 64, metric: "TaskMetric | None" = None):
        self.engine, self.threads, self.batch = engine, threads, batch
        #: The task's agreement (detection agreement for detectors) in place of top-1.
        self.metric = metric
        # integer inputs (token ids, attention masks) stay integers; everything else float32
        self.samples = {n: np.ascontiguousarray(a, dtype=a.dtype if a.dtype.kind in "iub"
                                                else np.float32)
                        for n, a in ((n, np.asarray(a)) for n, a in samples.items())}
        self.reference = self.outputs(reference_model)
        #: Samples actually measured (a fixed-batch model drops the remainder).
        self.count = len(next(iter(self.reference.values())))

    def __call__(self, model_bytes: bytes) -> Score:
        produced = self.outputs(model_bytes)
        result = score(list(self.reference.values()), [produced[n] for n in self.reference])
        if self.metric is None:
            return result
        return with_task_metric(result, self.metric, self.reference,
                                {n: produced[n] for n in self.reference})

    def outputs(self, model_bytes: bytes) -> dict[str, np.ndarray]:
        """Outputs of `model_bytes` on the samples, by name, float64."""
        from edgepack.runtime.engines import open_engine
        engine = open_engine(self.engine, model_bytes, threads=self.threads)
        try:
            specs = engine.inputs()
            names = [s.name for s in specs]
            if set(names) != set(self.samples):
                names = list(self.samples)
            first = specs[0].shape[0]
            batch = first if first > 0 else self.batch
            count = min(len(a) for a in self.samples.values())
            # A fixed-batch model only takes full batches: the remainder is not measured.
            stop = count - count % batch if first > 0 else count
            chunks = [engine.run({s.name: self.samples[n][start:start + batch]
                                  for s, n in zip(specs, names)})
                      for start in range(0, stop, batch)]
        finally:
            engine.close()
        if not chunks:
            raise ConversionError(f"the model takes batches of {batch}; fewer samples given")
        return {name: np.concatenate([c[name] for c in chunks]).astype(np.float64)
                for name in chunks[0]}


#: A task's agreement between the float model's outputs and a candidate's (both by output
#: name, batch first): one number in [0, 1], or per-sample values whose mean it is.
TaskMetric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Any]


def score(reference: Sequence[np.ndarray], produced: Sequence[np.ndarray]) -> Score:
    """Top-1 agreement (first 2-D output with >1 column), mean normalized squared error,
    and the mean KL divergence of that output's softmax."""
    errors, hits, kl = [], None, None
    for ref, got in zip(reference, produced):
        got = np.nan_to_num(got, nan=0.0, posinf=0.0, neginf=0.0)
        denom = float(np.sum(ref ** 2)) or 1.0
        errors.append(float(np.sum((got - ref) ** 2)) / denom)
        if hits is None and ref.ndim == 2 and ref.shape[1] > 1:
            hits = (ref.argmax(1) == got.argmax(1)).astype(np.float64)
            kl = row_kl(ref, got)
    return Score(1.0 if hits is None else float(np.mean(hits)), float(np.mean(errors)),
                 float("nan") if kl is None else float(np.mean(kl)), hits, kl)


def mean_kl(reference: np.ndarray, produced: np.ndarray) -> float:
    """Mean over rows of KL(p || q) (row_kl)."""
    return float(np.mean(row_kl(reference, produced)))


def row_kl(reference: np.ndarray, produced: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, p and q the softmax of each row (rows that are already
    probabilities, non-negative and summing to 1, are taken as they are)."""
    def log_probs(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if np.all(x >= 0) and np.allclose(x.sum(1), 1.0, atol=1e-3):
            return np.log(np.maximum(x, 1e-12))
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))
    lp, lq = log_probs(reference), log_probs(produced)
    return np.sum(np.exp(lp) * (lp - lq), axis=1)


def with_task_metric(base: Score, metric: TaskMetric, reference: Mapping[str, np.ndarray],
                     produced: Mapping[str, np.ndarray]) -> Score:
    """`base` with its agreement (and per-sample hits, if the metric gives them) replaced by
    the task metric's; its top-1 divergence means nothing for such a task and is dropped."""
    value = np.asarray(metric(reference, produced), np.float64)
    hits = value.reshape(-1) if value.ndim else None
    agreement = float(np.mean(value)) if value.size else 1.0
    return Score(agreement, base.error, float("nan"), hits, None)
