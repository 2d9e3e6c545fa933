"""The comparison as a plain-text table (the CLI adds colour through `style`)."""
from __future__ import annotations

from typing import Callable

from .result import FAILED, CompareResult, Row

Style = Callable[[str, str], str]   # (text, role) -> text; roles: best, bad, pick, head


def _plain(text: str, role: str) -> str:
    return text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _agreement(acc) -> float | None:
    """Top-1 agreement, or a detect bundle's detection agreement (same column)."""
    if acc is None:
        return None
    return acc.detection["agreement"] if acc.detection is not None else acc.top1_agreement


def _cells(row: Row) -> list[str]:
    if row.status == FAILED:
        return [row.key, "failed", "-", "-", "-", "-", "-", "-", "-", "-", "-"]
    acc, lat, mem = row.accuracy, row.latency, row.memory
    check = "-" if row.check is None else ("ok" if row.check["ok"] else "REFUSED")
    return [row.key, row.status,
            f"{row.bundle_bytes / 1024:.1f}", f"{mem.peak_mb:.1f}" if mem else "-",
            f"{mem.model_mb:.1f}" if mem else "-",
            f"{lat.p50_ms:.3f}" if lat else "-", f"{lat.p99_ms:.3f}" if lat else "-",
            _pct(acc.accuracy if acc else None), _pct(_agreement(acc)),
            "-" if acc is None or acc.drop_points is None else f"{acc.drop_points:.2f}",
            check]


HEADER = ["bundle", "status", "file KB", "peak MB", "model MB", "p50 ms", "p99 ms", "acc %",
          "agree %", "drop pt", "check"]
#: Which column each "best" title highlights.
BEST_COLUMN = {"fastest": 5, "smallest": 2, "most_accurate": 9}


def render_table(result: CompareResult, style: Style = _plain) -> str:
    """Table of all rows (best values marked with *), then failures, notes and the pick."""
    best = result.best()
    rows = [HEADER] + [_cells(r) for r in result.rows]
    for title, column in BEST_COLUMN.items():
        for r, cells in zip(result.rows, rows[1:]):
            if r.key == best[title]:
                cells[column] += "*"
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(cells: list[str], row: Row | None) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            text = cell.ljust(width) if i < 2 else cell.rjust(width)
            if row is None:
                text = style(text, "head")
            elif cell.endswith("*"):
                text = style(text, "best")
            elif i == 1 and cell != "ok":
                text = style(text, "bad")
            elif i == 0 and row.key == result.pick.key:
                text = style(text, "pick")
            parts.append(text)
        return "  ".join(parts)

    out = [line(rows[0], None)] + [line(c, r) for c, r in zip(rows[1:], result.rows)]
    metric = {"accuracy": "accuracy", "detection_agreement": "detection agreement with the "
              "source (min of recall, precision at IoU >= 0.5)"}.get(
                  result.metric, "top-1 agreement with the source")
    source = (f"source accuracy {result.source_accuracy * 100:.2f}%, "
              if result.source_accuracy is not None else "")
    out.append("")
    out.append(f"* fastest (p50) / smallest (file) / most accurate.  {source}budget: "
               f"{metric} drop <= {result.max_drop:g} points on {result.held_out} held-out "
               f"samples.")
    where = f"{result.host['machine']} host, {result.host['cpus']} cpus"
    out.append(f"latency: this {where}, threads={result.threads or 'engine default'}, "
               f"{result.latency_runs} interleaved runs per bundle, batch 1 (host latency, "
               f"not {result.device or 'device'} latency).")
    for row in result.rows:
        if row.status != "ok" and row.reason:
            out.append(style(f"{row.key}: {row.reason}", "bad"))
        for note in row.notes:
            out.append(f"{row.key}: {note}")
        if row.check and row.check["errors"]:
            out.append(f"{row.key}: check refuses: {'; '.join(row.check['errors'])}")
        if row.on_device:
            out.append(f"{row.key}: on {result.device} (emulated): " + _on_device(row.on_device))
    for note in result.notes:
        out.append(f"note: {note}")
    pick = result.pick
    out.append(style(f"pick: {pick.key} — {pick.reason}" if pick.key else
                     f"pick: none — {pick.reason}", "pick" if pick.key else "bad"))
    return "\n".join(out)


def _on_device(info: dict) -> str:
    if "error" in info:
        return f"could not run: {info['error']}"
    # Measured, not by rule: an int8 model's float output checked to 1 ulp may still be
    # bit-exact.
    verdict = ("MISMATCH" if not info["ok"] else "bit-exact" if info["max_abs"] == 0.0
               else "within 1 ulp" if info["rule"] == "ulp" else "within tolerance")
    return (f"{verdict} vs host on {info['samples']} samples (max |diff| "
            f"{info['max_abs']:.3g}, {info['mismatches']} elements off, {info['device_engine']})")
