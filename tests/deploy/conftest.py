"""Fixtures of the deploy tests: a real sshd, the reference OCI registry, boards, bundles."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # services.py

from services import (Board, SshServer, make_adder, start_board, start_registry,  # noqa: E402
                      start_sshd, stop)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    """OpenSSH's sshd on 127.0.0.1, a generated host key, one authorized test key."""
    server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """The reference distribution registry on 127.0.0.1: (address, storage directory)."""
    address, storage, proc = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield address, storage
    finally:
        stop(proc)


@pytest.fixture
def boards(tmp_path):
    """Start boards on demand: boards(name, *serve options) -> Board; all stopped after."""
    started: list[Board] = []

    def start(name: str = "board", *extra: str) -> Board:
        board = start_board(tmp_path / name / "models", *extra)
        started.append(board)
        return board
    try:
        yield start
    finally:
        for board in started:
            stop(board.proc)


@pytest.fixture(scope="session")
def adders(tmp_path_factory) -> dict[float, Path]:
    """Adder bundles y = x + 1, x + 2, x + 3 (the answer names the version)."""
    root = tmp_path_factory.mktemp("adders")
    return {k: make_adder(root / f"adder{int(k)}.edgepack", k, version=f"{int(k)}.0.0")
            for k in (1.0, 2.0, 3.0)}
