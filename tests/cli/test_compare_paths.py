"""`compare --json` reports only paths that exist after it returns (issue 12 item 23: the
pick's path pointed into a temporary directory deleted on exit)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cli_helpers import invoke

ARGS = ("--targets", "onnx", "--modes", "none,fp16", "--json", "--no-memory", "--rounds", "1",
        "--block", "2")


def run_compare(*extra):
    np.save("d.npy", np.random.default_rng(0).standard_normal((20, 3, 8, 8)).astype(np.float32))
    result = invoke("compare", "m.onnx", "--data", "d.npy", *ARGS, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_no_pick_no_keep_reports_no_dead_paths(cli_files):
    data = run_compare()
    assert data["pick"]["key"] is not None and data["pick"]["path"] is None
    assert [r["path"] for r in data["rows"]] == [None, None]


def test_pick_path_is_the_copy(cli_files):
    data = run_compare("--pick", "chosen.edgepack")
    assert data["pick"]["path"] == "chosen.edgepack" and Path("chosen.edgepack").is_file()


def test_keep_reports_the_kept_bundles(cli_files):
    data = run_compare("--keep", "kept")
    paths = [Path(r["path"]) for r in data["rows"]] + [Path(data["pick"]["path"])]
    assert all(p.exists() and p.parent.name == "kept" for p in paths)


def test_library_compare_without_work_dir_has_no_paths(cli_files):
    from edgepack.compare import CompareConfig, LatencyConfig, compare
    x = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32)
    config = CompareConfig(targets=("onnx",), modes=("none",), memory=False,
                           latency=LatencyConfig(rounds=1, block=1, warmup=0))
    result = compare("m.onnx", x, config)
    assert result.pick.key == "onnx/none" and result.pick.path is None
    assert all(r.path is None for r in result.rows)
