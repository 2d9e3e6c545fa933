"""Labels must match the model's class dimension (pack, verify and convert --labels)."""
from __future__ import annotations

from typing import Sequence

from edgepack.runtime.errors import InputError
from edgepack.runtime.specs import TensorSpec, format_shape


def check_labels(labels: Sequence[str] | None, outputs: Sequence[TensorSpec],
                 where: str) -> None:
    """Refuse labels whose count does not match the class dimension: when every output has
    a static last dimension, one of them must be len(labels) (classes)."""
    if not labels:
        return
    last = [s.shape[-1] for s in outputs if s.shape]
    if not last or any(d <= 0 for d in last):
        return  # a dynamic class dimension: nothing to check against
    if len(labels) not in last:
        dims = ", ".join(f"{s.name} {format_shape(s.shape)}" for s in outputs)
        raise InputError(f"{where}: {len(labels)} labels, but the model's outputs have "
                         f"{' or '.join(map(str, sorted(set(last))))} classes ({dims}); "
                         "give one label per class, in class order")
