"""The report's three charts as inline SVG strings (no plotting library needed).

Charts take plain numbers, not result objects, so each is testable on its own.
"""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
FONT = 'font-family="sans-serif"'


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "",
          size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} '
            f'font-size="{size}" {extra}>{escape(text)}</text>')


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step) + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks inside [low, high] (low > 0), for a log axis."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0 ** exponent
            if low <= value <= high:
                ticks.append(value)
    return ticks


def latency_distribution(series: Sequence[tuple[str, Sequence[float]]], width: int = 760,
                         band: int = 34, bins: int = 60) -> str:
    """Per bundle: a histogram strip of its run times, the median (thick tick) and p99 (dashed).

    series: (label, times in ms) per bundle, drawn top to bottom on one shared logarithmic
    x axis: run times on a shared machine have tails 100x the median, which a linear axis
    would turn into one squashed bar per bundle.
    """
    left, right, top = 110, 20, 10
    series = [(label, np.asarray(t, dtype=float)) for label, t in series]
    series = [(label, t[t > 0]) for label, t in series if np.any(t > 0)]
    if not series:
        return _svg(width, 40, [_text(10, 24, "no bundle was timed")], "latency")
    height = top + band * len(series) + 36
    all_times = np.concatenate([t for _, t in series])
    low, high = float(all_times.min()) / 1.1, float(all_times.max()) * 1.1
    log_low, log_span = math.log10(low), max(math.log10(high) - math.log10(low), 1e-9)
    plot_w = width - left - right

    def x(value: float) -> float:
        return left + (math.log10(max(value, low)) - log_low) / log_span * plot_w

    body = []
    edges = np.logspace(log_low, log_low + log_span, bins + 1)
    for i, (label, t) in enumerate(series):
        base = top + band * (i + 1) - 6
        counts, _ = np.histogram(t, edges)
        peak = max(int(counts.max()), 1)
        color = PALETTE[i % len(PALETTE)]
        body.append(_text(left - 6, base - 8, label, "end"))
        for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
            if c:
                h = max((band - 10) * c / peak, 1.0)
                body.append(f'<rect x="{x(e0):.1f}" y="{base - h:.1f}" width="'
                            f'{max(x(e1) - x(e0) - 0.5, 0.5):.1f}" height="{h:.1f}" '
                            f'fill="{color}" fill-opacity="0.6"/>')
        p50, p99 = np.percentile(t, 50), np.percentile(t, 99)
        body.append(f'<line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{base - band + 8}" '
                    f'y2="{base + 2}" stroke="#000" stroke-width="2.5"/>')
        body.append(f'<line x1="{x(p99):.1f}" x2="{x(p99):.1f}" y1="{base - band + 8}" '
                    f'y2="{base + 2}" stroke="#000" stroke-width="1" stroke-dasharray="3,2"/>')
    axis_y = top + band * len(series)
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" '
                f'stroke="#444"/>')
    for tick in log_ticks(low, high):
        body.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{axis_y}" '
                    f'y2="{axis_y + 4}" stroke="#444"/>')
        body.append(_text(x(tick), axis_y + 16, f"{tick:g}", "middle"))
    body.append(_text(left + plot_w / 2, axis_y + 31, f"ms per run, batch 1, log scale; "
                      f"thick: p50, dashed: p99; {len(all_times)} runs", "middle"))
    return _svg(width, height, body, "latency distribution per bundle")


def accuracy_scatter(points: Sequence[tuple[str, float, float, bool]], budget: float | None,
                     y_label: str, width: int = 760, height: int = 340) -> str:
    """Accuracy (y, %) against p50 latency (x, ms) per bundle, with the budget line.

    points: (label, p50 ms, accuracy %, picked). budget: the lowest acceptable accuracy %.
    """
    left, right, top, bottom = 56, 230, 14, 42
    if not points:
        return _svg(width, 40, [_text(10, 24, "no bundle was measured")], "accuracy vs latency")
    xs = [p[1] for p in points]
    ys = [p[2] for p in points] + ([budget] if budget is not None else [])
    x_low, x_high = 0.0, max(xs) * 1.15
    y_low, y_high = min(ys), max(ys)
    pad = max((y_high - y_low) * 0.15, 0.5)
    y_low, y_high = y_low - pad, min(y_high + pad, 100.0 + pad)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(v):
        return left + (v - x_low) / max(x_high - x_low, 1e-12) * plot_w

    def py(v):
        return top + (1 - (v - y_low) / max(y_high - y_low, 1e-12)) * plot_h

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
            f'stroke="#444"/>']
    for tick in nice_ticks(x_low, x_high):
        body.append(_text(px(tick), top + plot_h + 15, f"{tick:g}", "middle"))
    for tick in nice_ticks(y_low, y_high, 4):
        body.append(_text(left - 5, py(tick) + 4, f"{tick:g}", "end"))
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" '
                    f'y2="{py(tick):.1f}" stroke="#ddd"/>')
    if budget is not None:
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(budget):.1f}" '
                    f'y2="{py(budget):.1f}" stroke="#d62728" stroke-dasharray="6,3"/>')
        body.append(_text(left + plot_w - 4, py(budget) - 4, f"budget {budget:.2f}%", "end",
                          'fill="#d62728"'))
    for i, (label, lat, acc, picked) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<circle cx="{px(lat):.1f}" cy="{py(acc):.1f}" r="5" fill="{color}"/>')
        if picked:
            body.append(f'<circle cx="{px(lat):.1f}" cy="{py(acc):.1f}" r="9" fill="none" '
                        f'stroke="#000" stroke-width="1.5"/>')
        # Points often coincide (same accuracy): numbers on the points, names in a legend.
        body.append(_text(px(lat) + 7, py(acc) - 6 - 10 * (i % 3), str(i + 1), size=10))
        legend_y = top + 12 + 16 * i
        body.append(f'<circle cx="{width - right + 16}" cy="{legend_y - 4}" r="5" '
                    f'fill="{color}"/>')
        body.append(_text(width - right + 26, legend_y,
                          f"{i + 1} {label}: {lat:.3f} ms, {acc:.2f}%"
                          + ("  (pick)" if picked else "")))
    body.append(_text(left + plot_w / 2, height - 6, "p50 latency, ms (lower is better)",
                      "middle"))
    body.append(_text(14, top + plot_h / 2, y_label, "middle",
                      f'transform="rotate(-90 14 {top + plot_h / 2:.1f})"'))
    return _svg(width, height, body, "accuracy vs latency")


def error_histogram(label: str, zero: int, counts: Sequence[int], edges: Sequence[float],
                    width: int = 250, height: int = 120) -> str:
    """|bundle - source| of one output: an exact-zero bar, then one bar per decade."""
    left, top, bottom = 8, 18, 30
    bars = [("0", zero), (f"<{edges[0]:.0e}", counts[0])]
    bars += [(f"{e:.0e}", c) for e, c in zip(edges[:-1], counts[1:-1])]
    bars.append((f">={edges[-1]:.0e}", counts[-1]))
    total = max(sum(c for _, c in bars), 1)
    peak = max(max(c for _, c in bars), 1)
    bar_w = (width - 2 * left) / len(bars)
    plot_h = height - top - bottom
    body = [_text(width / 2, 12, label, "middle", 'font-weight="bold"')]
    for i, (name, count) in enumerate(bars):
        h = plot_h * count / peak
        x = left + i * bar_w
        body.append(f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                    f'height="{h:.1f}" fill="{"#2ca02c" if i == 0 else "#1f77b4"}">'
                    f'<title>{escape(name)}: {count} ({100 * count / total:.1f}%)</title></rect>')
        if i % 3 == 0:
            body.append(_text(x + bar_w / 2, height - bottom + 12, name, "middle", size=8))
    body.append(_text(width / 2, height - 4, "|bundle - source| per element (log bins)",
                      "middle", size=9))
    return _svg(width, height, body, f"error histogram {label}")
