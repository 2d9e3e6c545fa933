"""The user's own modules importable from the command line, as `python -m` does.

`edgepack convert mypkg.nets:build` and `edgepack optimize prune mypkg.nets:build` both
import from the working directory. Only the CLI does this: a library caller's sys.path is
theirs to arrange.
"""
from __future__ import annotations

import sys
from pathlib import Path


def import_from_working_directory() -> None:
    """Put the working directory first on sys.path unless it is already there."""
    cwd = str(Path.cwd())
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
