"""edgepack: turn trained models into verified edge bundles, and run them.

The device runtime is `edgepack.runtime`; workstation tools are imported on first use so
that `import edgepack` stays as light as the runtime.
"""
from edgepack.runtime import EdgepackError, load, pack_bundle, read_bundle

__version__ = "0.1.0"
__all__ = ["load", "read_bundle", "pack_bundle", "convert", "EdgepackError", "__version__"]


def __getattr__(name: str):
    # Heavy, workstation-only parts load lazily (PEP 562).
    if name == "convert":
        from edgepack.conversion import convert
        return convert
    if name == "optimize":
        import importlib
        return importlib.import_module("edgepack.optimize")
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
