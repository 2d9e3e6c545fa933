"""The sensitivity pass on tiny models: it finds the outlier layers and records them."""
from __future__ import annotations

import numpy as np
import pytest
from int8_models import conv_net, run

from edgepack.converters.int8 import (AccuracyTarget, Calibrated, Int8Options, accuracy_aware,
                                      choose_recipe, quantize_int8)
from edgepack.converters.int8.scoring import score
from edgepack.runtime.errors import ConversionError


def _recipe():
    # No thin-conv rule: the tiny net's first conv reads 1 channel and must stay rankable.
    return choose_recipe("onnxruntime", "x86_64-workstation", float_thin_convs=0)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def test_score_measures_agreement_and_normalized_error():
    ref = [np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])]
    got = [np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])]
    result = score(ref, got)
    assert result.agreement == 0.75
    assert result.error == pytest.approx(2.0 / 7.0)   # ||diff||^2 / ||ref||^2


def test_outlier_model_plain_int8_misses_and_accuracy_aware_meets(calib, held_out):
    model = conv_net(outlier=1000.0)
    reference = run(model, held_out)
    np.testing.assert_allclose(reference, run(conv_net(), held_out), atol=1e-4)  # same function
    plain = quantize_int8(model, {"x": calib}, Int8Options(recipe=_recipe()))
    assert _agreement(reference, run(plain.model_bytes, held_out)) < 0.5   # collapsed

    target = AccuracyTarget(min_agreement=0.95, max_float_layers=3)
    # prepare=False: cross-layer equalization would undo the planted outlier with no float
    # layer at all (test_cle.py); this test is about keeping layers float.
    aware = quantize_int8(model, {"x": calib}, Int8Options(recipe=_recipe(), accuracy=target,
                                                           prepare=False))
    record = aware.record["accuracy_aware"]
    kept = {k["node"] for k in record["kept_float"]}
    # The outlier tensor is A's output: both its producer and its consumer quantize it.
    assert {"conv_a", "conv_b"} <= kept
    assert record["met"] and record["agreement"] >= 0.95
    assert record["agreement_all_int8"] < 0.5
    assert [k["node"] for k in aware.record["kept_float"]] == \
        [k["node"] for k in record["kept_float"]]
    assert all("sensitivity rank" in k["reason"] for k in aware.record["kept_float"])
    # In onnxruntime's QDQ graph either layer alone quantizes the tensor: the search kept
    # their block float, pruning tried each layer back in int8 and kept both convs float,
    # with the evidence in the reason (a layer of the block not needed went back).
    assert {r["node"] for r in record["returned_to_int8"]}.isdisjoint({"conv_a", "conv_b"})
    assert all("needed: back in int8 it gives agreement" in k["reason"]
               for k in record["kept_float"])
    # ... and it holds on samples the pass never saw.
    assert _agreement(reference, run(aware.model_bytes, held_out)) >= 0.95


def test_nothing_is_kept_float_when_plain_int8_already_meets_the_target(calib):
    target = AccuracyTarget(min_agreement=0.8)
    result = quantize_int8(conv_net(), {"x": calib}, Int8Options(recipe=_recipe(),
                                                                 accuracy=target))
    record = result.record["accuracy_aware"]
    assert record["met"] and record["kept_float"] == [] and record["returned_to_int8"] == []
    assert record["agreement"] == record["agreement_all_int8"] >= 0.8


def test_isolated_ranking_puts_the_outlier_layers_first(calib):
    with Calibrated(conv_net(outlier=1000.0), {"x": calib}) as cal:
        result = accuracy_aware(cal, _recipe(), {"x": calib},
                                AccuracyTarget(min_agreement=0.95, max_float_layers=3,
                                               method="isolated"))
    ranking = [(s.node, s.method) for s in result.ranking]
    assert {n for n, _ in ranking[:2]} == {"conv_a", "conv_b"}
    assert ranking[0][1] == "isolated"
    assert result.ranking[0].error > 100 * result.ranking[-1].error


def test_leave_one_out_cannot_see_a_tensor_shared_by_two_layers(calib):
    # Documented limitation (why "isolated" is the default): leaving out conv_a alone or
    # conv_b alone still quantizes the outlier tensor, so neither removes much error.
    with Calibrated(conv_net(outlier=1000.0), {"x": calib}) as cal:
        result = accuracy_aware(cal, _recipe(), {"x": calib},
                                AccuracyTarget(0.95, max_float_layers=1, method="leave_one_out"))
    assert not result.met
    assert max(s.impact for s in result.ranking) < 0.5
    assert result.to_record()["met"] is False


def test_max_float_layers_bounds_the_search(calib, caplog):
    with Calibrated(conv_net(outlier=1000.0), {"x": calib}) as cal:
        with caplog.at_level("WARNING"):
            result = accuracy_aware(cal, _recipe(), {"x": calib},
                                    AccuracyTarget(min_agreement=0.99, max_float_layers=1))
    # at most one float layer, and only one that makes the mix better (none may)
    assert len(result.kept_float) <= 1 and not result.met
    assert "below the target" in caplog.text
    assert result.pruning == ()   # no pruning below the target: every layer is needed


def test_bad_targets_are_refused():
    with pytest.raises(ConversionError, match="agreement target"):
        AccuracyTarget(min_agreement=1.5)
    with pytest.raises(ConversionError, match="sensitivity method"):
        AccuracyTarget(method="random")
    with pytest.raises(ConversionError, match="max_float_layers"):
        AccuracyTarget(max_float_layers=-1)


def test_zero_float_layers_means_ptq_methods_only(calib):
    target = AccuracyTarget(min_agreement=0.95, max_float_layers=0)
    result = quantize_int8(conv_net(outlier=1000.0), {"x": calib},
                           Int8Options(recipe=_recipe(), accuracy=target, prepare=False))
    record = result.record["accuracy_aware"]
    assert record["kept_float"] == [] and not record["met"]    # the outlier needs float
    assert [m["method"] for m in record["methods"]] == ["bias_correction", "adaround"]


def test_caller_excluded_nodes_stay_float_and_are_not_ranked(calib):
    import onnx
    target = AccuracyTarget(min_agreement=0.95, max_float_layers=3)
    result = quantize_int8(conv_net(outlier=1000.0), {"x": calib},
                           Int8Options(recipe=_recipe(), accuracy=target, exclude_nodes=("head",)))
    graph = onnx.load_from_string(result.model_bytes).graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    assert gemm.input[1] in {i.name for i in graph.initializer}   # float weights
    assert result.record["kept_float"][0] == {"nodes": ["head"], "reason": "asked by the caller"}
    assert "head" not in {s.node for s in result.mixed.ranking}
    assert result.record["accuracy_aware"]["met"]
