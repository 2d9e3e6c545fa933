"""Errors raised by model optimization (pruning, fine-tuning, distillation).

They derive from `ConversionError` because optimization is the first step of a conversion on
the workstation; the CLI maps every `EdgepackError` to one line and an exit code.
"""
from __future__ import annotations

from edgepack.runtime.errors import ConversionError


class OptimizeError(ConversionError):
    """An optimization request is impossible or its inputs are invalid."""


class UnknownLayerError(OptimizeError):
    """A layer name given by the user does not name a prunable layer of the model."""


class UnrewritableLayerError(OptimizeError):
    """Structured pruning cannot rewrite the consumers of one or more layers.

    `problems` maps each layer name to the reason (which consumer, and why).
    """

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        lines = [f"'{name}': {why}" for name, why in self.problems.items()]
        names = ", ".join(repr(n) for n in self.problems)
        super().__init__(
            "cannot prune " + "; ".join(lines)
            + f". Leave these layers out with exclude=({names},) or restructure the model."
        )
