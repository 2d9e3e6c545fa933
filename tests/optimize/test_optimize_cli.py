"""`edgepack optimize prune|distill` on a tiny model defined in a file, data in an .npz."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgepack.converters import optimize

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    def teacher():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 4 * 4, 3))

    def student():
        torch.manual_seed(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 3))
''')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "cli_models_opt.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 120)
    x = (g.random((120, 1, 8, 8)) * 0.3 + (y[:, None, None, None] == np.arange(8)[None, None,
         None, :] % 3) * 1.0).astype(np.float32)
    np.savez(tmp_path / "data.npz", x_train=x[:96], y_train=y[:96], x_test=x[96:],
             y_test=y[96:])
    import cli_models_opt
    torch.save(cli_models_opt.teacher().state_dict(), tmp_path / "teacher.pt")
    yield tmp_path
    sys.modules.pop("cli_models_opt", None)


def cli():
    from edgepack.cli.main import cli as root
    return root


def test_prune_structured_writes_loadable_smaller_weights(workdir):
    result = CliRunner().invoke(cli(), [
        "optimize", "prune", "cli_models_opt:teacher", "--weights", "teacher.pt",
        "--out", "pruned.pt", "--amount", "0.5", "--data", "data.npz", "--epochs", "2",
        "--export", "pruned.pt2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["pruned"] == {"0": "8->4", "4": "8->4"}
    assert summary["params_after"] < summary["params_before"]
    assert len(summary["history"]) == 2
    import cli_models_opt
    model = optimize.load_weights(cli_models_opt.teacher(), workdir / "pruned.pt")
    assert optimize.count_parameters(model) == summary["params_after"]
    program = torch.export.load(str(workdir / "pruned.pt2"))
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(program.module()(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_prune_magnitude_reports_per_layer_sparsity(workdir):
    result = CliRunner().invoke(cli(), [
        "optimize", "prune", "cli_models_opt:teacher", "--weights", "teacher.pt",
        "--out", "sparse.pt", "--method", "magnitude", "--amount", "0.75", "--scope", "layer",
        "--exclude", "7", "--json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.output)["layers"]
    assert layers["0"] == pytest.approx(0.75, abs=0.02) and layers["4"] == pytest.approx(0.75,
                                                                                          abs=0.01)
    assert layers["7"] == 0.0


@pytest.mark.parametrize("args, words", [
    (["--amount", "1.0"], ["amount", "[0, 1)"]),
    (["--layers", "7"], ["'7'", "model output", "exclude"]),
    (["--layers", "conv9"], ["'conv9'", "prunable layers are"]),
    (["--epochs", "1"], ["--epochs needs --data"]),
])
def test_prune_errors_are_one_line(workdir, args, words):
    result = CliRunner().invoke(cli(), [
        "optimize", "prune", "cli_models_opt:teacher", "--out", "x.pt",
        "--input-shape", "1,1,8,8", *args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in result.output


def test_bad_model_spec_and_data(workdir):
    result = CliRunner().invoke(cli(), ["optimize", "prune", "nomodule_xyz:f", "--out", "x.pt",
                                        "--input-shape", "1,1,8,8"])
    assert result.exit_code != 0 and "cannot import module 'nomodule_xyz'" in result.output
    np.savez(workdir / "bad.npz", x=np.zeros(3))
    result = CliRunner().invoke(cli(), ["optimize", "distill", "--teacher",
                                        "cli_models_opt:teacher", "--teacher-weights",
                                        "teacher.pt", "--student", "cli_models_opt:student",
                                        "--data", "bad.npz", "--out", "s.pt"])
    assert result.exit_code != 0 and "lacks x_train, y_train" in result.output


def test_distill_writes_student_and_history(workdir):
    result = CliRunner().invoke(cli(), [
        "optimize", "distill", "--teacher", "cli_models_opt:teacher", "--teacher-weights",
        "teacher.pt", "--student", "cli_models_opt:student", "--data", "data.npz",
        "--out", "student.pt", "--epochs", "3", "--temperature", "2", "--alpha", "0.5",
        "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [e["epoch"] for e in summary["history"]] == [1, 2, 3]
    assert summary["student_params"] < summary["teacher_params"]
    import cli_models_opt
    student = optimize.load_weights(cli_models_opt.student(), workdir / "student.pt")
    acc = optimize.evaluate(student, (np.load(workdir / "data.npz")["x_test"],
                                      np.load(workdir / "data.npz")["y_test"]))[1]
    assert acc == pytest.approx(summary["student_accuracy"], abs=1e-9)


def test_cli_module_imports_no_torch():
    """`edgepack --help` must not pay for torch: the optimize commands import it when run."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", "import sys, edgepack.cli.optimize_cmd; "
                          "print(sorted(m for m in ('torch', 'onnx', 'tensorflow') "
                          "if m in sys.modules))"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_pruned_export_feeds_edgepack_convert(workdir):
    """The .pt2 written by `optimize prune --export` converts as is, and matches the weights."""
    import edgepack
    from edgepack.runtime import load

    result = CliRunner().invoke(cli(), [
        "optimize", "prune", "cli_models_opt:teacher", "--weights", "teacher.pt",
        "--out", "pruned.pt", "--amount", "0.5", "--input-shape", "1,1,8,8",
        "--export", "pruned.pt2"])
    assert result.exit_code == 0, result.output
    x = np.load(workdir / "data.npz")["x_test"]
    conversion = edgepack.convert(str(workdir / "pruned.pt2"), workdir / "pruned.edgepack",
                                  quantize="none", validation_data=x)
    assert conversion.validation["passed"]
    import cli_models_opt
    model = optimize.load_weights(cli_models_opt.teacher(), workdir / "pruned.pt").eval()
    with load(workdir / "pruned.edgepack") as bundle:
        out = next(iter(bundle.run({bundle.inputs[0].name: x}).values()))
    np.testing.assert_allclose(out, model(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
