"""The accuracy-aware greedy phase never keeps a layer that makes the mix worse (issue 18:
a first kept-float layer lowered agreement 0.832 -> 0.594 and stayed in the final mix)."""
from __future__ import annotations

from dataclasses import dataclass

from edgepack.converters.int8.layer_search import keep_float_greedily
from edgepack.converters.int8.scoring import Score
from edgepack.converters.int8.sensitivity import AccuracyTarget


@dataclass(frozen=True)
class Layer:
    node: str

    def describe(self, rank: int) -> str:
        return self.node


def _measure(table):
    calls = []

    def measure(nodes):
        calls.append(tuple(nodes))
        agreement = table.get(frozenset(nodes))
        return None if agreement is None else (b"|".join(n.encode() for n in nodes),
                                               Score(agreement, 1.0 - agreement))
    return measure, calls


def test_a_candidate_that_lowers_agreement_is_dropped_and_the_search_goes_on():
    table = {frozenset("A"): 0.594, frozenset("B"): 0.90, frozenset("BC"): 0.995,
             frozenset("AB"): 0.85}
    measure, calls = _measure(table)
    greedy = keep_float_greedily([Layer("A"), Layer("B"), Layer("C"), Layer("D")], measure,
                                 (b"int8", Score(0.832, 0.2)), AccuracyTarget(0.99))
    assert [k.node for k in greedy.kept] == ["B", "C"]
    assert greedy.score.agreement == 0.995 and greedy.model_bytes == b"B|C"
    assert greedy.rejected == 1 and greedy.skipped == 0
    # A is tried once more on top of B (it does not help there either), then never again;
    # the search stops at the target
    assert calls == [("A",), ("B",), ("A", "B"), ("B", "C")]


def test_the_budget_counts_kept_layers_not_candidates_tried():
    # every odd candidate hurts: with max 3 float layers, 3 helpful ones are still found
    names = [f"L{i}" for i in range(8)]
    helpful = [n for i, n in enumerate(names) if i % 2]
    table = {}
    for i in range(1, len(helpful) + 1):
        table[frozenset(helpful[:i])] = 0.80 + 0.03 * i
    for i in range(len(helpful)):
        for bad in names[::2]:
            table.setdefault(frozenset([*helpful[:i], bad]), 0.5)
    measure, _ = _measure(table)
    greedy = keep_float_greedily([Layer(n) for n in names], measure,
                                 (b"int8", Score(0.80, 0.3)),
                                 AccuracyTarget(0.99, max_float_layers=3))
    assert [k.node for k in greedy.kept] == helpful[:3]
    assert greedy.score.agreement == 0.80 + 0.09


def test_no_improvement_at_all_returns_the_all_int8_model():
    measure, _ = _measure({frozenset("A"): 0.7, frozenset("B"): 0.8})
    greedy = keep_float_greedily([Layer("A"), Layer("B")], measure,
                                 (b"int8", Score(0.8, 0.1)), AccuracyTarget(0.99))
    assert greedy.kept == () and greedy.model_bytes == b"int8" and greedy.rejected == 2


def test_inadmissible_mixes_are_skipped_not_rejected():
    measure, _ = _measure({frozenset("B"): 0.99})
    greedy = keep_float_greedily([Layer("A"), Layer("B")], measure,
                                 (b"int8", Score(0.8, 0.1)), AccuracyTarget(0.99))
    assert [k.node for k in greedy.kept] == ["B"] and greedy.skipped == 1


def test_a_cancelling_pair_is_found_although_either_layer_alone_hurts():
    # conv_b alone lowers agreement but removes error (pending); with conv_a it is the fix
    table = {frozenset(["b"]): 0.44, frozenset(["b", "h"]): 0.44, frozenset(["h"]): 0.65,
             frozenset(["h", "a"]): 0.65, frozenset(["a", "b", "h"]): 1.0}
    measure, calls = _measure(table)
    errors = {0.44: 0.7, 0.65: 0.99, 1.0: 0.0}

    def scored(nodes):
        out = measure(nodes)
        return None if out is None else (out[0], Score(out[1].agreement, errors[out[1].agreement]))
    greedy = keep_float_greedily([Layer("b"), Layer("h"), Layer("a")], scored,
                                 (b"int8", Score(0.65, 0.999)), AccuracyTarget(0.99))
    assert [k.node for k in greedy.kept] == ["b", "h", "a"]     # ranking order, for pruning
    assert greedy.score.agreement == 1.0 and greedy.rejected == 1
    assert calls[-1] == ("b", "h", "a")
