"""The accuracy-aware search at block granularity (the "one_pass" method's search).

Blocks (layer_noise.blocks: consecutive quantizable layers between branch points) are kept
float whole, most harmful first by the summed one-pass impact of their layers, each only
when the mix gets better (keep_float_greedily), at most `max_float_layers` layers in all; a
producer/consumer pair of one outlier tensor is then one candidate. Once the target is met,
each layer of the kept blocks is tried back in int8, the least harmful first
(prune_float_layers), so only the layers that are needed stay float.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from .layer_search import (LayerSensitivity, MixedPrecision, keep_float_greedily,
                           prune_float_layers)
from .quantize import Calibrated
from .scoring import Score
from .sensitivity import AccuracyTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockSensitivity:
    """A block of consecutive layers (layer_noise.blocks) the search keeps float at once;
    impact = the sum of its layers' one-pass impacts."""

    node: str                    # a label: "block <first>..<last>"
    op_type: str
    nodes: tuple[str, ...]
    impact: float

    def describe(self, rank: int) -> str:
        return (f"block rank {rank} ({len(self.nodes)} layers): its int8 form adds "
                f"relative output error {self.impact:.3g}")


def search_blocks(calibrated: Calibrated, ranking: Sequence[LayerSensitivity],
                  measure: Callable[[Sequence[str]], tuple[bytes, Score]],
                  all_int8: tuple[bytes, Score], target: AccuracyTarget, plain: Score,
                  n_used: int, methods: tuple) -> MixedPrecision:
    """The search at block granularity first: whole blocks kept float, most harmful first
    (keep_float_greedily: a block that does not make the mix better is never kept), at most
    `max_float_layers` layers in all; once the target is met, each layer of the kept blocks
    is tried back in int8, the least harmful first (prune_float_layers)."""
    from .layer_noise import blocks
    by_node = {s.node: s for s in ranking}
    groups = blocks(calibrated.model_bytes, [s.node for s in ranking])
    items = sorted((BlockSensitivity(f"block {g[0]}..{g[-1]}" if len(g) > 1 else g[0],
                                     "block" if len(g) > 1 else by_node[g[0]].op_type, g,
                                     sum(by_node[n].impact for n in g))
                    for g in groups), key=lambda b: -b.impact)
    members = {b.node: b.nodes for b in items}

    def measure_blocks(names: Sequence[str]) -> tuple[bytes, Score] | None:
        expanded = [n for name in names for n in members[name]]
        if len(expanded) > target.max_float_layers:
            return None          # over the layer budget: not admissible
        return measure(expanded)

    greedy = keep_float_greedily(items, measure_blocks, all_int8, target)
    layers = sorted((by_node[n] for b in greedy.kept for n in b.nodes),
                    key=lambda s: ranking.index(s))
    log.info("accuracy-aware: %d blocks (%d layers) tried as blocks; kept %d blocks, "
             "agreement %.4f", len(items), len(ranking), len(greedy.kept),
             greedy.score.agreement)
    if greedy.score.agreement < target.min_agreement:
        return MixedPrecision(greedy.model_bytes, target, plain, greedy.score, tuple(layers),
                              tuple(ranking), n_used, methods=methods)
    pruned = prune_float_layers(layers, greedy.model_bytes, greedy.score, measure,
                                target.min_agreement, all_int8=all_int8[1])
    return MixedPrecision(pruned.model_bytes, target, plain, pruned.score, pruned.kept,
                          tuple(ranking), n_used, pruned.trials, methods=methods)
