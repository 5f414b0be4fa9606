"""The index's .npz container: standard on disk, read as views of the downloaded bytes, and every
corruption refused (the scan's exactness depends on its codes being the ones that were built)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from lfr_core import npz
from lfr_core.errors import InvalidIndexError
from lfr_core.matching import WatchlistIndex


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "version": np.array(3, dtype=np.int64),
        "ids": np.array(["e-1", "entry-two", "ü"]),
        "emb": rng.standard_normal((3, 128)).astype(np.float32),
        "codes": rng.integers(-127, 128, (2, 128, 5), dtype=np.int8),
    }


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_written_npz_is_standard_and_read_back_as_aligned_read_only_views() -> None:
    arrays = _arrays()
    data = npz.write(arrays)
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        assert _equal({k: loaded[k] for k in loaded.files}, arrays)
    got = npz.read(data)
    assert _equal(got, arrays)
    base = np.frombuffer(data, dtype=np.uint8)
    for key, arr in got.items():
        assert np.shares_memory(arr, base), f"{key} was copied"
        assert not arr.flags.writeable
        start = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        assert start % npz.ALIGN == 0, f"{key} starts at {start}"


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_any_plain_npz_reads(save: object) -> None:
    arrays = _arrays()
    buf = io.BytesIO()
    save(buf, **arrays)  # type: ignore[operator]
    assert _equal(npz.read(buf.getvalue()), arrays)


def test_a_flipped_bit_anywhere_in_the_data_is_refused() -> None:
    data = npz.write(_arrays())
    got = npz.read(data)
    base = np.frombuffer(data, dtype=np.uint8).__array_interface__["data"][0]
    codes_at = got["codes"].__array_interface__["data"][0] - base
    for pos in (codes_at, codes_at + got["codes"].nbytes - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(npz.NpzError, match="CRC"):
            npz.read(bytes(bad))


@pytest.mark.parametrize("cut", [0, 10, 200, -30, -1])
def test_truncated_or_garbage_bytes_are_refused(cut: int) -> None:
    data = npz.write(_arrays())
    with pytest.raises(npz.NpzError):
        npz.read(data[:cut])
    with pytest.raises(npz.NpzError):
        npz.read(b"not a zip at all" * 4)


def test_object_arrays_are_refused_without_unpickling() -> None:
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(npz.NpzError, match="object"):
        npz.read(buf.getvalue())


def test_index_artifact_loads_without_copying_and_refuses_a_corrupt_one() -> None:
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((6, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = WatchlistIndex(entry_ids=[f"e{i}" for i in range(6)], labels=[f"p{i}" for i in range(6)],
                           embeddings=emb, model="sface")
    data = index.to_npz_bytes()
    loaded = WatchlistIndex.from_npz_bytes(data)
    assert np.shares_memory(loaded.embeddings, np.frombuffer(data, dtype=np.uint8))
    assert np.array_equal(loaded.embeddings, emb) and loaded.entry_ids == index.entry_ids
    offset = data.index(emb[2].tobytes())
    bad = bytearray(data)
    bad[offset + 5] ^= 0x01  # a low mantissa bit: finite, still unit-norm, so only the CRC sees it
    with pytest.raises(InvalidIndexError, match="CRC"):
        WatchlistIndex.from_npz_bytes(bytes(bad))


def _scanned_index(n: int = 300) -> tuple[WatchlistIndex, np.ndarray]:
    emb = np.random.default_rng(4).standard_normal((n, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"e{i}" for i in range(n)]
    return WatchlistIndex(entry_ids=ids, labels=[f"p{i}" for i in range(n)], embeddings=emb).with_scan(), emb


def test_an_index_file_is_mapped_not_read_and_decides_as_the_bytes_do(tmp_path: Path, built_models: Path) -> None:
    index, emb = _scanned_index()
    path = tmp_path / "index.npz"
    path.write_bytes(index.to_npz_bytes())
    mapped = WatchlistIndex.from_npz_file(path)
    from_bytes = WatchlistIndex.from_npz_bytes(path.read_bytes())
    # Views of the mapping: the page cache holds the gallery, the process copies none of it.
    assert _maps_file(mapped.embeddings, path) and _maps_file(mapped.scan.blocks, path)  # type: ignore[union-attr]
    assert not _maps_file(from_bytes.embeddings, path)
    assert not mapped.embeddings.flags.writeable
    assert mapped.entry_ids == index.entry_ids and mapped.labels == index.labels
    queries = [emb[[5]], emb[[7, 9]] + 0.01, emb[[299]]]
    assert mapped.fused_top1_batch(queries, "max") == from_bytes.fused_top1_batch(queries, "max")
    assert mapped.fused_top1_batch(queries, "max") == index.fused_top1_batch(queries, "max")


def _maps_file(arr: np.ndarray, path: Path) -> bool:
    """Whether `arr`'s memory lies in a mapping of `path` (Linux: /proc/self/maps)."""
    address = arr.__array_interface__["data"][0]
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= address < hi:
            return rest[-1] == str(path.resolve())
    return False


def test_a_corrupt_or_empty_index_file_is_refused(tmp_path: Path) -> None:
    index, emb = _scanned_index(20)
    data = index.to_npz_bytes()
    bad = bytearray(data)
    bad[data.index(emb[3].tobytes()) + 5] ^= 0x01  # finite and unit-norm still: only the CRC sees it
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(bad))
    with pytest.raises(InvalidIndexError, match="CRC"):
        WatchlistIndex.from_npz_file(path)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(InvalidIndexError, match="empty"):
        WatchlistIndex.from_npz_file(empty)


def test_a_loaded_index_names_entries_with_plain_strings_without_building_them_all() -> None:
    from lfr_core.matching import StringColumn

    index, emb = _scanned_index(12)
    loaded = WatchlistIndex.from_npz_bytes(index.to_npz_bytes())
    assert isinstance(loaded.entry_ids, StringColumn) and isinstance(loaded.labels, StringColumn)
    hit = loaded.top1(emb[[4]])[0]
    assert (hit.entry_id, hit.label) == ("e4", "p4")
    assert type(hit.entry_id) is str and type(hit.label) is str  # not numpy scalars: they reach JSON
    ids = loaded.entry_ids
    assert len(ids) == 12 and ids[-1] == "e11" and ids[2:4] == ["e2", "e3"] and ids.index("e7") == 7
    assert list(ids) == index.entry_ids and ids == index.entry_ids and ids != index.labels
    assert all(type(v) is str for v in ids)
    again = WatchlistIndex.from_npz_bytes(loaded.to_npz_bytes())  # writes the column back as it came
    assert again.entry_ids == ids and again.labels == loaded.labels
