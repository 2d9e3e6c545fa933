"""The backward pruning pass of accuracy-aware int8: float layers the target does not need
go back to int8, the least sensitive first, and the manifest says which and why."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from int8_models import conv_net, run

from edgepack.converters.int8 import AccuracyTarget, Int8Options, choose_recipe, quantize_int8
from edgepack.converters.int8.layer_search import MAX_ERROR_GIVEN_BACK, prune_float_layers
from edgepack.converters.int8.scoring import Score


@dataclass(frozen=True)
class _Layer:
    node: str
    op_type: str = "Conv"

    def describe(self, rank: int) -> str:
        return f"rank {rank}"


class _FakeMeasure:
    """Scores a float set by rule: agreement needs `a` and `b` float; `d` float removes a
    big error that agreement does not see; `c` float removes only a little (rounding)."""

    def __init__(self):
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, nodes):
        self.calls.append(tuple(nodes))
        floats = set(nodes)
        agreement = 0.99 if {"a", "b"} <= floats else 0.80
        error = (0.01 + (0.0 if {"a", "b"} <= floats else 1.0)
                 + (0.0 if "d" in floats else 0.5) + (0.0 if "c" in floats else 0.001))
        return ",".join(sorted(floats)).encode(), Score(agreement, error)


def test_redundant_layer_returns_to_int8_needed_ones_stay_least_sensitive_tried_first():
    measure = _FakeMeasure()
    kept = [_Layer("a"), _Layer("b"), _Layer("d"), _Layer("c")]   # greedy order: a added first
    greedy_model, greedy = measure(["a", "b", "c", "d"])
    all_int8 = measure([])[1]
    measure.calls.clear()
    pruned = prune_float_layers(kept, greedy_model, greedy, measure, 0.95, all_int8=all_int8)

    # Least sensitive (last added) first; a returned layer is out of every later trial.
    assert [t.node for t in pruned.trials] == ["c", "d", "b", "a"]
    assert measure.calls == [("a", "b", "d"), ("a", "b"), ("a", "d"), ("b", "d")]
    assert [t.returned for t in pruned.trials] == [True, False, False, False]
    assert [k.node for k in pruned.kept] == ["a", "b", "d"]
    assert pruned.model_bytes == b"a,b,d"          # the model of the accepted mix, not the last
    assert pruned.score.agreement == 0.99 and pruned.score.error == pytest.approx(0.011)
    c, d, b, _ = pruned.trials
    assert c.describe(0.95).startswith("not needed once a, b, d were float: agreement 0.9900")
    assert "below the target 0.95" in b.describe(0.95)
    # d keeps agreement but gives back a third of the removed error: more than allowed.
    assert d.score.agreement >= 0.95
    assert d.error_limit == pytest.approx(0.01 + MAX_ERROR_GIVEN_BACK * (1.511 - 0.01))
    assert "gives back over 25% of the output error" in d.describe(0.95)


def test_when_every_layer_is_needed_the_greedy_model_is_kept():
    measure = _FakeMeasure()
    greedy_model, greedy = measure(["a", "b"])
    pruned = prune_float_layers([_Layer("a"), _Layer("b")], greedy_model, greedy, measure,
                                0.95, all_int8=measure([])[1])
    assert [k.node for k in pruned.kept] == ["a", "b"]
    assert pruned.model_bytes == greedy_model and pruned.score == greedy
    assert not any(t.returned for t in pruned.trials)


def _float_weighted_nodes(model_bytes: bytes) -> dict[str, bool]:
    """Conv/Gemm node -> True when it reads its weights as a float initializer (a float
    kernel), False when they come through DequantizeLinear (QDQ: an int8 kernel)."""
    graph = onnx.load_from_string(model_bytes).graph
    initializers = {i.name for i in graph.initializer}
    return {n.name: n.input[1] in initializers for n in graph.node
            if n.op_type in ("Conv", "Gemm")}


def test_pruned_bundle_meets_the_target_with_only_the_needed_layers_float(calib):
    # leave_one_out cannot see the conv_a/conv_b pair (see test_sensitivity), so on this
    # model it ranks the head above conv_a; the greedy phase keeps it float on the way to
    # the target, and pruning finds that the pair alone is enough.
    model = conv_net(seed=1, outlier=1000.0)
    recipe = choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)
    target = AccuracyTarget(min_agreement=0.95, max_float_layers=3, method="leave_one_out")
    # prepare=False: cross-layer equalization would undo the planted outlier (test_cle.py).
    result = quantize_int8(model, {"x": calib}, Int8Options(recipe=recipe, accuracy=target,
                                                            prepare=False))
    record = result.record["accuracy_aware"]

    assert [t.node for t in result.mixed.pruning] == ["conv_a", "head", "conv_b"]
    assert [r["node"] for r in record["returned_to_int8"]] == ["head"]
    assert record["returned_to_int8"][0]["reason"].startswith(
        "not needed once conv_b, conv_a were float: agreement")
    kept = [k["node"] for k in result.record["kept_float"]]
    assert sorted(kept) == ["conv_a", "conv_b"]
    assert [k["node"] for k in record["kept_float"]] == kept
    assert all("needed: back in int8 it gives agreement" in k["reason"]
               for k in record["kept_float"])
    # Ranks are those of the whole ranking: the returned head leaves a gap.
    assert {k["node"]: k["reason"].split(":")[0] for k in record["kept_float"]} == \
        {"conv_b": "sensitivity rank 1", "conv_a": "sensitivity rank 3"}
    # The shipped graph matches the record: kept layers float, the returned one int8 ...
    is_float = _float_weighted_nodes(result.model_bytes)
    assert is_float == {"conv_a": True, "conv_b": True, "head": False}
    # ... and it meets the target on the samples the pass measured, as recorded.
    agreement = float(np.mean(run(model, calib).argmax(1)
                              == run(result.model_bytes, calib).argmax(1)))
    assert agreement == pytest.approx(record["agreement"]) and agreement >= 0.95
    assert record["met"]
