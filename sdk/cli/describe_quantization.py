"""The quantization section of `edgepack inspect`: how a bundle was quantized, in a few lines.

Reads the manifest's `quantization` record as the converters write it (mode, recipe,
calibration, graph_prep, fast_paths, kept_float, accuracy_aware, speed). Every key is optional, because
bundles from older converters lack most of them, and a value of the wrong form is shown raw
rather than raised: inspect is what people run when a bundle looks wrong. Stdlib only, so the
CLI stays fast on a device that has nothing but `edgepack[onnx]`.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping

#: Kept-float layers listed one per line; the rest are counted (`--json` lists them all).
MAX_LAYERS = 8
#: Longest layer name shown. TFLite joins the names of fused ops with ";" into one tensor
#: name that runs to hundreds of characters; its first part, tail kept, names the layer.
MAX_NAME = 48
MAX_REASON = 110
MAX_RAW = 90

#: Top-level keys the recipe line already shows once a recipe is recorded.
_RECIPE_FLAGS = ("per_channel", "reduce_range")


def quantization_lines(record: Mapping[str, Any]) -> list[str]:
    """Lines describing a manifest's `quantization` record (empty for None or {})."""
    if not record:
        return []
    lines = guarded_lines("quantization", record, _headline)
    for key, describe in _SECTIONS.items():
        if record.get(key) is not None:
            lines.extend(guarded_lines(key, record[key], describe))
    return lines


def guarded_lines(key: str, value: Any, describe: Callable[[Any], Iterator[str]]) -> list[str]:
    """`describe(value)` as a list of lines, or one line showing `value` raw when it is not
    in the form `describe` expects."""
    # Manifests can be hand-edited or written by another version: a section whose value is
    # not in the expected form is shown raw, and the rest of inspect carries on.
    try:
        return list(describe(value))
    except (TypeError, ValueError, KeyError, AttributeError, IndexError):
        return [f"  {key}: not in the expected form, raw: {_clip(_raw(value), MAX_RAW)}"]


def _headline(record: Mapping[str, Any]) -> Iterator[str]:
    recipe_recorded = isinstance(record.get("recipe"), Mapping)
    flags = []
    for key, value in record.items():
        if key == "mode" or key in _SECTIONS or isinstance(value, (dict, list)) or value is None:
            continue
        if recipe_recorded and key in _RECIPE_FLAGS:
            continue
        flag = _flag(key, value)
        if flag:
            flags.append(flag)
    yield f"quantization: {record.get('mode', '?')}" + (f" ({', '.join(flags)})" if flags else "")


def _flag(key: str, value: Any) -> str | None:
    if key == "per_channel" and isinstance(value, bool):
        return "per-channel" if value else "per-tensor"
    if key == "reduce_range" and isinstance(value, bool):
        return "7-bit weights (reduce_range)" if value else None
    if key == "io":
        return f"{value} I/O"
    return f"{key}={value}"


def _recipe(recipe: Mapping[str, Any]) -> Iterator[str]:
    _expect(recipe, Mapping)
    where = ""
    if recipe.get("engine"):
        where = f" for {recipe['engine']}" + (f" on {recipe['cpu_family']}"
                                              if recipe.get("cpu_family") else "")
    parts = [str(recipe["types"]) if recipe.get("types") else None,
             _flag("per_channel", recipe.get("per_channel")),
             _flag("reduce_range", recipe.get("reduce_range")),
             str(recipe["format"]).upper() if recipe.get("format") else None]
    shown = ", ".join(p for p in parts if p)
    yield f"  recipe: {recipe.get('name', '?')}{where}" + (f": {shown}" if shown else "")


def _calibration(calibration: Mapping[str, Any]) -> Iterator[str]:
    _expect(calibration, Mapping)
    line = f"  calibration: {calibration.get('method', '?')}"
    if calibration.get("samples") is not None:
        line += f", {int(calibration['samples'])} samples"
    if calibration.get("percentile") is not None:
        line += f", percentile {calibration['percentile']}"
    yield line


def _graph_prep(prep: Mapping[str, Any]) -> Iterator[str]:
    _expect(prep, Mapping)
    line = "  graph prep:"
    if prep.get("nodes_before") is not None and prep.get("nodes_after") is not None:
        line += f" {int(prep['nodes_before'])} -> {int(prep['nodes_after'])} nodes"
    if prep.get("batchnorm_fused"):
        line += f", {int(prep['batchnorm_fused'])} BatchNorm fused"
    yield line


def _fast_paths(paths: Mapping[str, Any]) -> Iterator[str]:
    """The exact rewrites for the engine's fast kernels (converters/int8/ort_fast_paths)."""
    _expect(paths, Mapping)
    parts = []
    padded = _expect(paths.get("padded_convs") or [], list)
    if padded:
        parts.append(", ".join(f"{_short_name(str(p['node']))[0]} {int(p['channels'])}->"
                               f"{int(p['padded_to'])} input channels" for p in padded))
    pools = _expect(paths.get("global_pools") or [], list)
    if pools:
        parts.append(f"{len(pools)} mean{'s' if len(pools) != 1 else ''} as int8 global pool")
    yield "  fast paths: " + ("; ".join(parts) if parts else "none")


def _kept_float(entries: list) -> Iterator[str]:
    _expect(entries, list)
    layers = []   # (name, op, reason); a caller's {"nodes": [...]} entry is one layer per node
    for entry in entries:
        _expect(entry, Mapping)
        names = [entry["node"]] if "node" in entry else _expect(entry["nodes"], list)
        layers.extend((str(name), entry.get("op"), entry.get("reason", "")) for name in names)
    if not layers:
        yield "  kept in float: none"
        return
    yield f"  kept in float: {len(layers)} layer{'s' if len(layers) != 1 else ''}"
    shown = layers if len(layers) <= MAX_LAYERS else layers[:MAX_LAYERS - 1]
    for name, op, reason in shown:
        short, fused = _short_name(name)
        notes = ", ".join(n for n in (str(op) if op else "",
                                      f"+{fused} fused names" if fused else "") if n)
        yield (f"    {short}" + (f" ({notes})" if notes else "")
               + (f": {_clip(str(reason), MAX_REASON)}" if reason else ""))
    if len(shown) < len(layers):
        yield f"    … {len(layers) - len(shown)} more (edgepack inspect --json lists them all)"


def _accuracy_aware(result: Mapping[str, Any]) -> Iterator[str]:
    _expect(result, Mapping)
    line = "  accuracy-aware:"
    if result.get("target_agreement") is not None:
        line += f" target top-1 agreement {_fraction(result['target_agreement'])}"
    if result.get("measured_on"):
        line += f" on {result['measured_on']}"
    numbers = [f"{label} {_fraction(result[key])}"
               for key, label in (("agreement_all_int8", "all-int8"), ("agreement", "final"))
               if result.get(key) is not None]
    if numbers:
        line += ": " + " -> ".join(numbers)
    if isinstance(result.get("met"), bool):
        line += ", met" if result["met"] else ", NOT met"
    yield line
    for method in result.get("methods") or []:
        _expect(method, Mapping)
        if method.get("skipped"):
            yield f"    {method.get('method', '?')}: not tried: {method['skipped']}"
            continue
        verdict = "kept" if method.get("kept") else "undone (no better)"
        yield (f"    {method.get('method', '?')}: agreement "
               f"{_fraction(method.get('agreement_before', float('nan')))} -> "
               f"{_fraction(method.get('agreement_after', float('nan')))}, {verdict}")


def _speed(speed: Mapping[str, Any]) -> Iterator[str]:
    _expect(speed, Mapping)
    ratios = [f"x{float(p['ratio']):.2f} at {int(p['threads'])} "
              f"thread{'s' if int(p['threads']) != 1 else ''}"
              for p in _expect(speed.get("points", []), list)]
    verdict = {True: "yes", False: "NO"}.get(speed.get("faster_than_fp32"), "?")
    host = speed.get("host") or "the converting host"
    engine = f" with {speed['engine']}" if speed.get("engine") else ""
    yield ("  speed: " + (f"int8/fp32 {', '.join(ratios)}; " if ratios else "")
           + f"faster than fp32{engine} on {host}: {verdict}")
    # The speed check runs where the bundle was converted; say so, the device may differ.
    yield f"    {speed.get('note') or 'measured on the converting host, not on the device'}"


_SECTIONS: dict[str, Callable[[Any], Iterator[str]]] = {
    "recipe": _recipe, "calibration": _calibration, "graph_prep": _graph_prep,
    "fast_paths": _fast_paths, "kept_float": _kept_float, "accuracy_aware": _accuracy_aware, "speed": _speed,
}


def _expect(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _fraction(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("a fraction, not a boolean")
    return f"{float(value):.4f}"


def _short_name(name: str) -> tuple[str, int]:
    """The name to show and how many fused names TFLite joined after it with ";"."""
    first, _, fused = name.partition(";")
    first = first if len(first) <= MAX_NAME else "…" + first[-(MAX_NAME - 1):]
    return first, fused.count(";") + 1 if fused else 0


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _raw(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):   # e.g. a circular structure: repr never fails
        return repr(value)
