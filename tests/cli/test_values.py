"""The option value grammars the commands share (sdk/cli/values.py, imported as edgepack.cli.values)."""
from __future__ import annotations

import click
import pytest

from edgepack.runtime.errors import InputError
from edgepack.cli.values import byte_size, height_width


@pytest.mark.parametrize("text, size", [("512", 512), ("512K", 512 * 1024), ("64m", 64 << 20),
                                        ("64MB", 64 << 20), ("64MiB", 64 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30),
                                        (" 2 k ", 2048)])
def test_byte_sizes(text, size):
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "1.5M", "-1", "12T", "MB"])
def test_bad_byte_sizes_are_usage_errors(text):
    with pytest.raises(click.BadParameter, match="is not a size: use bytes or e.g. 512K"):
        byte_size(text)


def test_height_width_pairs():
    assert height_width("480,640", "--x") == (480, 640)
    assert height_width("480x640", "--x") == (480, 640)
    assert height_width("224", "--x") == (224, 224)
    assert height_width(None, "--x") is None
    with pytest.raises(InputError, match="--letterbox '64,x' must be HEIGHT,WIDTH or N$"):
        height_width("64,x", "--letterbox")
    with pytest.raises(InputError, match="with positive integers"):
        height_width("0,64", "--resize")
    with pytest.raises(InputError, match="with positive integers"):
        height_width("1,2,3", "--resize")
