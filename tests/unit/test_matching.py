"""WatchlistIndex: artifact round trip, exact top-1 search, refusal of malformed artifacts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lfr_core.errors import InvalidIndexError
from lfr_core.matching import ExactSearcher, Searcher, WatchlistIndex, _distinct


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _index(n: int = 5, seed: int = 0) -> WatchlistIndex:
    emb = _unit(np.random.default_rng(seed).normal(size=(n, 128)))
    return WatchlistIndex(
        entry_ids=[f"e{i}" for i in range(n)], labels=[f"Person {i}" for i in range(n)], embeddings=emb, model="m"
    )


def test_npz_round_trip() -> None:
    idx = _index()
    back = WatchlistIndex.from_npz_bytes(idx.to_npz_bytes())
    assert back.entry_ids == idx.entry_ids
    assert back.labels == idx.labels
    assert back.model == "m"
    assert back.embeddings.dtype == np.float32
    np.testing.assert_array_equal(back.embeddings, idx.embeddings)


def test_search_finds_the_nearest_entry() -> None:
    idx = _index(50)
    rng = np.random.default_rng(1)
    targets = np.array([3, 17, 49, 0])
    # Each query is a small perturbation of its target, left unnormalised on purpose.
    queries = 3.0 * (idx.embeddings[targets] + 0.05 * rng.normal(size=(4, 128)).astype(np.float32))
    got, score = idx.search(queries)
    np.testing.assert_array_equal(got, targets)
    assert score.dtype == np.float32 and np.all(score > 0.8) and np.all(score <= 1.0 + 1e-6)
    # Exact cosine against a brute-force reference.
    ref = _unit(queries) @ idx.embeddings.T
    np.testing.assert_allclose(score, ref.max(axis=1), rtol=1e-5)
    hits = idx.top1(queries)
    assert [h.entry_id for h in hits] == ["e3", "e17", "e49", "e0"]


def test_search_of_an_orthogonal_query_scores_zero() -> None:
    emb = np.eye(128, dtype=np.float32)[:3]
    idx = WatchlistIndex(entry_ids=["a", "b", "c"], labels=["A", "B", "C"], embeddings=emb, model="m")
    i, s = idx.search(np.eye(128, dtype=np.float32)[[1, 100]])
    assert i[0] == 1 and s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(0.0)


def test_empty_query_batch() -> None:
    i, s = _index().search(np.zeros((0, 128), np.float32))
    assert i.shape == (0,) and s.shape == (0,)


def test_searcher_can_be_replaced() -> None:
    idx = _index()
    assert isinstance(ExactSearcher(idx.embeddings), Searcher)

    class Always2:
        def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.full(len(queries), 2), np.ones(len(queries), np.float32)

    idx.use_searcher(Always2())
    assert idx.search(idx.embeddings[:1])[0][0] == 2


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _good_arrays() -> dict[str, np.ndarray]:
    idx = _index(3)
    return {
        "format_version": np.array(1, dtype=np.int64),
        "entry_ids": np.array(idx.entry_ids),
        "labels": np.array(idx.labels),
        "embeddings": idx.embeddings,
        "model": np.array("m"),
    }


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda a: a.pop("embeddings"), id="missing-embeddings"),
        pytest.param(lambda a: a.update(embeddings=a["embeddings"][:, :64]), id="wrong-dim"),
        pytest.param(lambda a: a.update(embeddings=a["embeddings"][:2]), id="count-mismatch"),
        pytest.param(lambda a: a.update(embeddings=a["embeddings"].astype(np.float64)), id="float64"),
        pytest.param(lambda a: a.update(embeddings=a["embeddings"] * 2), id="not-normalised"),
        pytest.param(lambda a: a.update(embeddings=np.full((3, 128), np.nan, np.float32)), id="nan"),
        pytest.param(lambda a: a.update(entry_ids=np.array(["x", "x", "y"])), id="duplicate-ids"),
        pytest.param(lambda a: a.update(labels=np.array([1, 2, 3])), id="labels-not-strings"),
        pytest.param(lambda a: a.update(entry_ids=np.array(["a", None, "c"], dtype=object)), id="pickled-object"),
        pytest.param(lambda a: a.update(format_version=np.array(99)), id="future-version"),
    ],
)
def test_malformed_artifacts_are_rejected(mutate: Callable[[dict[str, np.ndarray]], object]) -> None:
    arrays = _good_arrays()
    mutate(arrays)
    with pytest.raises(InvalidIndexError):
        WatchlistIndex.from_npz_bytes(_npz(**arrays))


@pytest.mark.parametrize("data", [b"", b"not a zip", _index().to_npz_bytes()[:100]])
def test_garbage_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(InvalidIndexError):
        WatchlistIndex.from_npz_bytes(data)


def test_empty_watchlist_is_refused() -> None:
    with pytest.raises(InvalidIndexError):
        WatchlistIndex(entry_ids=[], labels=[], embeddings=np.zeros((0, 128), np.float32), model="m")


def _vec(*v: float) -> np.ndarray:
    x = np.zeros(128, np.float32)
    x[: len(v)] = v
    return x / np.linalg.norm(x)


def test_fused_top1_fuses_each_persons_best_template_over_a_tracks_crops() -> None:
    # Two templates of "a" (a1 along axis 0, a2 along axis 1) and one of "b" (axis 2).
    index = WatchlistIndex(["a1", "a2", "b1"], ["a", "a", "b"], np.stack([_vec(1), _vec(0, 1), _vec(0, 0, 1)]))
    crops = np.stack([_vec(1, 0, 0.9), _vec(0, 1, 0.9), _vec(0, 0, 1)])  # a1-ish, a2-ish, pure b
    # Per person, each crop's score is their best template: a = (0.74, 0.74, 0), b = (0.67, 0.67, 1).
    best_max = index.fused_top1(crops, "max")
    best_mean = index.fused_top1(crops, "mean")
    assert (best_max.label, best_max.entry_id, round(best_max.score, 3)) == ("b", "b1", 1.0)
    assert best_mean.label == "b" and best_mean.score == pytest.approx((0.669 * 2 + 1) / 3, abs=1e-3)
    # Without the third crop, "a" wins on mean (0.74 vs 0.67), named by its template closest to the track.
    two = index.fused_top1(crops[:2], "mean")
    assert two.label == "a" and two.entry_id in {"a1", "a2"} and two.score == pytest.approx(0.743, abs=1e-3)
    # One crop: the same answer as the plain top-1.
    (hit,) = index.top1(crops[:1])
    assert index.fused_top1(crops[:1], "max") == hit == index.fused_top1(crops[:1], "mean")
    with pytest.raises(ValueError):
        index.fused_top1(np.zeros((0, 128), np.float32), "max")
    with pytest.raises(ValueError):
        index.fused_top1(crops, "median")


def _fused_top1_per_track(index: WatchlistIndex, crops: np.ndarray, mode: str) -> tuple[str, str, float]:
    """The per-message rule the batch search replaced: one gallery pass per track, np.maximum.at."""
    q = _unit(crops)
    scores = q @ index.embeddings.T
    names = list(dict.fromkeys(index.labels))
    codes = np.array([names.index(label) for label in index.labels])
    per_label = np.full((len(names), q.shape[0]), -np.inf, dtype=np.float32)
    np.maximum.at(per_label, codes, scores.T)
    fused = per_label.max(axis=1) if mode == "max" else per_label.mean(axis=1)
    best = int(np.argmax(fused))
    mine = np.flatnonzero(codes == best)
    entry = int(mine[np.argmax(scores[:, mine].sum(axis=0))])
    return index.entry_ids[entry], index.labels[entry], float(fused[best])


@pytest.mark.parametrize("templates_per_person", [1, 3])
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_batch_search_decides_every_track_as_the_per_track_search_does(templates_per_person: int, mode: str) -> None:
    rng = np.random.default_rng(7)
    people = 300
    # Templates of one person near a common centre, so their scores genuinely compete.
    centres = rng.normal(size=(people, 128))
    n = people * templates_per_person
    emb = _unit(np.repeat(centres, templates_per_person, axis=0) + 0.6 * rng.normal(size=(n, 128)))
    labels = [f"p{i // templates_per_person}" for i in range(len(emb))]
    order = rng.permutation(len(emb))  # persons' templates need not be contiguous in the artifact
    index = WatchlistIndex([f"e{i}" for i in order], [labels[i] for i in order], emb[order])
    # Ten tracks of 1-3 crops: half near a listed person, half strangers.
    tracks = [
        (centres[rng.integers(people)] if t % 2 else rng.normal(size=128)) + rng.normal(size=(1 + t % 3, 128))
        for t in range(10)
    ]
    batch = index.fused_top1_batch(tracks, mode)
    assert len(batch) == len(tracks)
    for hit, crops in zip(batch, tracks, strict=True):
        entry_id, label, score = _fused_top1_per_track(index, crops, mode)
        assert (hit.entry_id, hit.label) == (entry_id, label)
        assert hit.score == pytest.approx(score, abs=1e-5)
        alone = index.fused_top1(crops, mode)  # BLAS may round a (1..3, N) product differently
        assert alone.entry_id == hit.entry_id and alone.score == pytest.approx(hit.score, abs=1e-5)
    assert index.fused_top1_batch([], mode) == []


def _clustered_index(people: int, templates: int, seed: int) -> tuple[WatchlistIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128))
    emb = _unit(np.repeat(centres, templates, axis=0) + 0.7 * rng.normal(size=(people * templates, 128)))
    labels = [f"p{i // templates}" for i in range(len(emb))]
    return WatchlistIndex([f"e{i}" for i in range(len(emb))], labels, emb), centres


@pytest.mark.parametrize("templates", [1, 2])
def test_the_int8_scan_gives_exact_search_decisions_for_listed_people_and_strangers(
    templates: int, built_models: Path
) -> None:
    index, centres = _clustered_index(20_000 // templates, templates, seed=3)  # two scan blocks
    rng = np.random.default_rng(4)
    mated = [centres[rng.integers(len(centres))] + 0.7 * rng.normal(size=(1 + t % 3, 128)) for t in range(60)]
    strangers = [rng.normal(size=(1 + t % 3, 128)) for t in range(60)]
    scanned = WatchlistIndex.from_npz_bytes(index.to_npz_bytes())
    assert scanned.scan is None  # small lists are not given one by default
    scanned.with_scan()
    loaded = WatchlistIndex.from_npz_bytes(scanned.to_npz_bytes())  # the scan travels in the artifact
    assert loaded.scan is not None and len(loaded.scan) == len(index)
    # The error bound puts the exact best entry among the candidates: the same decision, re-scored
    # exactly (not the int8 score), for listed people and strangers alike, one crop or three.
    for tracks in (mated, strangers, [m[:1] for m in mated]):
        for e, a in zip(index.fused_top1_batch(tracks, "max"), loaded.fused_top1_batch(tracks, "max"), strict=True):
            assert (a.entry_id, a.label) == (e.entry_id, e.label)
            assert a.score == pytest.approx(e.score, abs=1e-5)


def test_the_scan_candidates_are_few_and_always_hold_the_exact_best_entry(built_models: Path) -> None:
    """Near-duplicates crowding the best entry: the bound must keep every one that may be best."""
    rng = np.random.default_rng(6)
    base = _unit(rng.normal(size=(1, 128)))
    crowd = _unit(base + 0.004 * rng.normal(size=(30, 128)))  # 30 entries within int8 noise of each other
    emb = np.concatenate([crowd, _unit(rng.normal(size=(3000, 128)))])
    index = WatchlistIndex([f"e{i}" for i in range(len(emb))], [f"p{i}" for i in range(len(emb))], emb).with_scan()
    assert index.scan is not None
    queries = np.concatenate([_unit(base + 0.002 * rng.normal(size=(20, 128))), _unit(rng.normal(size=(20, 128)))])
    exact = (queries @ emb.T).argmax(axis=1)
    for cand, best in zip(index.scan.candidates(queries), exact, strict=True):
        assert best in cand
        assert len(cand) < 100  # a candidate set, not the gallery
    # at_least: every pair scoring at least the floor is proposed.
    r, c = index.scan.at_least(queries, 0.3)
    truth = set(zip(*np.nonzero(queries @ emb.T >= 0.3), strict=True))
    assert truth <= set(zip(r.tolist(), c.tolist(), strict=True))


def test_the_scan_keeps_the_exact_best_when_codes_are_extreme(built_models: Path) -> None:
    """A face whose energy sits in a few components quantises to codes of +-127: the products
    the scan sums then overflow 16-bit intermediates on CPUs whose int8 kernel saturates them, and
    the exact best entry (the query itself) fell out of the candidates on such a host."""
    rng = np.random.default_rng(12)
    peaked = np.zeros((1, 128))
    peaked[0, :6] = 1.0  # six components of 0.41: codes of 127 in the scan
    spread = _unit(rng.normal(size=(4000, 128)))
    emb = np.concatenate([_unit(peaked), spread, _unit(peaked + 0.9 * spread[:50])])
    index = WatchlistIndex([f"e{i}" for i in range(len(emb))], [f"p{i}" for i in range(len(emb))], emb).with_scan()
    assert index.scan is not None
    queries = _unit(np.concatenate([peaked, peaked + 0.05 * rng.normal(size=(5, 128)), -peaked]))
    exact = (queries @ emb.T).argmax(axis=1)
    assert exact[0] == 0
    for cand, best in zip(index.scan.candidates(queries), exact, strict=True):
        assert best in cand
    hits = index.fused_top1_batch([q[None] for q in queries], "max")
    assert [h.index for h in hits] == exact.tolist()


def test_an_artifact_with_signed_scan_codes_loads_with_the_same_decisions(built_models: Path) -> None:
    """Artifacts written before the codes were stored offset (int8 `scan_blocks`) still load: the
    same codes, read as the offset ones, so a deployment built before an upgrade keeps matching."""
    index, centres = _clustered_index(300, 1, seed=13)
    index.with_scan()
    assert index.scan is not None
    with np.load(io.BytesIO(index.to_npz_bytes())) as npz:
        arrays = {k: npz[k] for k in npz.files}
    signed = (arrays["scan_blocks"].astype(np.int16) - 128).astype(np.int8)
    buf = io.BytesIO()
    np.savez(buf, **dict(arrays, scan_blocks=signed))
    old = WatchlistIndex.from_npz_bytes(buf.getvalue())
    assert old.scan is not None and np.array_equal(old.scan.blocks, index.scan.blocks)
    tracks = [centres[i][None] + 0.5 * np.random.default_rng(i).normal(size=(2, 128)) for i in range(20)]
    assert old.fused_top1_batch(tracks, "max") == index.fused_top1_batch(tracks, "max")


def test_a_corrupt_int8_scan_is_an_invalid_index() -> None:
    index, _ = _clustered_index(50, 1, seed=5)
    index.with_scan()
    raw = io.BytesIO(index.to_npz_bytes())
    with np.load(raw) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, bad in (
        ("scan_blocks", arrays["scan_blocks"][:, :64]),  # wrong dimension
        ("scan_blocks", arrays["scan_blocks"].astype(np.int16)),
        ("scan_bounds", np.array([0.0, 0.1, 1.0])),  # no scale
        ("scan_bounds", np.array([np.nan, 0.1, 1.0])),
        ("scan_blocks", -arrays["scan_blocks"]),  # codes of another gallery
    ):
        broken = dict(arrays, **{key: bad})
        buf = io.BytesIO()
        np.savez(buf, **broken)
        with pytest.raises(InvalidIndexError):
            WatchlistIndex.from_npz_bytes(buf.getvalue())
    alone = {k: v for k, v in arrays.items() if k != "scan_bounds"}
    buf = io.BytesIO()
    np.savez(buf, **alone)
    with pytest.raises(InvalidIndexError, match="without the other"):
        WatchlistIndex.from_npz_bytes(buf.getvalue())


def test_loading_and_searching_an_index_with_a_scan_compiles_nothing(built_models: Path) -> None:
    # The match function's cold start: no numba (or any JIT) may be imported to load or search.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from lfr_core.matching import WatchlistIndex\n"
        "e = np.random.default_rng(0).normal(size=(300, 128)).astype('float32')\n"
        "e /= np.linalg.norm(e, axis=1, keepdims=True)\n"
        "i = WatchlistIndex([str(n) for n in range(300)], [str(n) for n in range(300)], e).with_scan()\n"
        "j = WatchlistIndex.from_npz_bytes(i.to_npz_bytes())\n"
        "assert j.fused_top1_batch([e[5:6]], 'max')[0].entry_id == '5'\n"
        "assert 'numba' not in sys.modules and 'llvmlite' not in sys.modules, 'a JIT was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_confusable_pairs_name_different_people_who_score_as_one(built_models: Path) -> None:
    index, _ = _clustered_index(300, 2, seed=8)
    emb = index.embeddings.copy()
    # p7's first template is nearly p9's: one person under two names, the case hygiene must catch.
    emb[14] = _unit((emb[18] + 0.01 * np.random.default_rng(9).normal(size=128))[None])[0]
    twins = WatchlistIndex(index.entry_ids, index.labels, emb)
    pairs = twins.confusable_pairs(threshold=0.9)
    assert [(p.label, p.other_label) for p in pairs] == [("p7", "p9")]
    assert pairs[0].similarity > 0.95
    # Two templates of ONE person are never reported, however alike.
    assert all(p.label != p.other_label for p in twins.confusable_pairs(threshold=-1.0))
    # The int8 scan proposes the same pair, re-scored exactly.
    twins.with_scan()
    assert [(p.entry_id, p.other_entry_id) for p in twins.confusable_pairs(threshold=0.9)] == [("e14", "e18")]


def test_mean_templates_make_one_entry_per_person_under_the_first_photo() -> None:
    from lfr_core.matching import person_templates

    rng = np.random.default_rng(11)
    emb = rng.normal(size=(5, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids, labels = ["b1", "a1", "b2", "a2", "c1"], ["B", "A", "B", "A", "C"]
    got_ids, got_labels, got = person_templates(ids, labels, emb, "mean")
    assert (got_ids, got_labels) == (["b1", "a1", "c1"], ["B", "A", "C"])  # first appearance order
    b = emb[0] + emb[2]
    assert np.allclose(got[0], b / np.linalg.norm(b), atol=1e-6)
    assert np.allclose(got[2], emb[4], atol=1e-6)  # one photo: that photo
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    WatchlistIndex(entry_ids=got_ids, labels=got_labels, embeddings=got)  # a valid index
    each = person_templates(ids, labels, emb, "each")
    assert each[0] == ids and each[1] == labels and np.array_equal(each[2], emb)
    with pytest.raises(InvalidIndexError, match="cancel out"):
        person_templates(["x1", "x2"], ["X", "X"], np.stack([emb[0], -emb[0]]), "mean")
    with pytest.raises(InvalidIndexError, match="3 embeddings but 2 entry ids"):
        person_templates(["x1", "x2"], ["X", "X", "Y"], emb[:3], "mean")
    with pytest.raises(ValueError, match="unknown template mode"):
        person_templates(ids, labels, emb, "median")  # type: ignore[arg-type]


def test_distinct_agrees_with_a_set_on_every_width_and_on_repeats() -> None:
    rng = np.random.default_rng(11)
    for width in (1, 2, 3, 7, 8, 9, 40):
        pool = ["".join(rng.choice(list("abcü0_-"), size=rng.integers(0, width + 1))) for _ in range(300)]
        strings = np.array(pool)
        assert _distinct(strings) == (len(set(pool)) == len(pool)), width
        unique = np.array(sorted(set(pool)))
        assert _distinct(unique)
        if len(unique) > 1:
            assert not _distinct(np.concatenate([unique, unique[-1:]]))


def test_distinct_checks_colliding_hashes_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every hash equal: the answer must come from the exact check among the colliding rows.
    import lfr_core.matching as matching

    monkeypatch.setattr(matching.np, "sort", lambda h: np.zeros_like(h))
    monkeypatch.setattr(matching.np, "isin", lambda h, r: np.ones(len(h), dtype=bool))
    assert _distinct(np.array(["a", "b", "c"]))
    assert not _distinct(np.array(["a", "b", "a"]))


def test_an_artifact_with_several_templates_per_person_fuses_them_after_loading() -> None:
    emb = _unit(np.random.default_rng(5).standard_normal((4, 128)))
    index = WatchlistIndex(["e0", "e1", "e2", "e3"], ["ann", "bob", "ann", "cy"], emb)
    back = WatchlistIndex.from_npz_bytes(index.to_npz_bytes())
    codes, persons, one_each = back._persons()
    assert persons == 3 and not one_each and codes[0] == codes[2] != codes[1]
    single = WatchlistIndex.from_npz_bytes(WatchlistIndex(["e0", "e1"], ["ann", "bob"], emb[:2]).to_npz_bytes())
    assert single._persons()[2]
