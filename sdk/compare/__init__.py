"""edgepack.compare: one model converted to every target x quantization, measured side by
side (size, peak memory, latency, accuracy), with the best bundle for a device picked.

    from edgepack.compare import CompareConfig, compare, render_html, render_table
    result = compare(model, "digits.npz", CompareConfig(device="rpi4b", max_drop=1.0),
                     work_dir="bundles/")
    print(render_table(result)); result.pick.key

Importing this package imports no framework; conversion imports them when it runs.
"""
from .config import CompareConfig, CompareError, LatencyConfig
from .render_html import render_html
from .render_table import render_table
from .result import CompareResult, Pick, Row
from .runner import compare

__all__ = ["compare", "CompareConfig", "LatencyConfig", "CompareError", "CompareResult",
           "Row", "Pick", "render_table", "render_html"]
