"""Hostile crop bytes of every kind an outside tester tried, built from a real crop.

Each maker takes the JPEG of a real aligned 112x112 crop (often of a LISTED person, so that
accepting the poison would visibly alert or store something) and returns bytes a sender could
put in `jpeg_b64`. Nothing here is written to disk.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image


def dds_header(size: int = 200) -> bytes:
    """A DDS header with an unknown FourCC: Pillow raises NotImplementedError on it."""
    hdr = b"DDS " + struct.pack("<7I", 124, 0x1007, 112, 112, 0, 0, 0) + b"\0" * 44
    hdr += struct.pack("<2I4s5I", 32, 0x4, b"ZZZZ", 0, 0, 0, 0, 0) + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return hdr + b"\0" * (size - len(hdr))


def _reencode(jpeg: bytes, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    with Image.open(io.BytesIO(jpeg)) as im:
        im.convert("RGB").save(buf, format=fmt, **kw)
    return buf.getvalue()


def as_png(jpeg: bytes) -> bytes:
    return _reencode(jpeg, "PNG")


def as_gif(jpeg: bytes) -> bytes:
    return _reencode(jpeg, "GIF")


def as_tiff(jpeg: bytes) -> bytes:
    return _reencode(jpeg, "TIFF")


def as_progressive(jpeg: bytes) -> bytes:
    return _reencode(jpeg, "JPEG", progressive=True, quality=95)


def truncated_with_eoi(jpeg: bytes, fraction: float = 0.5) -> bytes:
    """Cut at `fraction`, then a fake end-of-image marker: libjpeg fills the rest with grey, silently."""
    return jpeg[: int(len(jpeg) * fraction)] + b"\xff\xd9"


def random_bytes(jpeg: bytes, n: int = 4000, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def empty(jpeg: bytes) -> bytes:
    return b""


def huge_dimensions(jpeg: bytes, width: int = 60000, height: int = 60000) -> bytes:
    """The real crop with its frame header claiming width x height (a decompression bomb's header)."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "baseline SOF0 expected"
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small PNG whose header claims width x height (900 MP) and whose data is one compressed row."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def trailing_payload(jpeg: bytes) -> bytes:
    """A complete JPEG with another file appended after its EOI."""
    return jpeg + as_png(jpeg)


# kind -> (maker, the reason tag the match path must record for it)
POISON: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "dds": (lambda j: dds_header(), "not_jpeg"),
    "png": (as_png, "not_jpeg"),
    "gif": (as_gif, "not_jpeg"),
    "tiff": (as_tiff, "not_jpeg"),
    "truncated_eoi": (truncated_with_eoi, "truncated"),
    "random": (random_bytes, "not_jpeg"),
    "empty": (empty, "invalid_image"),  # refused by the contract itself: an empty crop
    "huge_dimensions": (huge_dimensions, "wrong_size"),
    "progressive": (as_progressive, "not_baseline"),
    "trailing_payload": (trailing_payload, "corrupt"),
}
