"""Choosing the bundle to ship: the fastest one inside the accuracy budget that the device
accepts, and never a quantized bundle that turned out slower than fp32 here."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from .latency import Latency
from .result import FAILED, OK, OVER_BUDGET, Pick, Row


#: A quantized bundle counts as slower than fp32 only when its block median was higher in
#: at least this fraction of the interleaved rounds (a sign test: 9 of 10 rounds has
#: p < 0.011 under "equally fast"), so run-to-run noise is not reported as a finding.
SLOWER_ROUNDS = 0.9


def is_slower(candidate: Latency, fp32: Latency) -> bool:
    """True when `candidate` is consistently slower than `fp32` across the rounds."""
    if candidate.p50_ms <= fp32.p50_ms:
        return False
    pairs = list(zip(candidate.round_medians_ms, fp32.round_medians_ms))
    if not pairs:
        return True
    slower = sum(1 for c, f in pairs if c > f)
    return slower >= SLOWER_ROUNDS * len(pairs)


def mark_slower_than_fp32(rows: Sequence[Row]) -> list[Row]:
    """Flag quantized rows consistently slower than the fp32 (`none`) row of their target.

    Quantization is meant to buy speed; on some CPUs (no int8 dot-product instructions,
    small layers dominated by quantize/dequantize nodes) it costs speed instead. That is a
    finding to state, not a bundle to ship.
    """
    fp32 = {r.target: r.latency for r in rows if r.mode == "none" and r.latency is not None}
    out = []
    for row in rows:
        base = fp32.get(row.target)
        if row.mode != "none" and row.latency is not None and base is not None and \
                is_slower(row.latency, base):
            ratio = row.latency.p50_ms / base.p50_ms
            base = base.p50_ms
            row = replace(row, slower_than_fp32=ratio, notes=row.notes + (
                f"quantization made this model slower than fp32 here: p50 "
                f"{row.latency.p50_ms:.3f} ms vs {base:.3f} ms ({ratio:.2f}x)",))
        out.append(row)
    return out


def within_budget(drop_points: float | None, max_drop: float) -> bool:
    """True when the measured drop is at most the budget (an unknown drop is not)."""
    return drop_points is not None and drop_points <= max_drop + 1e-9


def choose(rows: Sequence[Row], device: str | None) -> Pick:
    """The fastest (lowest p50; then p99, then smaller file) acceptable row.

    Acceptable: measured, within budget, `check` passed for `device` (when given), and not
    a quantized bundle slower than fp32. Every other row is listed with the reason.
    """
    rejected: list[tuple[str, str]] = []
    eligible: list[Row] = []
    for row in rows:
        if row.status == FAILED:
            rejected.append((row.key, f"conversion failed: {row.reason}"))
        elif row.status == OVER_BUDGET:
            rejected.append((row.key, row.reason))
        elif row.latency is None:
            rejected.append((row.key, "latency could not be measured"))
        elif device and (row.check is None or not row.check.get("ok")):
            errors = "; ".join((row.check or {}).get("errors", [])) or "check did not run"
            rejected.append((row.key, f"edgepack check refuses it for {device}: {errors}"))
        elif row.slower_than_fp32 is not None:
            rejected.append((row.key, f"quantized but {row.slower_than_fp32:.2f}x slower "
                                      f"than fp32 here"))
        else:
            eligible.append(row)
    if not eligible:
        return Pick(None, None, "no bundle is within the accuracy budget, accepted by the "
                                "device check and not slower than fp32", tuple(rejected))
    best = min(eligible, key=lambda r: (r.latency.p50_ms, r.latency.p99_ms,
                                        r.bundle_bytes or 0))
    for row in eligible:
        if row is not best:
            rejected.append((row.key, f"slower: p50 {row.latency.p50_ms:.3f} ms vs "
                                      f"{best.latency.p50_ms:.3f} ms"))
    drop = best.accuracy.drop_points if best.accuracy else None
    why = (f"fastest bundle within the budget: p50 {best.latency.p50_ms:.3f} ms, "
           f"drop {drop:.2f} points" if drop is not None else
           f"fastest bundle: p50 {best.latency.p50_ms:.3f} ms")
    if device:
        why += f", accepted by edgepack check for {device}"
    order = {r.key: i for i, r in enumerate(rows)}
    return Pick(best.key, best.path, why, tuple(sorted(rejected, key=lambda kv: order[kv[0]])))


def status_for(drop_points: float | None, max_drop: float, metric: str) -> tuple[str, str]:
    """(status, reason) of a measured row from its accuracy drop."""
    if drop_points is None:
        return OVER_BUDGET, "no class-score output: the accuracy budget cannot be checked"
    if within_budget(drop_points, max_drop):
        return OK, ""
    return OVER_BUDGET, (f"{metric} drop {drop_points:.2f} points > budget {max_drop:g}")
