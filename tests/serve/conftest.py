"""Fixtures of the serving tests: a model repository and a server on 127.0.0.1."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.runtime.serve import ModelServer, ServeConfig
from serve_fixtures import make_adder, make_color


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with adder versions 1 (offset 1) and 2 (offset 2), and the color model."""
    root = tmp_path / "repo"
    make_adder(root / "adder" / "1" / "adder.edgepack", 1.0, version="1")
    make_adder(root / "adder" / "2.edgepack", 2.0, version="2")
    make_color(root / "color" / "1" / "color.edgepack")
    return root


@pytest.fixture
def server(repo: Path):
    """A server on an ephemeral loopback port with a fast watcher and a small body limit."""
    config = ServeConfig(host="127.0.0.1", port=0, workers=2, poll_interval=0.05,
                         max_body_bytes=64 * 1024, engine_threads=1)
    with ModelServer(repo, config) as srv:
        yield srv
