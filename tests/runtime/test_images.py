"""The runtime's one image decoder: layout, the pixel limit read from the header, errors."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgepack.runtime.errors import InputError
from edgepack.runtime.images import (IMAGE_SUFFIXES, ImageTooLargeError, decode_image,
                                     describe_bytes)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR (8-bit gray) + an empty IDAT + IEND: a header that lies."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def test_gray_rgba_palette_all_decode_to_hwc_rgb_uint8():
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    out = decode_image(png_bytes(gray))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    for c in range(3):                      # gray replicated: the color step can undo it
        np.testing.assert_array_equal(out[:, :, c], gray)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    np.testing.assert_array_equal(decode_image(png_bytes(rgba))[..., 0], 200)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    buf = io.BytesIO()
    palette.save(buf, "GIF")
    np.testing.assert_array_equal(decode_image(buf.getvalue())[0, 0], [10, 20, 30])


def test_path_and_bytes_give_the_same_array(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(png_bytes(pixels))
    np.testing.assert_array_equal(decode_image(tmp_path / "a.png"), pixels)
    np.testing.assert_array_equal(decode_image(png_bytes(pixels)), pixels)
    assert ".png" in IMAGE_SUFFIXES and ".jpeg" in IMAGE_SUFFIXES


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    with pytest.raises(ImageTooLargeError, match=r"9000x9000 \(81,000,000 pixels\) is over "
                                                 r"the limit of 25,000,000 pixels") as info:
        decode_image(png_header_only(9000, 9000))   # no pixel data at all: never decoded
    assert (info.value.pixels, info.value.limit) == (81_000_000, 25_000_000)
    with pytest.raises(ImageTooLargeError, match="over the limit of 100 pixels"):
        decode_image(png_bytes(np.zeros((11, 10), np.uint8)), max_pixels=100)
    assert decode_image(png_bytes(np.zeros((10, 10), np.uint8)), max_pixels=100).shape == \
        (10, 10, 3)


def test_pillow_decompression_bomb_becomes_the_same_error():
    # 20000 x 20000 is above twice Pillow's own limit: Pillow raises at open().
    with pytest.raises(ImageTooLargeError, match=r"20000x20000 \(400,000,000 pixels\)"):
        decode_image(png_header_only(20000, 20000), max_pixels=10**12)


@pytest.mark.parametrize("data, message", [
    (b"hello world!", r"image: 12 bytes starting 68 65 6c 6c 6f 20 77 6f are not an image"),
    (b"", r"image: 0 bytes starting nothing are not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, r"\(PNG signature\)"),
    (b'{"inputs": []}', r"\(JSON-like text signature\)"),
])
def test_errors_say_what_the_bytes_were_never_an_object_repr(data, message):
    with pytest.raises(InputError, match=message) as info:
        decode_image(data)
    assert "object at 0x" not in str(info.value) and "BytesIO" not in str(info.value)


def test_truncated_image_names_the_problem():
    good = png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"could not be decoded as an image|are not an image"
                       ) as info:
        decode_image(good[: len(good) // 2], what="input 'image'")
    assert str(info.value).startswith(f"input 'image': {len(good) // 2} bytes starting 89 50")
    assert "object at 0x" not in str(info.value)


def test_describe_bytes():
    assert describe_bytes(b"\xff\xd8\xff\xe0abcd") == \
        "8 bytes starting ff d8 ff e0 61 62 63 64 (JPEG signature)"
    assert describe_bytes(b"RIFF\0\0\0\0WEBPVP8 ") .endswith("(WebP signature)")
