"""The open-set metrics, intervals and calibration lookup on synthetic scores with known answers."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_core.calibration import CalibrationTable, Curve, fpir_key, shipped_table, threshold_for
from lfr_core.errors import CalibrationError
from lfr_core.matching import fuse_scores
from lfr_eval.metrics import (
    OpenSetResult,
    Rate,
    clopper_pearson,
    summarise,
    threshold_at_fpir,
    wilson_interval,
)


def test_intervals_match_published_values() -> None:
    # Reference values: Clopper-Pearson and Wilson for 5/10, 0/10, 10/10 (e.g. R's binom.test / prop.test).
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.308497), abs=1e-6)
    assert clopper_pearson(10, 10) == pytest.approx((0.691503, 1.0), abs=1e-6)
    # Zero false alerts in 6,000 searches bounds FPIR only at ~6.1e-4 ("rule of three" / n ~ 5e-4).
    assert clopper_pearson(0, 6000)[1] == pytest.approx(1 - 0.025 ** (1 / 6000), rel=1e-9)
    assert 5.0e-4 < clopper_pearson(0, 6000)[1] < 6.5e-4


def _coverage(interval: object, n: int, p: float) -> float:
    """Exact coverage: sum of Bin(n, p) probabilities of the k whose interval contains p."""
    total = 0.0
    for k in range(n + 1):
        lo, hi = interval(k, n)  # type: ignore[operator]
        if lo <= p <= hi:
            total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                              + k * math.log(p) + (n - k) * math.log1p(-p))
    return total


@pytest.mark.parametrize("p", [0.003, 0.05, 0.5, 0.9])
def test_clopper_pearson_never_covers_less_than_95_percent(p: float) -> None:
    assert _coverage(clopper_pearson, 60, p) >= 0.95


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        Rate(-1, 5).ci  # noqa: B018


def test_threshold_at_fpir_lets_exactly_floor_target_n_through() -> None:
    nm = np.arange(1, 1001) / 1000.0  # 0.001 .. 1.000
    t = threshold_at_fpir(nm, 1e-2)
    assert int(np.sum(nm >= t)) == 10 and 0.990 < t <= 0.991
    # Below 1/n the threshold sits just above the top score: FPIR 0 (only the interval bounds it).
    t = threshold_at_fpir(nm, 1e-4)
    assert t > 1.0 and int(np.sum(nm >= t)) == 0
    # Ties at the cut stay below: never more than the target lets through.
    tied = np.array([0.5] * 50 + [0.1] * 950)
    assert int(np.sum(tied >= threshold_at_fpir(tied, 1e-2))) == 0
    with pytest.raises(ValueError):
        threshold_at_fpir(np.array([]), 1e-2)


def test_open_set_rates_count_failures_to_acquire_and_wrong_identities_as_misses() -> None:
    r = OpenSetResult(
        mated_scores=np.array([0.9, 0.8, 0.7, 0.95, -np.inf]),
        mated_correct=np.array([True, True, True, False, False]),  # one wrong top-1, one no face
        non_mated_scores=np.array([0.2, 0.3, 0.75, 0.4]),
    )
    assert r.rank1() == Rate(3, 5)
    assert r.tpir(0.75) == Rate(2, 5)
    assert r.fpir(0.75) == Rate(1, 4)
    op = r.at_fpir(0.25)  # floor(0.25 * 4) = 1 false alert allowed -> threshold just above 0.4
    assert op.fpir == Rate(1, 4) and op.tpir == Rate(3, 5) and op.fnir == Rate(2, 5)
    s = summarise(r, fpirs=(0.25,))
    assert s["mated"] == 5 and s["non_mated"] == 4 and s["rank1"] == 0.6
    assert s["tpir_at_fpir"] == {"0.25": 0.6}
    json.dumps(s)  # JSON-able as written by `lfr eval`


def test_det_curve_agrees_with_the_rates_at_every_threshold() -> None:
    rng = np.random.default_rng(0)
    r = OpenSetResult(rng.normal(0.6, 0.1, 300), rng.random(300) > 0.05, rng.normal(0.2, 0.1, 2000))
    t, fp, fn = r.det()
    assert np.all(np.diff(fp) <= 0) and np.all(np.diff(fn) >= 0)
    for i in (0, 17, len(t) // 2, len(t) - 1):
        assert fp[i] == pytest.approx(r.fpir(t[i]).value)
        assert fn[i] == pytest.approx(1 - r.tpir(t[i]).value)


def test_fpir_keys_are_written_positionally() -> None:
    assert [fpir_key(f) for f in (1e-2, 1e-3, 2e-4, 1e-4)] == ["0.01", "0.001", "0.0002", "0.0001"]


def test_track_fusion_max_and_mean() -> None:
    s = np.array([[[0.1, 0.6], [0.5, 0.2], [0.3, 0.1]]])  # 1 track, 3 crops, 2 entries
    assert fuse_scores(s, "max")[0] == pytest.approx([0.5, 0.6])
    assert fuse_scores(s, "mean")[0] == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError):
        fuse_scores(s, "median")


def _curve() -> Curve:
    return Curve(
        sizes=(10, 100), targets=(1e-3, 1e-2),
        thresholds={"0.001": (0.50, 0.60), "0.01": (0.40, 0.50)}, searches=(1000, 1000),
    )


def test_curve_interpolates_in_log_size_and_log_target_and_refuses_outside() -> None:
    c = _curve()
    assert c.threshold(1e-3, 10) == pytest.approx(0.50)
    assert c.threshold(1e-3, 100) == pytest.approx(0.60)
    assert c.threshold(1e-3, 5) == pytest.approx(0.50)  # below the table: the smallest size (conservative)
    assert c.threshold(1e-3, 31) == pytest.approx(0.50 + 0.10 * math.log(31 / 10) / math.log(10))
    assert c.threshold(math.sqrt(1e-5), 10) == pytest.approx(0.45)
    for target, size in ((1e-4, 10), (0.1, 10), (1e-3, 101), (1e-3, 0)):
        with pytest.raises(CalibrationError):
            c.threshold(target, size)


def _table() -> CalibrationTable:
    # Max fusion: the threshold rises with the crops fused, as a real table's does.
    fused = {
        n: Curve(_curve().sizes, _curve().targets,
                 {k: tuple(t + 0.05 * (n - 1) for t in row) for k, row in _curve().thresholds.items()}, (900, 900))
        for n in (2, 3)
    }
    return CalibrationTable("m.onnx", {"flip_tta": False}, _curve(), fused, "max", {})


def test_table_round_trips_and_rejects_malformed(tmp_path: Path) -> None:
    _table().write(tmp_path / "c.json")
    back = CalibrationTable.load(tmp_path / "c.json")
    assert back.threshold(1e-3, 100, crops=3) == pytest.approx(0.70)
    assert back.threshold(1e-3, 100, crops=1) == pytest.approx(0.60)
    assert back.fusion_mode == "max"
    (tmp_path / "bad.json").write_text(json.dumps({"format_version": 2, "model": "m"}))
    old = _table().to_dict() | {"format_version": 1}
    (tmp_path / "old.json").write_text(json.dumps(old))
    two_only = _table().to_dict()
    del two_only["fused"]["3"]
    (tmp_path / "two.json").write_text(json.dumps(two_only))
    odd_mode = _table().to_dict() | {"fusion_mode": "median"}
    (tmp_path / "mode.json").write_text(json.dumps(odd_mode))
    for name in ("bad.json", "old.json", "two.json", "mode.json", "missing.json"):
        with pytest.raises(CalibrationError):
            CalibrationTable.load(tmp_path / name)


def test_fpir_at_inverts_the_curve_and_clamps_to_its_range() -> None:
    c = _curve()
    for target in (1e-3, 3e-3, 1e-2):
        assert c.fpir_at(c.threshold(target, 31), 31) == pytest.approx(target, rel=1e-6)
    assert c.fpir_at(0.99, 10) == pytest.approx(1e-3)  # stricter than the table: its strictest target
    assert c.fpir_at(0.01, 10) == pytest.approx(1e-2)


def test_track_thresholds_hold_each_track_size_to_the_one_crop_fpir() -> None:
    t = _table()
    # 0.45 is FPIR 10^-2.5 at size 10: the track thresholds are the fused curves' at that FPIR.
    assert t.track_thresholds(0.45, 10) == pytest.approx([0.50, 0.55])
    # A manual threshold stricter than the table's range keeps its extra margin for tracks too.
    assert t.track_thresholds(0.58, 10) == pytest.approx([0.63, 0.68])
    # Lists larger than the table are held at its largest size (the admin path refuses them first).
    assert t.track_thresholds(0.55, 1000) == t.track_thresholds(0.55, 100)


def test_a_track_is_never_held_to_a_lower_threshold_than_fewer_crops() -> None:
    low = Curve(_curve().sizes, _curve().targets, {"0.001": (0.45, 0.65), "0.01": (0.35, 0.55)}, (9, 9))
    t = replace(_table(), fused={2: low, 3: _curve()}).with_track_floor()
    # Tracks of 2 measured below one crop at size 10: raised to one crop's; elsewhere kept.
    assert t.fused[2].thresholds == {"0.001": (0.50, 0.65), "0.01": (0.40, 0.55)}
    # Tracks of 3 are at least tracks of 2's.
    assert t.fused[3].thresholds == {"0.001": (0.50, 0.65), "0.01": (0.40, 0.55)}


def test_shipped_table_is_monotone_and_covers_the_operating_point() -> None:
    table = shipped_table()
    for n in (2, 3):  # never below fewer crops: a camera's crops may be nearly one picture
        below = table.curve(n - 1)
        for k, row in table.curve(n).thresholds.items():
            assert all(a >= b for a, b in zip(row, below.thresholds[k], strict=True))
    # Stricter target or larger list -> never a lower threshold.
    for size in (1, 20, 100, 600, 1000):
        for crops in (1, 2, 3):
            strict, operating, loose = (threshold_for(f, size, crops) for f in (1e-4, 2e-4, 1e-2))
            assert strict >= operating >= loose
    assert threshold_for(2e-4, 20) <= threshold_for(2e-4, 1000)
    assert 0.3 < threshold_for(2e-4, 600) < 0.8


def test_a_table_made_another_way_than_production_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lfr_core.calibration as calibration

    # Thresholds are false-alert rates only for scores made as production makes them.
    assert {k: shipped_table().pipeline[k] for k in calibration.production_pipeline()} \
        == calibration.production_pipeline()
    gated = {"flip_tta": True, "template": "mean", "min_quality": 0.3}  # production's but the earlier gate
    for pipeline in ({"flip_tta": False, "template": "mean"}, {"flip_tta": True, "template": "each"}, {}, gated):
        replace(_table(), pipeline=pipeline).write(tmp_path / "t.json")
        monkeypatch.setattr(calibration, "TABLE_PATH", tmp_path / "t.json")
        shipped_table.cache_clear()
        try:
            with pytest.raises(CalibrationError, match="rebuild it"):
                threshold_for(2e-4, 20)
        finally:
            monkeypatch.undo()
            shipped_table.cache_clear()


def test_flip_tta_is_mirror_invariant_and_on_as_production_is(built_models: Path) -> None:
    from lfr_core.face.embed import FaceEmbedder
    from lfr_core.matching import PRODUCTION_FLIP_TTA

    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    plain = FaceEmbedder(flip_tta=False)
    tta = FaceEmbedder()
    assert tta.flip_tta is PRODUCTION_FLIP_TTA is True  # what the match function and the build run
    both = plain.embed_both(crops)
    assert np.array_equal(plain.embed(crops), both[0])
    assert np.allclose(tta.embed(crops), both[1], atol=1e-6)
    # With TTA a crop and its mirror image embed to the same vector.
    assert np.allclose(tta.embed(crops), tta.embed(crops[:, :, ::-1]), atol=1e-5)
    assert np.allclose(np.linalg.norm(tta.embed(crops), axis=1), 1.0, atol=1e-5)


def test_false_alerts_at_the_operating_point_are_named_by_pair() -> None:
    from lfr_eval.identification import SearchOutcome, Variant

    # 10,000 non-mated searches: 2e-4 allows 2 above the threshold; the top 3 are one twin pair twice and kin.
    scores = np.concatenate([np.linspace(0.1, 0.4, 9997), [0.9, 0.8, 0.7]])
    pairs = [("stranger", "listed")] * 9997 + [("Venus", "Serena"), ("Venus", "Serena"), ("Joseph", "Sepp")]
    result = OpenSetResult(np.array([0.95]), np.array([True]), scores)
    o = SearchOutcome(Variant(), result, Rate(0, 1), Rate(0, 1), Rate(0, 10_000), ["M"], ["M"] * 10_000, 1, pairs)
    fa = o.false_alert_pairs(2e-4)
    assert fa["false_alerts"] == result.at_fpir(2e-4).fpir.k == 2
    assert fa["top"] == [{"searched": "Venus", "matched": "Serena", "count": 2}]
    wider = o.false_alert_pairs(3e-4)
    assert [(p["searched"], p["count"]) for p in wider["top"]] == [("Venus", 2), ("Joseph", 1)]


# -- label errata ---------------------------------------------------------------------------------


def _lfw_layout(root: Path, people: dict[str, int], genders: dict[str, str] | None = None) -> Path:
    """A small LFW-layout folder of generated JPEGs (noise: errata act on labels, not on faces)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["identity,file,n_images_of_identity,gender"]
    for person, n in people.items():
        (root / "images" / person).mkdir(parents=True)
        for i in range(1, n + 1):
            name = f"{person}_{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / person / name)
            rows.append(f"{person},{name},{n},{(genders or {}).get(person, 'M')}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


_ERRATA = """
format_version = 1
[[entry]]
kind = "wrong_image"
images = ["Ann/Ann_0002.jpg"]
shows = "Bea"
source = "test"
evidence = "seen"
[[entry]]
kind = "same_person"
people = ["Cy_Dee", "Dee_Cy"]
source = "test"
evidence = "seen"
[[entry]]
kind = "two_people_one_name"
person = "Jo"
groups = [["Jo_0001.jpg"], ["Jo_0002.jpg", "Jo_0003.jpg"]]
drop = ["Jo_0004.jpg"]
source = "test"
evidence = "seen"
"""
_PEOPLE = {"Ann": 3, "Bea": 2, "Cy_Dee": 2, "Dee_Cy": 1, "Jo": 4, "Solo": 1}


def test_errata_drop_merge_and_split_exactly_as_written(tmp_path: Path) -> None:
    from lfr_eval.datasets import load_folder
    from lfr_eval.errata import load_errata

    data = _lfw_layout(tmp_path / "d", _PEOPLE)
    (tmp_path / "e.toml").write_text(_ERRATA)
    errata = load_errata(tmp_path / "e.toml")
    assert errata.counts() == {"wrong_image": 1, "same_person": 1, "two_people_one_name": 1}
    before = load_folder(data)
    after = errata.apply(before)
    got: dict[str, list[str]] = {}
    for s in after:
        got.setdefault(s.identity, []).append(s.path.name)
    assert got == {
        "Ann": ["Ann_0001.jpg", "Ann_0003.jpg"],  # the wrong image is gone, not moved to Bea
        "Bea": ["Bea_0001.jpg", "Bea_0002.jpg"],
        # One person, two names: one identity, the kept name's images first (its first enrols).
        "Cy_Dee": ["Cy_Dee_0001.jpg", "Cy_Dee_0002.jpg", "Dee_Cy_0001.jpg"],
        "Jo": ["Jo_0001.jpg"],  # two people under one name: split; Jo_0004 dropped
        "Jo#2": ["Jo_0002.jpg", "Jo_0003.jpg"],
        "Solo": ["Solo_0001.jpg"],
    }
    assert len(before) == 13 and len(after) == 11
    assert all(s.gender == "M" for s in after)  # relabelled samples keep their other fields


def test_errata_change_the_protocol_counts_accordingly(tmp_path: Path) -> None:
    from lfr_eval.datasets import load_folder
    from lfr_eval.errata import load_errata
    from lfr_eval.identification import Variant, WatchlistSplit

    data = _lfw_layout(tmp_path / "d", _PEOPLE)
    (tmp_path / "e.toml").write_text(_ERRATA)
    before = load_folder(data)
    after = load_errata(tmp_path / "e.toml").apply(before)

    def counts(samples: list[Any], size: int) -> tuple[int, int, list[str]]:
        p = WatchlistSplit(samples, size, seed=0)
        mated = sum(len(p.mated_of(x, Variant(enrol_images=1))) for x in p.listed)
        return mated, sum(len(p.by_person[x]) for x in p.non_mated_people()), p.listed

    # As labelled: Ann, Bea, Cy_Dee, Jo have 2+ images; listing all four leaves Dee_Cy and Solo.
    assert counts(before, 4) == (2 + 1 + 1 + 3, 1 + 1, ["Ann", "Bea", "Cy_Dee", "Jo"])
    # With errata: Ann loses her wrong image, Cy_Dee gains Dee_Cy's (no longer a stranger to
    # himself), Jo is one image and Jo#2 two; non-mated: Jo (1 image) and Solo.
    assert counts(after, 4) == (1 + 1 + 2 + 1, 1 + 1, ["Ann", "Bea", "Cy_Dee", "Jo#2"])
    with pytest.raises(ValueError, match=r"1\.\.4"):
        WatchlistSplit(after, 5, seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("Ann/Ann_0002.jpg", "Ann/Ann_0009.jpg"), "no image 'Ann/Ann_0009.jpg'"),
        (lambda t: t.replace('"Dee_Cy"', '"Nobody"'), "no person 'Nobody'"),
        (lambda t: t.replace('drop = ["Jo_0004.jpg"]', ""), "in no group"),
        (lambda t: t.replace('"Jo_0002.jpg", "Jo_0003.jpg"', '"Jo_0002.jpg", "Jo_0003.jpg", "Jo_0001.jpg"'),
         "two groups"),
        (lambda t: t.replace('evidence = "seen"\n[[entry]]\nkind = "same_person"', '[[entry]]\nkind = "same_person"'),
         "evidence"),
        (lambda t: t.replace('kind = "same_person"', 'kind = "look_alike"'), "kind must be one of"),
        (lambda t: t.replace("format_version = 1", "format_version = 2"), "format_version"),
        (lambda t: t + '[[entry]]\nkind = "wrong_image"\nimages = ["Jo/Jo_0004.jpg"]\nsource = "x"\nevidence = "y"\n',
         "both name"),
        (lambda t: t + "[[entry]\n", "errata file"),
    ],
)
def test_errata_that_do_not_fit_the_dataset_are_refused(
    tmp_path: Path, change: Any, message: str
) -> None:
    from lfr_eval.datasets import load_folder
    from lfr_eval.errata import ErrataError, load_errata

    data = _lfw_layout(tmp_path / "d", _PEOPLE)
    (tmp_path / "e.toml").write_text(change(_ERRATA))
    with pytest.raises(ErrataError, match=re.escape(message)):
        load_errata(tmp_path / "e.toml").apply(load_folder(data))


def test_lfr_eval_refuses_a_missing_errata_file_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lfr_cli.main import main

    data = _lfw_layout(tmp_path / "d", _PEOPLE)
    rc = main(["eval", "--dataset", str(data), "--errata", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope.toml not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing measured, nothing written


def test_shipped_lfw_dev_errata_parse_and_name_only_what_lfw_dev_holds(lfw_dir: Path) -> None:
    from lfr_eval.datasets import LFW_DEV_ERRATA, load_folder, resolve_errata

    errata = resolve_errata(None, None)  # the default for lfw-dev
    assert errata is not None and errata.path == LFW_DEV_ERRATA
    assert resolve_errata("none", None) is None and resolve_errata(None, tmp := lfw_dir) is None and tmp
    labelled = load_folder(lfw_dir)
    fixed = errata.apply(labelled)  # refuses any entry naming an image or person not in lfw-dev
    dropped = sum(len(e.images) for e in errata.entries if e.kind == "wrong_image")
    dropped += sum(len(e.drop) for e in errata.entries)
    assert len(fixed) == len(labelled) - dropped
    names = {s.identity for s in fixed}
    for e in errata.entries:
        assert e.source and e.evidence
        if e.kind == "same_person":
            assert e.people[0] in names and not set(e.people[1:]) & names
    # Siblings are different people: they stay two identities.
    assert {"Isabela_Moraes", "Carolina_Moraes"} <= names
    # The photo filed as Carlos Ruckauf shows Eduardo Duhalde: it is out of every search.
    assert "Carlos_Ruckauf" not in names and "Eduardo_Duhalde" in names


def _gallery(people: int, per_person: int, seed: int = 0) -> Any:
    from lfr_eval.calibrate import Gallery

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def noisy(c: np.ndarray, k: int) -> np.ndarray:
        x = c + rng.normal(scale=0.1, size=(k, 16))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    names = [f"p{i:03d}" for i in range(people)]
    shots = {n: noisy(centres[i], per_person) for i, n in enumerate(names)}
    return Gallery({n: s[0] for n, s in shots.items()}, shots, {n: s[1:] for n, s in shots.items()})


def test_pooled_searches_draw_lists_until_each_cell_rests_on_enough_non_mated_searches() -> None:
    from lfr_eval.calibrate import build_curve, pooled_searches

    g = _gallery(60, 4)
    few = pooled_searches(g, 50, lists=2, seed=0)
    assert few.lists == 2 and few.non_mated.size == 2 * 10 * 4  # 10 unlisted people x 4 images per list
    many = pooled_searches(g, 50, lists=2, seed=0, min_searches=1000)
    assert many.lists == 25 and many.non_mated.size == 1000
    assert np.array_equal(many.non_mated[:80], few.non_mated)  # the same first lists, then more
    # Mated searches: every listed person's probes other than the enrolment image, top-1 over the list.
    assert many.mated_scores.size == 25 * 50 * 3 and many.mated_correct.mean() > 0.9
    tracks = pooled_searches(g, 50, lists=1, seed=0, fusion=(3, "max"), min_searches=500)
    assert tracks.non_mated.size >= 500 and tracks.mated_scores.size == tracks.lists * 50  # 1 track of 3 each
    curve = build_curve(g, [10, 50], [1e-2], lists=2, seed=0, min_searches=1000)
    assert curve.searches == (1000, 1000) and curve.lists == (5, 25)
    back = Curve.from_dict(curve.to_dict())  # the lists per size are kept in the table
    assert back.lists == curve.lists and back.searches == curve.searches


def test_production_gain_compares_old_and_new_thresholds_on_the_same_mated_searches() -> None:
    from lfr_core.calibration import CalibrationTable
    from lfr_eval.calibrate import Pooled, production_gain

    got = Pooled(np.array([0.1] * 99 + [0.9]), np.array([0.45, 0.55, 0.65, 0.75]), np.array([True] * 4), lists=1)
    old = _table()  # size 10 at 1e-2: threshold 0.40; size 100: 0.50
    new = CalibrationTable("m.onnx", dict(old.pipeline),
                           Curve((10, 100), (1e-3, 1e-2), {"0.001": (0.5, 0.6), "0.01": (0.3, 0.7)}, (1, 1)),
                           old.fused, "max", {})
    rows = production_gain(new, old, {1: {10: got, 100: got}}, sizes=(10, 100, 1000), targets=(1e-2,))
    by = {r["size"]: r for r in rows}
    assert set(by) == {10, 100}  # no pooled searches for 1000: no row
    assert by[10]["before"]["tpir"]["k"] == 4 and by[10]["after"]["tpir"]["k"] == 4
    assert by[100]["before"]["threshold"] == pytest.approx(0.5) and by[100]["before"]["tpir"]["k"] == 3
    assert by[100]["after"]["threshold"] == pytest.approx(0.7) and by[100]["after"]["tpir"]["k"] == 1
    assert by[100]["after"]["fpir"]["k"] == 1 and by[100]["after"]["fpir"]["n"] == 100
    # A table whose scores were made another way (here: with flip TTA) has no comparable thresholds.
    tta = replace(new, pipeline={"flip_tta": True})
    other = production_gain(tta, old, {1: {10: got}}, sizes=(10,), targets=(1e-2,))
    assert other[0]["before"]["threshold"] is None and "pipeline" in other[0]["before"]["why"]
    assert other[0]["after"]["tpir"]["k"] == 4
    outside = production_gain(new, None, {1: {1000: got}}, sizes=(1000,), targets=(1e-2,))
    assert outside[0]["after"]["threshold"] is None and "above the largest" in outside[0]["after"]["why"]
