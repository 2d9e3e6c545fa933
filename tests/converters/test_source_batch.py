"""Every path that runs a source model respects the batch it accepts (issue 12 item 14: a
.pt2 exported with a batch-1 example failed in `compare` with `Guard failed:
input.size()[0] == 1`), the conversion note says why the batch is fixed and how to export
a dynamic one, a module with a batch-1 example still gets a dynamic batch, and torch's own
log lines stay out of the CLI's output."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tiny_models import make_torch_cnn  # noqa: E402

from edgepack.converters.sources import load_source  # noqa: E402
from edgepack.converters.validation import run_source  # noqa: E402


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt2")
    model = make_torch_cnn()
    paths = {}
    for batch in (1, 4):
        program = torch.export.export(model, (torch.zeros(batch, 1, 8, 8),))
        paths[batch] = folder / f"b{batch}.pt2"
        torch.export.save(program, str(paths[batch]))
    x = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)
    np.save(folder / "data.npy", x)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    return folder, paths, x, expected


@pytest.mark.parametrize("batch", [1, 4])
def test_run_source_uses_the_programs_batch(programs, batch):
    _, paths, x, expected = programs
    source = load_source(str(paths[batch]))
    assert source.fixed_batch == batch
    (out,) = run_source(source, [x])  # 10 samples: chunks of the batch, the last one padded
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_compare_runs_a_batch_1_program(programs, monkeypatch):
    from click.testing import CliRunner

    from edgepack.cli.main import cli
    folder, paths, _, _ = programs
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(cli, ["compare", str(paths[1]), "--data", "data.npy",
                                      "--targets", "onnx", "--modes", "none", "--json",
                                      "--no-memory", "--rounds", "1", "--block", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["pick"]["key"] == "onnx/none"


@pytest.mark.slow  # the installed command in a fresh process (torch import + export): ~25 s
def test_note_explains_the_fixed_batch_and_torch_logs_stay_quiet(programs):
    folder, paths, _, _ = programs
    exe = Path(sys.executable).with_name("edgepack")
    done = subprocess.run([exe, "convert", str(paths[1]), "-o", str(folder / "b1.edgepack")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("note: fixed batch 1: the .pt2 program accepts only batch 1 (it was exported "
            "with a batch-1 example, and torch.export specializes every dimension whose "
            "example size is 1); for any batch, export with a batch-2 example and "
            "dynamic_shapes=({0: torch.export.Dim('batch')},)") in done.stdout
    # torch's glog-style lines ("W1201 11:13:51 ... torchvision is not installed")
    assert not re.search(r"^[WEI]\d{4} ", done.stderr, re.MULTILINE), done.stderr
    assert "torchvision" not in done.stderr and "Guard" not in done.stderr


def test_a_module_with_a_batch_1_example_gets_a_dynamic_batch(tmp_path):
    from edgepack.converters import ConversionConfig, convert_model
    from edgepack.runtime import read_bundle
    result = convert_model(make_torch_cnn(), tmp_path / "m.edgepack", ConversionConfig(),
                           example_inputs=np.zeros((1, 1, 8, 8), np.float32))
    assert read_bundle(result.path).manifest.inputs[0].shape[0] == -1
    assert not any("fixed batch" in n for n in result.notes)
