"""PyTorch sources: live modules, exported programs (.pt2) and TorchScript files."""
from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .artifacts import SourceModel
from .sources import check_example_fits

log = logging.getLogger(__name__)


def load_torch_file(path: Path) -> Any:
    """An ExportedProgram from .pt2, else a TorchScript module; a pickled module is refused."""
    import torch
    if path.suffix.lower() == ".pt2":
        try:
            return torch.export.load(str(path))
        except Exception as e:
            raise ConversionError(f"cannot load exported program {path}: {e}") from e
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        # A plain torch.save() of a module or state dict needs the class definition, and
        # unpickling arbitrary files runs code: ask for module:factory + weights instead.
        raise ConversionError(
            f"{path} is not a TorchScript file ({str(e).splitlines()[0]}); save with "
            "torch.export.save (.pt2) or torch.jit.save, or pass 'module:factory' and "
            "--weights state_dict.pt") from e


def torch_source(model: Any, examples: tuple[np.ndarray, ...] | None,
                 origin: str | None = None) -> SourceModel:
    """Wrap a torch model; `examples` default to the exported program's own example shapes."""
    import torch

    exported = isinstance(model, torch.export.ExportedProgram)
    fixed_batch = None
    if exported:
        callable_model = model.module()
        names = _exported_input_names(model)
        fixed_batch = exported_fixed_batch(model)
        if examples is None:
            examples = _exported_examples(model)
        elif fixed_batch is not None and len(examples[0]) != fixed_batch:
            # The program only runs at its exported batch: examples of one row are repeated.
            examples = tuple(np.repeat(x[:1], fixed_batch, axis=0) for x in examples)
    else:
        if not isinstance(model, torch.nn.Module):
            raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}")
        _eval_mode(model)
        callable_model = model
        names = _forward_input_names(model)
    if examples is None:
        raise ConversionError(
            "a PyTorch model needs example inputs to fix its input shapes; pass "
            "example_inputs=(tensor,) or --input-shape 1,3,224,224")
    if names is None or len(names) != len(examples):
        names = tuple("input" if len(examples) == 1 else f"input_{i}"
                      for i in range(len(examples)))
    examples = tuple(np.ascontiguousarray(x, dtype=np.float32) if x.dtype.kind == "f" else x
                     for x in examples)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
        with torch.inference_mode(), quiet_torch():
            out = callable_model(*tensors)
        return [t.detach().float().numpy() for t in flatten_outputs(out)]

    outputs = check_example_fits(
        run, examples, "pass example inputs shaped like one batch the model accepts "
        "(batch axis first, NCHW for images)")
    out_names = tuple("output" if len(outputs) == 1 else f"output_{i}"
                      for i in range(len(outputs)))
    layouts = tuple("NCHW" if x.ndim == 4 else None for x in examples)
    return SourceModel("pytorch", model, names, examples, layouts, run, torch.__version__,
                       out_names, origin, fixed_batch)


def exported_fixed_batch(program: Any) -> int | None:
    """The batch an ExportedProgram is specialized to (an int first dim of its first user
    input), or None when that dim is symbolic. torch.export specializes every dim whose
    example size is 1, so a program exported with a batch-1 example runs at batch 1 only."""
    user_inputs = set(_exported_input_names(program) or ())
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if not shape:
                return None
            return shape[0] if isinstance(shape[0], int) else None
    return None


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """torch's own log lines (guard failures, exporter warnings such as "torchvision is not
    installed") go nowhere while edgepack drives torch, unless edgepack logs at DEBUG
    (--debug): the user sees edgepack's one-line errors and notes instead."""
    torch_log = logging.getLogger("torch")
    if logging.getLogger("edgepack").isEnabledFor(logging.DEBUG):
        yield
        return
    previous = torch_log.level
    torch_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        torch_log.setLevel(previous)


def flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a (possibly nested) tuple/list/dict output, in a stable order."""
    if isinstance(out, dict):
        return [t for key in out for t in flatten_outputs(out[key])]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten_outputs(item)]
    return [out]


def _forward_input_names(model: Any) -> tuple[str, ...] | None:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = tuple(p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return names or None


def _exported_input_names(program: Any) -> tuple[str, ...] | None:
    try:
        specs = program.graph_signature.user_inputs
        return tuple(str(s) for s in specs)
    except AttributeError:
        return None


def _exported_examples(program: Any) -> tuple[np.ndarray, ...] | None:
    """Zero arrays shaped like the program's user inputs (symbolic dims become 1)."""
    user_inputs = set(_exported_input_names(program) or ())
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if value is None:
                return None
            shapes.append([d if isinstance(d, int) else 1 for d in value.shape])
    if not shapes:
        return None
    return tuple(np.zeros(s, dtype=np.float32) for s in shapes)


def _eval_mode(model) -> None:
    """Export and validation must see inference behaviour (dropout, BatchNorm statistics).

    `ExportedProgram.module()` returns a module whose `eval()` raises NotImplementedError:
    such a module was traced in the mode it was exported in, so there is nothing to switch.
    """
    try:
        model.eval()
    except NotImplementedError:
        pass
