"""Every numeric option of every command is range-checked by click (issue 12 item 19), and
`bench` shows the spread of its timings and warns about more threads than cores."""
from __future__ import annotations

import json
import os

import click

from cli_helpers import invoke

from edgepack.cli.main import cli

#: Numeric options any value of which is meaningful, or checked by the library's config with
#: a one-line message of its own (the pruning amount: "[0, 1)").
UNBOUNDED = {("optimize prune", "seed"), ("optimize distill", "seed"), ("optimize qat", "seed"),
             ("optimize prune", "amount")}


def commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from commands(command, path + " ")
        yield path, command


def test_every_numeric_option_has_a_range():
    plain = []
    for path, command in commands(cli):
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) \
                    and not isinstance(param.type, click.types._NumberRangeBase) \
                    and (path, param.name) not in UNBOUNDED:
                plain.append(f"{path} --{param.name}")
    assert plain == []


def test_bench_shows_spread_and_warns_about_threads(cli_files):
    threads = (os.cpu_count() or 1) + 1
    result = invoke("bench", "m.edgepack", "--runs", "5", "--warmup", "0", "--threads", threads)
    assert result.exit_code == 0, result.output
    assert f"warning: --threads {threads} is more than this machine's" in result.output
    assert "  spread ms   min " in result.output and " max " in result.output
    data = json.loads(invoke("bench", "m.edgepack", "--runs", "5", "--warmup", "0",
                             "--json").output)
    assert data["min_ms"] <= data["p50_ms"] <= data["max_ms"] and data["std_ms"] >= 0
    assert data["runs"] == 5 and data["cores"] == os.cpu_count()


def test_bench_warns_when_outliers_pull_the_mean_up():
    import numpy as np

    from edgepack.runtime.benchmark import summarize
    times = np.array([0.001] * 95 + [0.1] * 5)
    result = summarize(times, warmup=0, threads=1)
    assert result.skewed and result.mean_ms > result.p90_ms
    assert not summarize(np.full(20, 0.001), 0, 1).skewed
