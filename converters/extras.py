"""Which pip extra provides each optional module, and the one error for a missing one.

Every conversion path imports its framework lazily; when one is missing, the user gets one
EngineNotInstalledError naming the module and `pip install 'edgepack[EXTRA]'`, however deep
the import failed (torch.onnx.export importing onnxscript, tf2onnx importing onnx, ...).
"""
from __future__ import annotations

from edgepack.runtime.errors import EngineNotInstalledError

#: top-level module -> the extra of pyproject.toml that installs it
EXTRA_OF = {
    "torch": "convert", "onnxscript": "convert", "onnx": "convert", "tf2onnx": "convert",
    "tensorflow": "convert", "keras": "convert", "tf_keras": "convert",
    "transformers": "convert", "tokenizers": "convert", "onnxruntime": "onnx",
    "ai_edge_litert": "litert", "tflite_runtime": "litert", "PIL": "image",
    "litert_torch": "convert-torch-tflite", "ai_edge_torch": "convert-torch-tflite",
}


def missing_module(error: BaseException | None) -> str | None:
    """The top-level name of the module whose absence caused `error` (walking __cause__ and
    __context__), or None when no ModuleNotFoundError is behind it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ModuleNotFoundError) and error.name:
            return error.name.split(".")[0]
        error = error.__cause__ or error.__context__
    return None


def not_installed(module: str, what: str) -> EngineNotInstalledError:
    """The error for `what` needing the missing `module` (a module no extra provides, e.g.
    one the user's model code imports, is named without an extra)."""
    extra = EXTRA_OF.get(module)
    if extra is None:
        return EngineNotInstalledError(
            f"{what} needs the Python module {module!r}, which is not installed here (no "
            f"edgepack extra provides it; install the package that does)")
    return EngineNotInstalledError(
        f"{what} needs {module}, which is not installed: pip install 'edgepack[{extra}]'")


def raise_if_missing_module(error: BaseException, what: str) -> None:
    """Raise not_installed(...) from `error` when a missing optional module (one an extra
    provides) is behind it; other missing modules (the user's own) keep their error."""
    module = missing_module(error)
    if module in EXTRA_OF:
        raise not_installed(module, what) from error
