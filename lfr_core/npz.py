"""The .npz container of the watchlist index, read without copying its arrays.

An index of a million entries is ~650 MB; `np.load` copies every array out of the zip (and
faults in that much fresh memory), which was most of a match container's cold start at that
size. `write` lays each array out uncompressed with its data on a 64-byte boundary of the
artifact (padding in the zip extra field, which readers skip, as Android's zipalign does), so
`read` can return read-only views of the downloaded bytes, or of a memory-mapped file (an index
on the function's own storage: the page cache holds it, the process copies none of it; the CRC
check still reads every page once). Either stays a standard .npz:
`np.load` reads what `write` writes, and `read` accepts any .npz without object arrays (a
compressed or misaligned member is copied, as `np.load` would).
"""

from __future__ import annotations

import io
import mmap
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, Any, cast

import numpy as np

ALIGN = 64  # a cache line; also every dtype's alignment
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length
_PAD_FIELD = struct.Struct("<HH")  # an extra field's header: id, size of what follows
_PAD_FIELD_ID = 0xD935  # zipalign's extra-field id: "padding"
_MAX_NPY_HEADER = 65535 + 12  # magic, version, a version-2 header length field and its header


class NpzError(ValueError):
    """The bytes are not a readable .npz of plain arrays."""


def write(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asanyarray(value), allow_pickle=False)
            payload = npy.getvalue()
            _, _, data_offset = _npy_header(payload)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            name_len = len(info.filename.encode("utf-8"))
            # Data starts after the local header, name, extra field (the padding) and npy header.
            unpadded = buf.tell() + _LOCAL_HEADER.size + name_len + _PAD_FIELD.size + data_offset
            pad = -unpadded % ALIGN
            info.extra = _PAD_FIELD.pack(_PAD_FIELD_ID, pad) + bytes(pad)
            zf.writestr(info, payload)
    return buf.getvalue()


def read(data: bytes | mmap.mmap) -> dict[str, np.ndarray]:
    """Each member's array; stored, aligned members are read-only views of `data` (no copy).

    Every member's CRC is checked, so a corrupted download is refused, not searched."""
    view = memoryview(data)
    out: dict[str, np.ndarray] = {}
    try:
        # A mapped file is its own file object (BytesIO would copy it; it shares a bytes object).
        source = cast(IO[bytes], data) if isinstance(data, mmap.mmap) else io.BytesIO(data)  # mmap reads, seeks
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise NpzError(f"not a zip: {e}") from e
    with zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if key == info.filename or key in out:
                raise NpzError(f"unexpected member {info.filename!r}")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                try:
                    out[key] = _array(zf.read(info), 0, None)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                    raise NpzError(f"{info.filename}: {e}") from e
                continue
            start = _member_start(data, info)
            end = start + info.compress_size
            if info.file_size != info.compress_size or end > len(data):
                raise NpzError(f"{info.filename}: runs past the end")
            if zlib.crc32(view[start:end]) != info.CRC:
                raise NpzError(f"{info.filename}: CRC mismatch")
            out[key] = _array(data, start, end)
    return out


def _member_start(data: bytes | mmap.mmap, info: zipfile.ZipInfo) -> int:
    h = info.header_offset
    if h < 0 or h + _LOCAL_HEADER.size > len(data):
        raise NpzError(f"{info.filename}: local header out of range")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, h)
    if signature != b"PK\x03\x04":
        raise NpzError(f"{info.filename}: bad local header")
    return h + _LOCAL_HEADER.size + name_len + extra_len


def _npy_header(buf: bytes) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, offset of the data) of the .npy at the start of `buf` (C order only:
    `write` never writes Fortran order)."""
    fp = io.BytesIO(buf[:_MAX_NPY_HEADER])
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as e:
        raise NpzError(f"bad .npy header: {e}") from e
    if fortran:
        raise NpzError("Fortran-order arrays are not expected here")
    if dtype.hasobject:
        raise NpzError("object arrays are refused (they would need pickle)")
    return shape, dtype, fp.tell()


def _array(data: bytes | mmap.mmap, start: int, end: int | None) -> np.ndarray:
    end = len(data) if end is None else end
    shape, dtype, data_offset = _npy_header(data[start:min(end, start + _MAX_NPY_HEADER)])
    offset = start + data_offset
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count * dtype.itemsize != end:
        raise NpzError(f"array of {shape} {dtype} does not fill its member")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
    return arr if arr.flags.aligned else arr.copy()
