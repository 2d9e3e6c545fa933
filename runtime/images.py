"""The one image decoder of edgepack: file bytes or a path -> (H, W, 3) uint8 RGB array.

Used by `edgepack run` (sdk/inputs.py), calibration/validation image folders
(converters/calibration.py) and the server (`/predict`, pipeline BYTES inputs), so a given
file becomes the same array everywhere.

Decisions, made once here:

- **Always RGB, channel last.** Gray ("L", "1", "I;16", "I", "F"), palette, alpha and CMYK
  images are converted by Pillow to 3-channel RGB (alpha dropped). A gray image therefore
  does *not* stay 2-D: the bundle's own `color` step turns RGB into what the model wants
  (``{"op": "color", "from": "RGB", "to": "GRAY"}``, as `pack --color GRAY` writes), and for
  a gray source that step gives back the original gray values exactly (R = G = B = g and the
  ITU-R 601 weights sum to 1). One layout means a bundle's pipeline sees the same input
  whichever caller decoded the file. (16-bit gray is reduced to 8 bits by Pillow's "L".)
- **Size checked from the header first.** `Image.open` reads only the header; the pixel count
  is compared with `max_pixels` before a single pixel is decoded, so a 236 KB PNG claiming
  9000 x 9000 costs nothing (`ImageTooLargeError`). Pillow's own bomb check is turned into
  the same error.
- **Errors say what the bytes were** (size, first bytes, a recognised format), never a
  Python object's repr.

Pillow is imported lazily: `import edgepack.runtime` does not pull it.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from .errors import InputError

#: File suffixes treated as images by every caller (run, calibration folders, docs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Default pixel limit (width x height): 25 MP covers 24 MP camera sensors; decoded as RGB
#: that is 75 MB. Callers take a `max_pixels` to change it.
DEFAULT_MAX_PIXELS = 25_000_000

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"\x93NUMPY", ".npy"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"), (b"%PDF", "PDF"),
)
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_OBJECT_REPR = re.compile(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>")


class ImageDecoderMissingError(InputError):
    """Pillow is not installed, so images cannot be decoded here (a server answers 415)."""


class ImageTooLargeError(InputError):
    """The image header announces more pixels than the configured limit."""

    def __init__(self, message: str, pixels: int, limit: int):
        super().__init__(message)
        self.pixels = pixels
        self.limit = limit


def describe_bytes(data: bytes) -> str:
    """A short, safe description of some bytes: size, first bytes in hex, known format."""
    head = bytes(data[:8])
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and bytes(data[8:12]) == b"WEBP":
        kind = "WebP"
    if kind is None and head.lstrip()[:1] in (b"{", b"["):
        kind = "JSON-like text"
    hex_head = head.hex(" ") if head else "nothing"
    what = f"{len(data)} bytes starting {hex_head}"
    return f"{what} ({kind} signature)" if kind else what


def decode_image(source: bytes | bytearray | memoryview | str | Path, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, what: str | None = None) -> np.ndarray:
    """Decode an image file (its bytes, or a path) to an (H, W, 3) uint8 RGB array.

    `what` names the image in error messages (default: the path, or "image").
    Raises `ImageTooLargeError` when the header announces more than `max_pixels` pixels,
    `InputError` for anything that is not a readable image or when Pillow is missing.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = what or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{label}: cannot read the image file ({exc.strerror or exc})"
                             ) from None
    else:
        data = bytes(source)
        label = what or "image"
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageDecoderMissingError(f"{label}: decoding images needs Pillow; pip install "
                         "'edgepack[image]' (or send a .npy array)") from None
    try:
        with Image.open(io.BytesIO(data)) as image:     # reads the header only
            width, height = image.size
            pixels = width * height
            if pixels > max_pixels:
                raise _too_large(label, width, height, max_pixels)
            if image.mode in _WIDE_GRAY:                # 16/32-bit gray: through 8-bit "L"
                image = image.convert("L")
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            rgb.load()
            array = np.asarray(rgb)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses at open() far above its own limit; report it like ours.
        raise _too_large(label, *_header_size(data), max_pixels) from None
    except UnidentifiedImageError:
        raise InputError(f"{label}: {describe_bytes(data)} are not an image Pillow can read; "
                         "send PNG/JPEG/BMP/GIF/WebP/TIFF bytes or a .npy array") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__
        raise InputError(f"{label}: {describe_bytes(data)} could not be decoded as an image "
                         f"({reason})") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"{label}: decoded to {array.dtype} {array.shape}, not 8-bit RGB")
    return array


def _too_large(label: str, width: int, height: int, limit: int) -> ImageTooLargeError:
    pixels = width * height
    size = f"{width}x{height} ({pixels:,} pixels)" if pixels else "an announced size"
    return ImageTooLargeError(
        f"{label}: image of {size} is over the limit of {limit:,} pixels; send a smaller "
        "image or raise the limit (max_pixels / edgepack serve --max-image-pixels)",
        pixels, limit)


def _header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG header, for messages; (0, 0) when not a PNG."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return 0, 0
