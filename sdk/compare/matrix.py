"""Convert one source into every (target, mode) of the matrix; a failure is a row, not a crash."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgepack.runtime.errors import EdgepackError, EngineNotInstalledError, ValidationError

from .config import CompareConfig
from .data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """The outcome of converting one combination.

    path is None when the conversion failed; `reason` then says why and `kind` classifies
    it ("missing-dependency", "validation", "conversion", "unexpected").
    validation: the converter's own validation record (its tolerance misses are notes:
        the comparison judges bundles by its own accuracy budget).
    """

    target: str
    mode: str
    path: Path | None = None
    reason: str = ""
    kind: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.target}/{self.mode}"

    @property
    def ok(self) -> bool:
        return self.path is not None


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def convert_matrix(dataset: Dataset, config: CompareConfig, work_dir: Path,
                   progress: Callable[[str], None] | None = None) -> list[Candidate]:
    """Convert `dataset.source` to every combination of `config`, writing bundles in work_dir.

    Each bundle is converted with the converters' public API, validated on the same held-out
    samples the comparison measures on, and kept even when outside the converter's default
    tolerance (accept=True) so that it can be measured and shown; broken outputs (inf/NaN,
    constant) still fail. Returns one Candidate per combination, in matrix order.
    """
    import time

    from edgepack.converters import (ConversionConfig, QuantizationConfig, Tolerances,
                                     convert_model)
    from edgepack.converters.calibration import Samples

    held = dataset.held_out
    candidates = []
    for target, mode in config.combinations:
        if progress:
            progress(f"converting {target}/{mode} ...")
        start = time.perf_counter()
        out = work_dir / f"{config.name}-{target}-{mode}.edgepack"
        try:
            # Converted *for* the device: its int8 recipe applies and combinations it
            # cannot run are refused here, as a row with the reason. The converter's own
            # int8-vs-fp32 timing is skipped: this comparison measures every bundle itself.
            conversion = ConversionConfig(
                target=target, name=f"{config.name}-{target}-{mode}",
                quantization=QuantizationConfig(mode=mode, speed_check=False),
                tolerances=Tolerances.for_mode(mode, max_drop=config.max_drop),
                accept=True, validation_samples=len(held), device=config.device,
                labels=config.class_names, task=dict(config.task) if config.task else None,
                decode=[dict(step) for step in config.decode] or None)
            result = convert_model(
                dataset.source, out, conversion,
                calibration_data=dataset.calibration if mode == "int8" else None,
                validation_data=Samples(dict(held.arrays), held.labels))
            candidates.append(Candidate(target, mode, Path(result.path),
                                        validation=dict(result.validation),
                                        seconds=time.perf_counter() - start))
            continue
        except EngineNotInstalledError as e:
            kind, reason = "missing-dependency", _one_line(e)
        except ValidationError as e:
            kind, reason = "validation", _one_line(e)
        except EdgepackError as e:
            kind, reason = "conversion", _one_line(e)
        except Exception as e:  # noqa: BLE001 - one combination must never end the comparison
            kind, reason = "unexpected", f"{type(e).__name__}: {_one_line(e)}"
            log.debug("%s/%s failed unexpectedly", target, mode, exc_info=True)
        log.info("%s/%s failed (%s): %s", target, mode, kind, reason)
        candidates.append(Candidate(target, mode, reason=reason, kind=kind,
                                    seconds=time.perf_counter() - start))
    return candidates
