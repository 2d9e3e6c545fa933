"""The comparison as one self-contained HTML file: table, pick, and three inline SVG charts.

No scripts, no external fonts or stylesheets: the file opens the same offline, attached to
an issue or on a board with no network.
"""
from __future__ import annotations

from html import escape

from . import svg
from .accuracy import ERROR_EDGES
from .render_table import _on_device
from .result import FAILED, CompareResult

CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #ddd}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.best{font-weight:bold;background:#e8f5e9}.failed{color:#999}.over{color:#b35900}
.pick{background:#fff8c4}.charts{display:flex;flex-wrap:wrap;gap:8px}
.note{font-size:13px;margin:2px 0}h2{margin-top:28px}
"""


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(result: CompareResult) -> str:
    best = result.best()
    head = ("bundle", "status", "file KB", "model KB", "peak MB", "model MB", "p50 ms",
            "p99 ms", "accuracy %", "agreement %", "drop pt", "check", "reason / notes")
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in result.rows:
        cls = {"failed": "failed", "over-budget": "over"}.get(r.status, "")
        if r.key == result.pick.key:
            cls += " pick"
        acc, lat, mem = r.accuracy, r.latency, r.memory
        marks = {"fastest": 6, "smallest": 2, "most_accurate": 10}
        cells = [r.key, r.status,
                 _num(r.bundle_bytes / 1024 if r.bundle_bytes else None, ".1f"),
                 _num(r.model_bytes / 1024 if r.model_bytes else None, ".1f"),
                 _num(mem.peak_mb if mem else None, ".1f"),
                 _num(mem.model_mb if mem else None, ".1f"),
                 _num(lat.p50_ms if lat else None, ".3f"), _num(lat.p99_ms if lat else None, ".3f"),
                 _num(acc.accuracy * 100 if acc and acc.accuracy is not None else None, ".2f"),
                 _num(acc.top1_agreement * 100 if acc and acc.top1_agreement is not None
                      else None, ".2f"),
                 _num(acc.drop_points if acc else None, ".2f"),
                 "-" if r.check is None else ("ok" if r.check["ok"] else "refused"),
                 "; ".join(([r.reason] if r.reason else []) + list(r.notes)
                           + ([f"check: {e}" for e in r.check["errors"]] if r.check else []))]
        tds = []
        for i, cell in enumerate(cells):
            classes = ["num"] if 2 <= i <= 10 else []
            if any(best[title] == r.key and col == i for title, col in marks.items()):
                classes.append("best")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{attr}>{escape(str(cell))}</td>")
        lines.append(f'<tr class="{cls.strip()}">' + "".join(tds) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def render_html(result: CompareResult, title: str | None = None) -> str:
    """The whole report as one HTML string."""
    title = title or f"edgepack compare: {result.model}"
    measured = [r for r in result.rows if r.measured]
    timed = [(r.key, r.latency.times_ms) for r in measured if r.latency]
    use_acc = result.metric == "accuracy"
    points = []
    for r in measured:
        if r.latency and r.accuracy:
            value = r.accuracy.accuracy if use_acc else r.accuracy.top1_agreement
            if value is not None:
                points.append((r.key, r.latency.p50_ms, value * 100, r.key == result.pick.key))
    budget = None
    if use_acc and result.source_accuracy is not None:
        budget = result.source_accuracy * 100 - result.max_drop
    elif not use_acc:
        budget = 100.0 - result.max_drop
    histograms = [svg.error_histogram(f"{r.key} · {o.name}", o.zero, o.histogram,
                                      list(ERROR_EDGES))
                  for r in measured if r.accuracy for o in r.accuracy.outputs]
    pick = result.pick
    notes = []
    for r in result.rows:
        if r.status == FAILED:
            notes.append(f"<b>{escape(r.key)}</b> failed: {escape(r.reason)}")
        if r.slower_than_fp32:
            notes.append(f"<b>{escape(r.key)}</b>: quantization made this model "
                         f"{r.slower_than_fp32:.2f}x slower than fp32 on this host; not picked.")
        if r.on_device:
            notes.append(f"<b>{escape(r.key)}</b> on {escape(result.device or '')} "
                         f"(emulated, accuracy only): {escape(_on_device(r.on_device))}")
    notes += [escape(n) for n in result.notes]
    src = (f"source accuracy {result.source_accuracy * 100:.2f}%; "
           if result.source_accuracy is not None else "")
    metric = "accuracy" if use_acc else "top-1 agreement with the source"
    host = result.host
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{result.held_out} held-out samples ({result.calibration} calibrate int8); {src}"
        f"budget: {escape(metric)} drop &le; {result.max_drop:g} points. Latency measured on "
        f"this {escape(str(host.get('machine')))} host ({host.get('cpus')} cpus), "
        f"threads={result.threads or 'engine default'}, {result.latency_runs} interleaved "
        f"batch-1 runs per bundle: host latency, not "
        f"{escape(result.device or 'device')} latency. Peak memory: a fresh process per "
        f"bundle (model MB = peak minus the engine loaded without a model).</p>",
        f'<p class="pick"><b>Pick{" for " + escape(result.device) if result.device else ""}'
        f':</b> {escape(pick.key or "none")} — {escape(pick.reason)}</p>',
        _table(result),
        "<p class='note'>Highlighted: fastest p50, smallest file, most accurate.</p>",
        "".join(f"<p class='note'>{n}</p>" for n in notes),
        "<h2>Latency distribution per bundle</h2>", svg.latency_distribution(timed),
        f"<h2>{'Accuracy' if use_acc else 'Top-1 agreement'} vs latency</h2>",
        svg.accuracy_scatter(points, budget, f"{'accuracy' if use_acc else 'agreement'} %"),
        "<h2>Per-output error against the source</h2>",
        f'<div class="charts">{"".join(histograms)}</div>',
        "<h2>Why not the others</h2><ul>",
        "".join(f"<li><b>{escape(k)}</b>: {escape(w)}</li>" for k, w in pick.rejected),
        "</ul></body></html>",
    ]
    return "\n".join(parts)


