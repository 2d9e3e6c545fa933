"""edgepack.runtime: load, verify and run edgepack bundles (numpy + one engine, nothing else).

    from edgepack.runtime import load
    with load("digits.edgepack") as model:
        model.predict(image)        # manifest preprocessing -> engine -> postprocessing
        model.run({"x": tensor})    # raw tensors in and out
"""
from .bundle import Bundle, BundleLimits, read_bundle, write_bundle
from .errors import EdgepackError
from .manifest import Manifest
from .model import Model, load
from .ops import apply_steps, hook
from .pack import pack_bundle
from .specs import QuantParams, TensorSpec

__all__ = ["load", "Model", "read_bundle", "write_bundle", "pack_bundle", "Bundle",
           "BundleLimits", "Manifest", "TensorSpec", "QuantParams", "hook", "apply_steps",
           "EdgepackError"]
