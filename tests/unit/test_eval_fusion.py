"""The surveillance candidates measured by `lfr eval --ablation`: their rules and their variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_core.matching import WatchlistIndex
from lfr_eval.datasets import Sample
from lfr_eval.embeddings import Embeddings, Probe
from lfr_eval.fusion import mean_embedding, quality_weights, track_top1
from lfr_eval.identification import Variant, WatchlistSplit, ablation_variants, evaluate


def _unit(rng: np.random.Generator, n: int, d: int = 128) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _index(rng: np.random.Generator) -> WatchlistIndex:
    # p0 has two templates (max over templates per crop), the others one.
    return WatchlistIndex([f"e{i}" for i in range(5)], ["p0", "p0", "p1", "p2", "p3"], _unit(rng, 5))


def test_feature_fusion_of_identical_crops_is_the_single_crop_search() -> None:
    rng = np.random.default_rng(0)
    index = _index(rng)
    for crop in _unit(rng, 4):
        one = index.top1(crop[None])[0]
        fused = track_top1(index, np.stack([crop, crop, crop]), [0.5, 0.9, 0.1], "feature")
        assert fused.label == one.label and fused.score == pytest.approx(one.score, abs=1e-6)


def test_feature_fusion_searches_the_normalised_mean_not_a_crop() -> None:
    rng = np.random.default_rng(1)
    index = _index(rng)
    target = index.embeddings[2]  # p1
    # Two noisy frames of p1: each scores lower than their mean does (the noise averages out).
    frames = _unit(rng, 2) * 0.8 + target
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    hit = track_top1(index, frames, [1.0, 1.0], "feature")
    assert hit.label == "p1"
    assert hit.score > max(float(f @ target) for f in frames)
    assert np.allclose(np.linalg.norm(mean_embedding(frames)), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="cancel out"):
        mean_embedding(np.stack([target, -target]))


def test_quality_weights_of_equal_quality_are_mean_fusion() -> None:
    rng = np.random.default_rng(2)
    index = _index(rng)
    for _ in range(20):
        crops = _unit(rng, 3)
        mean = index.fused_top1(crops, "mean")
        q = track_top1(index, crops, [0.6, 0.6, 0.6], "quality")
        assert (q.label, q.entry_id) == (mean.label, mean.entry_id)
        assert q.score == pytest.approx(mean.score, abs=1e-5)


def test_quality_weighting_lets_the_sharp_crop_outweigh_blurred_ones() -> None:
    rng = np.random.default_rng(3)
    index = _index(rng)
    sharp = index.embeddings[3]  # p2, seen clearly once
    blurred = np.stack([index.embeddings[4], index.embeddings[4]])  # p3 twice, at low quality
    crops = np.vstack([sharp[None], blurred])
    assert index.fused_top1(crops, "mean").label == "p3"  # unweighted, the two blurred crops win
    hit = track_top1(index, crops, [0.9, 0.1, 0.1], "quality")
    assert hit.label == "p2" and hit.entry_id == "e3"
    expected = 0.9 / 1.1 * 1.0 + 0.2 / 1.1 * float(index.embeddings[4] @ sharp)
    assert hit.score == pytest.approx(expected, abs=1e-5)


def test_quality_weights_and_modes_refuse_what_they_cannot_fuse() -> None:
    assert np.allclose(quality_weights([0.0, 0.0]), [0.5, 0.5])  # no information: equal weights
    assert np.allclose(quality_weights([-1.0, 1.0]), [0.0, 1.0])
    rng = np.random.default_rng(4)
    index = _index(rng)
    with pytest.raises(ValueError, match="2 crops but 3 qualities"):
        track_top1(index, _unit(rng, 2), [0.5, 0.5, 0.5], "quality")
    with pytest.raises(ValueError, match="one quality per crop"):
        quality_weights([])
    with pytest.raises(ValueError, match="unknown fusion mode 'median'"):
        track_top1(index, _unit(rng, 2), [0.5, 0.5], "median")


class _Emb:
    """Stands in for `lfr_eval.embeddings.Embeddings` with chosen vectors (the rules act on vectors)."""

    def __init__(self, enrolled: dict[Path, Any], probes: dict[Path, Probe]) -> None:
        self.enrolled, self.probes = enrolled, probes

    def need_flip(self, flip: bool) -> None:
        pass

    enrolled_vectors = Embeddings.enrolled_vectors  # the real rule, over the chosen vectors


def _split_and_emb(rng: np.random.Generator, quality: float = 0.9) -> tuple[WatchlistSplit, _Emb]:
    people = {f"p{i}": 5 for i in range(4)} | {f"s{i}": 3 for i in range(6)}
    centres = {p: _unit(rng, 1)[0] for p in people}
    samples, enrolled, probes = [], {}, {}
    for p, n in people.items():
        for j in range(n):
            path = Path(f"/x/{p}/{p}_{j:04d}.jpg")
            samples.append(Sample(p, path, "M"))
            v = centres[p] + 0.3 * _unit(rng, 1)[0]
            v = (v / np.linalg.norm(v)).astype(np.float32)
            enrolled[path] = (v, v)
            probes[path] = Probe(plain=v, flip=v, quality=quality, iod=30.0)
    # Everyone has 2+ images: 4 of the 10 are listed (seeded), the other 6 search non-mated.
    return WatchlistSplit(samples, 4, seed=0), _Emb(enrolled, probes)


def test_a_mean_template_of_one_photo_is_that_photo() -> None:
    split, emb = _split_and_emb(np.random.default_rng(5))
    one_max = evaluate(split, emb, Variant(enrol_images=1, template="each"))  # type: ignore[arg-type]
    one_mean = evaluate(split, emb, Variant(enrol_images=1, template="mean"))  # type: ignore[arg-type]
    # The same searches up to the float rounding of renormalising a unit vector.
    assert np.array_equal(one_max.result.mated_correct, one_mean.result.mated_correct)
    assert np.allclose(one_max.result.mated_scores, one_mean.result.mated_scores, atol=1e-6)
    assert np.allclose(one_max.result.non_mated_scores, one_mean.result.non_mated_scores, atol=1e-6)
    # With three photos the mean is one entry per person and the searches change.
    three_max = evaluate(split, emb, Variant(enrol_images=3, template="each", probe_from=3))  # type: ignore[arg-type]
    three_mean = evaluate(split, emb, Variant(enrol_images=3, template="mean", probe_from=3))  # type: ignore[arg-type]
    assert three_max.result.n_mated == three_mean.result.n_mated
    assert not np.array_equal(three_max.result.mated_scores, three_mean.result.mated_scores)


def test_the_gate_sweep_counts_crops_below_its_gate_as_failures_to_acquire() -> None:
    split, emb = _split_and_emb(np.random.default_rng(6), quality=0.35)
    low = evaluate(split, emb, Variant(gate=0.2))  # type: ignore[arg-type]
    high = evaluate(split, emb, Variant(gate=0.4))  # type: ignore[arg-type]
    assert low.fta_mated.k == 0 and low.fta_non_mated.k == 0
    assert high.fta_mated.k == high.fta_mated.n > 0 and high.fta_non_mated.k == high.fta_non_mated.n > 0


def test_the_production_gate_sweep_holds_every_gate_to_the_same_strangers_walking_past() -> None:
    from lfr_core.calibration import shipped_table
    from lfr_core.matching import PRODUCTION_MIN_QUALITY
    from lfr_eval.identification import OPERATING_FPIR, PRODUCTION_GATE_SWEEP, gate_sweep, gate_sweep_variants

    split, emb = _split_and_emb(np.random.default_rng(10), quality=0.9)
    for i, path in enumerate(sorted(emb.probes)):
        if i % 3 == 0:
            emb.probes[path].quality = 0.05  # a blurred face: only the gates below 0.1 keep it
        elif i % 3 == 1:
            emb.probes[path].iod = 12.0  # too small to identify: only "no gate" keeps it
    vs = gate_sweep_variants(Variant())
    assert [v.gate for v in vs] == list(PRODUCTION_GATE_SWEEP) and PRODUCTION_MIN_QUALITY in PRODUCTION_GATE_SWEEP
    rows = {r["gate"]: r for r in gate_sweep([evaluate(split, emb, v) for v in vs])}  # type: ignore[arg-type]
    dropped = {g: rows[g]["failure_to_acquire"]["non_mated"]["k"] for g in rows}
    assert dropped[None] == 0 < dropped[0.0] < dropped[0.1] == dropped[0.3]
    t = shipped_table().threshold(OPERATING_FPIR, 4)
    walked_past = sum(len(split.by_person[p]) for p in split.non_mated_people())
    for r in rows.values():
        cell = r["per_stranger"]["0.0002"]
        # Every stranger who walked past is in the denominator, whichever gate dropped them.
        assert cell["fpir"]["n"] == r["failure_to_acquire"]["non_mated"]["n"] == walked_past
        assert r["at_shipped_threshold"]["threshold"] == pytest.approx(t, abs=1e-6)
        assert r["at_shipped_threshold"]["fpir"]["n"] == walked_past
    # A dropped listed face is a miss: the stricter the gate, the fewer found at one threshold.
    found = [rows[g]["at_shipped_threshold"]["tpir"]["k"] for g in PRODUCTION_GATE_SWEEP]
    assert found == sorted(found, reverse=True) and found[0] > found[-1]


def test_tracks_under_the_candidate_fusions_are_decided_by_their_rule() -> None:
    split, emb = _split_and_emb(np.random.default_rng(7))
    got = {m: evaluate(split, emb, Variant(enrol_images=1, fusion=3, fusion_mode=m))  # type: ignore[arg-type]
           for m in ("max", "mean", "feature", "quality")}
    n = {m: (o.result.n_mated, o.result.n_non_mated) for m, o in got.items()}
    assert len(set(n.values())) == 1  # the same tracks under every rule
    # Equal qualities: quality-weighted fusion is mean fusion, track for track.
    assert np.allclose(got["quality"].result.mated_scores, got["mean"].result.mated_scores, atol=1e-5)
    assert np.allclose(got["quality"].result.non_mated_scores, got["mean"].result.non_mated_scores, atol=1e-5)
    # The renormalised mean of unit vectors scores at least the mean of the scores (mated: positive).
    f, mx, mn = (got[m].result.mated_scores for m in ("feature", "max", "mean"))
    assert np.all(f >= mn - 1e-5) and not np.allclose(f, mn) and not np.allclose(f, mx)


def test_the_ablation_holds_each_candidate_as_a_variant() -> None:
    vs = {v.name: v for v in ablation_variants(Variant())}
    assert len(vs) == len(ablation_variants(Variant()))  # names are unique
    gates = sorted(v.gate for v in vs.values() if v.fusion == 1 and not v.flip and v.probe_from is None
                   and v.gate is not None)
    assert gates == [0.0, 0.2, 0.3, 0.4, 0.5]
    modes = {v.fusion_mode for v in vs.values() if v.fusion == 3}
    assert modes == {"max", "mean", "feature", "quality"}
    assert any(v.flip and v.fusion == 1 and v.enrol_images == 1 for v in vs.values())
    assert any(v.template == "mean" and v.enrol_images == 3 and not v.flip for v in vs.values())


def test_gain_intervals_match_newcombes_published_values() -> None:
    from lfr_eval.metrics import Rate, difference_interval

    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10.
    for (a, b), (lo, hi) in {((56, 70), (48, 80)): (0.0524, 0.3339), ((9, 10), (3, 10)): (0.1705, 0.8090),
                             ((5, 56), (0, 29)): (-0.0381, 0.1926)}.items():
        d, low, high = difference_interval(Rate(a[0], a[1]), Rate(b[0], b[1]))
        assert d == pytest.approx(a[0] / a[1] - b[0] / b[1])
        assert (round(low, 4), round(high, 4)) == (lo, hi)
    with pytest.raises(ValueError, match="both sides"):
        difference_interval(Rate(0, 0), Rate(1, 2))


def test_each_candidate_gains_over_production_on_the_same_searches() -> None:
    from lfr_eval.identification import gains, reference_of

    vs = ablation_variants(Variant())
    refs = {v.name: (r.name if (r := reference_of(v, vs)) else None) for v in vs}
    earlier = "one photo, gate 0.3, no TTA (the earlier production)"
    assert refs["flip TTA"] == refs["gate 0.2"] == earlier
    production = "flip TTA + enrol 3 mean (production)"
    assert refs["enrol 3, mean template"] == refs[production] == "enrol 1 (probes from image 4)"
    assert refs["tracks of 3, feature fusion (mean embedding)"] == "tracks of 3, max fusion"
    assert refs[earlier] is None
    # On one split: the gate sweep's gain is measured against production at each side's own threshold.
    split, emb = _split_and_emb(np.random.default_rng(8), quality=0.9)
    for i, path in enumerate(sorted(emb.probes)):
        if i % 2:
            emb.probes[path].quality = 0.35  # passes the production gate (0.3), not 0.4
    got = [evaluate(split, emb, v) for v in vs[:1] + [v for v in vs if v.name == "gate 0.4"]]  # type: ignore[arg-type]
    (g,) = gains(got)
    assert g["variant"] == "gate 0.4" and g["reference"] == vs[0].name
    prod, strict = (o.result.at_fpir(1e-3).tpir for o in got)
    assert strict.n == prod.n and strict.k < prod.k  # the same mated searches, fewer acquired
    cell = g["tpir_gain"]["0.001"]
    assert cell["gain"] == pytest.approx(strict.value - prod.value, abs=1e-4) and cell["gain"] < 0
    assert cell["ci95"][0] < cell["gain"] < cell["ci95"][1] and not cell["resolvable"]


def test_per_stranger_fpir_counts_gated_out_strangers_as_passers_by_who_did_not_alert() -> None:
    from lfr_eval.identification import gains

    split, emb = _split_and_emb(np.random.default_rng(9), quality=0.9)
    for i, path in enumerate(sorted(emb.probes)):
        if i % 2:
            emb.probes[path].quality = 0.35  # passes gate 0.3, not 0.4
    vs = ablation_variants(Variant())
    prod, strict = (evaluate(split, emb, v) for v in [vs[0], next(v for v in vs if v.name == "gate 0.4")])  # type: ignore[arg-type]
    assert strict.fta_non_mated.k > prod.fta_non_mated.k  # the stricter gate drops more strangers
    for o in (prod, strict):
        walked = o.per_stranger()
        # Every stranger who walked past is in the denominator, whichever gate dropped them...
        assert walked.n_non_mated == o.result.n_non_mated + o.fta_non_mated.k == o.fta_non_mated.n
        # ...and a dropped one never alerts: the false alerts at any threshold are the same.
        for t in (0.0, 0.3, 0.6):
            assert walked.fpir(t).k == o.result.fpir(t).k
        assert np.array_equal(walked.mated_scores, o.result.mated_scores)
    assert prod.per_stranger().n_non_mated == strict.per_stranger().n_non_mated  # one set of passers-by
    (g,) = gains([prod, strict])
    assert set(g["tpir_gain_per_stranger"]) == set(g["tpir_gain"])
