"""Fixtures of the CLI tests: a tiny ONNX classifier and its bundle, in a temp folder."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/models.py

import models  # noqa: E402


@pytest.fixture
def cli_files(tmp_path, monkeypatch, conv_onnx):
    """A work folder (also the cwd) holding m.onnx, its bundle m.edgepack and a few inputs."""
    import numpy as np

    from edgepack.runtime import pack_bundle
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(conv_onnx)
    pack_bundle(tmp_path / "m.edgepack", conv_onnx, name="m")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    return tmp_path
