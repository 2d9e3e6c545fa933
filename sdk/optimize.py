"""`edgepack.optimize`: pruning, fine-tuning and distillation before conversion.

A thin re-export of `edgepack.converters.optimize` (workstation side, needs torch), so users
write `from edgepack import optimize` and `optimize.prune(...)`.
"""
from edgepack.converters.optimize import *  # noqa: F401,F403
from edgepack.converters.optimize import __all__  # noqa: F401
