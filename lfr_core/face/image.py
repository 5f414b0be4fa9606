"""JPEG encode and strict image decode for face crops and enrolment photos, with typed errors.

Pillow rather than OpenCV so that `lfr_core` (and the Lambda layer) carries no OpenCV: images are
BGR uint8 arrays on both sides, like the rest of lfr_core.

Decoding is the first thing a hostile byte string meets, so it is strict and total:
- only the formats asked for (crops: JPEG; enrolment: JPEG or PNG), judged by the magic bytes
  AND by the format Pillow identifies, never by the file name;
- the size is read from the header and bounded before a pixel is decoded (decompression bombs);
- a JPEG must be complete: libjpeg fills a scan cut short (or cut and given a fake `FFD9`) with
  grey and only warns, so the scan of a sequential JPEG is walked here, MCU by MCU, and must end
  exactly where the data ends at EOI (`verify_jpeg_complete`); a PNG's chunks must all be there,
  CRC-checked, up to an IEND that ends the data (`verify_png_complete`). Neither depends on
  Pillow's global LOAD_TRUNCATED_IMAGES (nor changes it: other threads may share the process);
- ANY exception from the image library is an `InvalidImageError` with a reason tag, so a caller
  can reject one record and carry on with the rest.
"""

from __future__ import annotations

import functools
import io
import warnings
import zlib
from collections.abc import Callable, Collection

import numpy as np
from PIL import Image, ImageOps

from lfr_core.errors import InvalidImageError

JPEG_MAGIC = b"\xff\xd8"  # SOI
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CROP_FORMATS = frozenset({"JPEG"})
# Watchlist photos come from the admin's folder (`lfr deployment create`): JPEG or PNG.
ENROLMENT_FORMATS = frozenset({"JPEG", "PNG"})
# A watchlist photo larger than this is no custody photo: refused from the header alone.
MAX_DECODE_PIXELS = 40_000_000
MAX_DECODE_SIDE = 16_384

# Start-of-frame markers: only Huffman-coded 8-bit sequential (C0 baseline, C1 extended) and
# progressive (C2). Lossless, hierarchical and arithmetic-coded JPEGs are refused.
_SOF_SEQUENTIAL = (0xC0, 0xC1)
_SOF_PROGRESSIVE = 0xC2
_SOF_OTHER = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def encode_jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    """Encode a BGR uint8 image (H, W, 3) as JPEG (baseline, 4:2:0, like cv2.imencode)."""
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise InvalidImageError(
            "not_bgr_uint8", f"expected (H, W, 3) uint8, got {getattr(bgr, 'shape', None)}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    if bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise InvalidImageError("encode_failed", "empty image")
    buf = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), mode="RGB").save(
            buf, format="JPEG", quality=int(quality), subsampling="4:2:0"
        )
    except (OSError, ValueError) as exc:
        raise InvalidImageError("encode_failed", type(exc).__name__) from exc
    return buf.getvalue()


def decode_jpeg(data: bytes, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a complete baseline (sequential) JPEG to BGR uint8 (H, W, 3): the wire format of a crop.

    `expect_size` is (width, height); an image of another size is refused from its header,
    because a crop that is not an aligned 112x112 would embed to garbage rather than fail.
    Progressive JPEGs are refused here: the edge never sends one, and a progressive scan cut
    short cannot be told from a complete one without decoding it in full.
    """
    return decode_image(data, formats=CROP_FORMATS, expect_size=expect_size, progressive=False)


def decode_image(
    data: bytes,
    *,
    formats: Collection[str] = ENROLMENT_FORMATS,
    expect_size: tuple[int, int] | None = None,
    progressive: bool = True,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> np.ndarray:
    """Strictly decode JPEG (baseline or progressive) or PNG bytes to BGR uint8 (H, W, 3).

    Raises `InvalidImageError` (and nothing else) with one of the reasons: empty, not_jpeg /
    unsupported_format, not_baseline, too_large, wrong_size, truncated, corrupt. EXIF
    orientation is applied (as cv2.imdecode does), so a phone photo enrols upright.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise InvalidImageError("empty")
    data = bytes(data)
    kind = "JPEG" if data.startswith(JPEG_MAGIC) else "PNG" if data.startswith(PNG_MAGIC) else None
    if kind is None or kind not in formats:
        raise InvalidImageError("not_jpeg" if set(formats) == {"JPEG"} else "unsupported_format")
    try:
        # Structure first, from our own parsers: size bounded and completeness proven before
        # Pillow (whose LOAD_TRUNCATED_IMAGES a caller may have turned on) decodes a pixel.
        if kind == "JPEG":
            _w, _h, is_progressive = verify_jpeg_complete(
                data, size_check=lambda w, h: _check_size(w, h, expect_size, max_pixels)
            )
            if is_progressive and not progressive:
                raise InvalidImageError("not_baseline", "progressive JPEG")
        else:
            verify_png_complete(data, size_check=lambda w, h: _check_size(w, h, expect_size, max_pixels))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as im:
                if im.format != kind:
                    raise InvalidImageError("unsupported_format", f"identified as {im.format}")
                _check_size(im.size[0], im.size[1], expect_size, max_pixels)
                im.load()
                rgb = ImageOps.exif_transpose(im).convert("RGB")
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError("too_large", type(exc).__name__) from exc
    except Exception as exc:  # any failure of the image library (or our parsers) is this record's, never the caller's
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise InvalidImageError(reason, f"{len(data)} bytes not decodable ({type(exc).__name__})") from exc
    img = np.asarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise InvalidImageError("corrupt", f"{len(data)} bytes decoded to shape {img.shape}")
    if expect_size is not None:
        # EXIF rotation can swap the axes after the header check.
        w, h = expect_size
        if img.shape[:2] != (h, w):
            raise InvalidImageError("wrong_size", f"got {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.uint8)


def _check_size(width: int, height: int, expect_size: tuple[int, int] | None, max_pixels: int) -> None:
    if expect_size is not None and (width, height) != tuple(expect_size):
        w, h = expect_size
        raise InvalidImageError("wrong_size", f"got {width}x{height}, expected {w}x{h}")
    if not (0 < width <= MAX_DECODE_SIDE and 0 < height <= MAX_DECODE_SIDE) or width * height > max_pixels:
        raise InvalidImageError("too_large", f"{width}x{height}")


# -- PNG structure -------------------------------------------------------------------------------


def verify_png_complete(data: bytes, *, size_check: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Walk a PNG's chunks (each CRC checked) from IHDR to an IEND that ends the data; return (width, height)."""
    if not data.startswith(PNG_MAGIC):
        raise InvalidImageError("unsupported_format")
    pos, n = len(PNG_MAGIC), len(data)
    first = True
    width = height = 0
    while True:
        if pos + 12 > n:
            raise InvalidImageError("truncated", "PNG ends inside a chunk header")
        length = int.from_bytes(data[pos : pos + 4], "big")
        tag = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise InvalidImageError("truncated", "PNG ends inside a chunk")
        body = data[pos + 8 : pos + 8 + length]
        if zlib.crc32(tag + body) & 0xFFFFFFFF != int.from_bytes(data[end - 4 : end], "big"):
            raise InvalidImageError("corrupt", "PNG chunk CRC")
        if first:
            if tag != b"IHDR" or length != 13:
                raise InvalidImageError("corrupt", "PNG without IHDR")
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            if size_check is not None:
                size_check(width, height)
            first = False
        pos = end
        if tag == b"IEND":
            if pos != n:
                raise InvalidImageError("corrupt", f"{n - pos} bytes after IEND")
            return width, height


# -- JPEG structure ------------------------------------------------------------------------------


def verify_jpeg_complete(
    data: bytes, *, size_check: Callable[[int, int], None] | None = None
) -> tuple[int, int, bool]:
    """Walk a JPEG's markers (and, if sequential, every MCU of its scans); return (width, height, progressive).

    `size_check(width, height)` runs as soon as the frame header is read, so an absurd size is
    refused before its scan is walked or a pixel decoded.

    Raises `InvalidImageError`: `truncated` if the data ends (or meets EOI) before the frame is
    complete, `corrupt` for a malformed structure, `not_baseline` for an unsupported coding.
    The scan walk decodes Huffman symbols only (no IDCT): about a millisecond for a 112x112 crop.
    """
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImageError("not_jpeg")
    pos = 2
    huff: dict[tuple[int, int], _StepTable] = {}
    frame: _Frame | None = None
    restart = 0
    scanned: set[int] = set()
    # Progressive: per component, the coefficients some scan brought to full precision (Al = 0).
    refined: dict[int, set[int]] = {}
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        if pos >= n:
            raise InvalidImageError("truncated", "no EOI")
        if data[pos] != 0xFF:
            raise InvalidImageError("corrupt", f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise InvalidImageError("truncated", "no EOI")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if frame is None or (frame.sequential and scanned != set(frame.components)):
                raise InvalidImageError("truncated", "EOI before every component was scanned")
            if not frame.sequential and any(len(refined.get(c, ())) < 64 for c in frame.components):
                # Cut between scans: a later scan (and with it detail or colour) is missing.
                raise InvalidImageError("truncated", "progressive scans end before full precision")
            if pos != n:
                # Bytes after EOI are where a second image (or anything) could hide.
                raise InvalidImageError("corrupt", f"{n - pos} bytes after EOI")
            return frame.width, frame.height, not frame.sequential
        if marker in (0x01, *range(0xD0, 0xD8)) or marker == 0xD8:
            raise InvalidImageError("corrupt", f"unexpected marker FF{marker:02X}")
        if pos + 2 > n:
            raise InvalidImageError("truncated", "segment header")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            raise InvalidImageError("truncated", f"segment FF{marker:02X}")
        seg = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xC4:
            _parse_dht(seg, huff)
        elif marker == 0xDD:
            if len(seg) != 2:
                raise InvalidImageError("corrupt", "DRI")
            restart = int.from_bytes(seg, "big")
        elif marker in _SOF_SEQUENTIAL or marker == _SOF_PROGRESSIVE:
            if frame is not None:
                raise InvalidImageError("corrupt", "two frames")
            frame = _Frame.parse(seg, sequential=marker != _SOF_PROGRESSIVE)
            if size_check is not None:
                size_check(frame.width, frame.height)
        elif marker in _SOF_OTHER:
            raise InvalidImageError("not_baseline", f"SOF FF{marker:02X}")
        elif marker == 0xDA:
            if frame is None:
                raise InvalidImageError("corrupt", "scan before frame")
            comps, ss, se, ah_al = _parse_sos(seg, frame)
            if frame.sequential:
                if (ss, se, ah_al) != (0, 63, 0) or scanned & set(c for c, _, _ in comps):
                    raise InvalidImageError("corrupt", "sequential scan parameters")
                scanned.update(c for c, _, _ in comps)
                end = _walk_sequential_scan(data, pos, frame, comps, huff, restart)
            else:
                # Within a progressive scan a cut is not detected (that needs a full decode); a
                # cut between scans is, above. Crops are never progressive (`decode_jpeg`).
                if ss > se or se > 63 or (ss == 0) != (se == 0):
                    raise InvalidImageError("corrupt", "progressive scan parameters")
                if ah_al & 15 == 0:
                    for c, _, _ in comps:
                        refined.setdefault(c, set()).update(range(ss, se + 1))
                end = _skip_entropy(data, pos)
            pos = end
        # APPn, COM, DQT, DNL and the like: skipped (their length was checked).


class _Frame:
    def __init__(self, width: int, height: int, components: dict[int, tuple[int, int]], sequential: bool) -> None:
        self.width, self.height, self.components, self.sequential = width, height, components, sequential
        self.hmax = max(h for h, _ in components.values())
        self.vmax = max(v for _, v in components.values())

    @classmethod
    def parse(cls, seg: bytes, *, sequential: bool) -> _Frame:
        if len(seg) < 6:
            raise InvalidImageError("truncated", "SOF")
        precision, height, width, nc = seg[0], int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
        if precision != 8:
            raise InvalidImageError("not_baseline", f"{precision}-bit samples")
        if width == 0 or height == 0:
            # Height 0 means "given later by a DNL marker": nothing a camera or our encoder makes.
            raise InvalidImageError("corrupt", "zero dimension")
        if nc not in (1, 3) or len(seg) != 6 + 3 * nc:
            raise InvalidImageError("corrupt", "SOF components")
        comps: dict[int, tuple[int, int]] = {}
        for i in range(nc):
            cid, hv = seg[6 + 3 * i], seg[7 + 3 * i]
            h, v = hv >> 4, hv & 15
            if not (1 <= h <= 4 and 1 <= v <= 4) or cid in comps:
                raise InvalidImageError("corrupt", "SOF sampling")
            comps[cid] = (h, v)
        return cls(width, height, comps, sequential)


def _parse_dht(seg: bytes, huff: dict[tuple[int, int], _StepTable]) -> None:
    p = 0
    while p < len(seg):
        if p + 17 > len(seg):
            raise InvalidImageError("corrupt", "DHT")
        tc, th = seg[p] >> 4, seg[p] & 15
        counts = seg[p + 1 : p + 17]
        total = sum(counts)
        if tc > 1 or th > 3 or p + 17 + total > len(seg) or total > 256:
            raise InvalidImageError("corrupt", "DHT")
        huff[(tc, th)] = _step_table(tc == 1, bytes(counts), bytes(seg[p + 17 : p + 17 + total]))
        p += 17 + total


def _parse_sos(seg: bytes, frame: _Frame) -> tuple[list[tuple[int, int, int]], int, int, int]:
    if not seg:
        raise InvalidImageError("corrupt", "SOS")
    ns = seg[0]
    if not 1 <= ns <= 4 or len(seg) != 1 + 2 * ns + 3:
        raise InvalidImageError("corrupt", "SOS")
    comps = []
    for i in range(ns):
        cid, tables = seg[1 + 2 * i], seg[2 + 2 * i]
        if cid not in frame.components:
            raise InvalidImageError("corrupt", "SOS component")
        comps.append((cid, tables >> 4, tables & 15))
    ss, se, ah_al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns]
    return comps, ss, se, ah_al


def _skip_entropy(data: bytes, pos: int) -> int:
    """Position of the first marker after entropy-coded data (stuffed FF00 and RSTn are data)."""
    n = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            raise InvalidImageError("truncated", "scan data runs to the end")
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos += 2
            continue
        if nxt == 0xFF:
            pos += 1  # fill byte before a marker
            continue
        return pos


# A Huffman table as a 16-bit look-up: the next 16 bits of the scan -> how far the symbol they
# start with moves the bit position (its code and the extra bits it announces, which the walk skips
# without reading) and, for AC, what it does to the coefficient index. 0 = no code starts so (corrupt).
# Entries pack `step + 32 * action`; AC actions: 0 end of block, 1..16 advance by run + 1, 17 ZRL.
_StepTable = tuple[int, ...]
_AC_ZRL = 17


@functools.lru_cache(maxsize=64)  # encoders reuse a few tables: built once per process, not per crop
def _step_table(ac: bool, counts: bytes, values: bytes) -> _StepTable:
    lut = [0] * 65536
    code, k = 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            if code >= 1 << length:
                raise InvalidImageError("corrupt", "DHT code space overflow")
            sym, extra = values[k], values[k] & 15
            if not ac:
                entry = length + extra
            elif extra:
                entry = length + extra + 32 * ((sym >> 4) + 1)
            else:
                entry = length + 32 * (_AC_ZRL if sym == 0xF0 else 0)
            shift = 16 - length
            lut[code << shift : (code + 1) << shift] = [entry] * (1 << shift)
            code += 1
            k += 1
        code <<= 1
    return tuple(lut)


def _walk_interval(iv: bytes, n_units: int, tables: list[tuple[_StepTable, _StepTable, int]]) -> int:
    """Decode the Huffman symbols of `n_units` MCUs from one restart interval; return the bits left.

    The hot loop of the scan walk, written flat (locals only, one table look-up per symbol) because
    its inner loop runs once per symbol, about 5,000 times a crop.
    """
    # w[i]: the 24 bits from byte i (look-ahead past the end reads zeros; `total` catches it).
    b = np.frombuffer(iv + b"\x00\x00", dtype=np.uint8).astype(np.uint32)
    w: list[int] = ((b[:-2] << 16) | (b[1:-1] << 8) | b[2:]).tolist()
    total = 8 * len(iv)
    pos = 0
    for _ in range(n_units):
        for dc, ac, count in tables:
            for _ in range(count):
                if pos >= total:
                    raise InvalidImageError("truncated", "scan ends before its last block")
                step = dc[(w[pos >> 3] >> (8 - (pos & 7))) & 0xFFFF]
                if not step:
                    raise InvalidImageError("corrupt", "invalid Huffman code")
                pos += step
                k = 1
                while k < 64:
                    if pos >= total:
                        raise InvalidImageError("truncated", "scan ends before its last block")
                    entry = ac[(w[pos >> 3] >> (8 - (pos & 7))) & 0xFFFF]
                    if not entry:
                        raise InvalidImageError("corrupt", "invalid Huffman code")
                    pos += entry & 31
                    action = entry >> 5
                    if action == 0:
                        break  # end of block
                    if action == _AC_ZRL:
                        k += 16
                        continue
                    k += action
                    if k > 64:
                        raise InvalidImageError("corrupt", "coefficient index past 63")
        if pos > total:
            raise InvalidImageError("truncated", "scan ends inside a block")
    if pos > total:
        raise InvalidImageError("truncated", "scan ends inside a block")
    return total - pos


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _walk_sequential_scan(
    data: bytes,
    pos: int,
    frame: _Frame,
    comps: list[tuple[int, int, int]],
    huff: dict[tuple[int, int], _StepTable],
    restart: int,
) -> int:
    """Decode every Huffman symbol of one sequential scan; return the position of the marker after it."""
    end = _skip_entropy(data, pos)
    # Split at restart markers, unstuff each interval.
    intervals: list[bytes] = []
    start, p = pos, pos
    while True:
        p = data.find(b"\xff", p, end)
        if p < 0:
            break
        if 0xD0 <= data[p + 1] <= 0xD7:
            intervals.append(data[start:p])
            start = p + 2
        p += 2
    intervals.append(data[start:end])
    intervals = [iv.replace(b"\xff\x00", b"\xff") for iv in intervals]

    if len(comps) == 1:
        cid = comps[0][0]
        h, v = frame.components[cid]
        # A lone component's blocks cover its own (subsampled) size, not whole MCUs.
        cols = _ceil_div(_ceil_div(frame.width * h, frame.hmax), 8)
        rows = _ceil_div(_ceil_div(frame.height * v, frame.vmax), 8)
        units, blocks_per_unit = cols * rows, [(comps[0], 1)]
    else:
        cols = _ceil_div(frame.width, 8 * frame.hmax)
        rows = _ceil_div(frame.height, 8 * frame.vmax)
        units = cols * rows
        blocks_per_unit = [(c, frame.components[c[0]][0] * frame.components[c[0]][1]) for c in comps]
    tables = []
    for (_cid, td, ta), count in blocks_per_unit:
        dc, ac = huff.get((0, td)), huff.get((1, ta))
        if dc is None or ac is None:
            raise InvalidImageError("corrupt", "scan uses an undefined Huffman table")
        tables.append((dc, ac, count))
    per_interval = restart if restart else units
    expected_intervals = _ceil_div(units, per_interval)
    if len(intervals) < expected_intervals:
        raise InvalidImageError("truncated", "scan ends before its last restart interval")
    if len(intervals) > expected_intervals:
        raise InvalidImageError("corrupt", "more restart intervals than MCUs")
    done = 0
    for iv in intervals:
        n_units = min(per_interval, units - done)
        left = _walk_interval(iv, n_units, tables)
        done += n_units
        # What is left of an interval is padding to the byte (1 bits), never a further MCU's worth.
        if left >= 8:
            raise InvalidImageError("corrupt", f"{left} bits left after a restart interval")
    return end
