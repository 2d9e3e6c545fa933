"""`edgepack.optimize`: pruning, fine-tuning, distillation and QAT before conversion.

A thin re-export of `edgepack.converters.optimize` (workstation side, needs torch), so users
write `from edgepack import optimize` and `optimize.prune(...)`.
"""
from edgepack.converters.optimize import *  # noqa: F401,F403
from edgepack.converters.optimize import __all__ as _base_all
from edgepack.converters.optimize.config import QATConfig  # noqa: F401
from edgepack.converters.optimize.qat import QATResult, quantization_aware  # noqa: F401

__all__ = [*_base_all, "QATConfig", "QATResult", "quantization_aware"]
