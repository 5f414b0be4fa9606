"""Building the calibration table (`lfr calibrate`, `lfr eval --calibrate-out`): evaluation code.

The table is READ at runtime by `lfr_core.calibration` (the Lambda layer ships that, not this): see
its docstring for the protocol. Everything here works on embeddings in memory only.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lfr_core.calibration import CalibrationTable, Curve, fpir_key, production_pipeline
from lfr_core.contracts import MAX_TRACK_CROPS, utcnow
from lfr_core.errors import CalibrationError
from lfr_core.face.embed import EMBEDDING_DIM
from lfr_core.matching import (
    PRODUCTION_FLIP_TTA,
    PRODUCTION_MIN_QUALITY,
    PRODUCTION_TEMPLATE,
    FusionMode,
    TemplateMode,
    fuse_scores,
    person_templates,
)
from lfr_eval.datasets import Sample, errata_note
from lfr_eval.embeddings import Embeddings
from lfr_eval.errata import Errata
from lfr_eval.metrics import OpenSetResult, threshold_at_fpir


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


DEFAULT_SIZES: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
DEFAULT_TARGETS: tuple[float, ...] = (1e-2, 1e-3, 2e-4, 1e-4)
MIN_CALIBRATION_SEARCHES = 30_000  # per cell: FPIR 2e-4 then rests on >= 6 false alerts
PRODUCTION_SIZES = (20, 200, 1000, 2000)  # the watchlist sizes `lfr eval --calibrate-out` reports TPIR for
OPERATING_FPIR = 2e-4  # the bar; NPL measured the Met at about 1 in 6,000
# Enrolment photos per listed person that calibration and `lfr eval` assume an admin uploads: up
# to this many of a person's first images, always leaving one to search (people with 2 images
# enrol 1). More photos only help a mean template; fewer are what the table's mix already holds.
ENROL_PHOTOS = 3


def enrolled_count(images: int, photos: int = ENROL_PHOTOS) -> int:
    """How many of a listed person's first images enrol: up to `photos`, leaving one to search."""
    return max(1, min(photos, images - 1))


@dataclass(frozen=True)
class Gallery:
    """Embeddings to calibrate on, in memory only: one enrolment per person, probes per person."""

    enrol: Mapping[str, np.ndarray]  # person -> (128,) enrolment embedding (build path)
    probes: Mapping[str, np.ndarray]  # person -> (k, 128) acquired probe embeddings (edge path)
    # person -> (k, 128) probes other than the enrolment image: the mated searches when listed
    mated: Mapping[str, np.ndarray] = field(default_factory=dict)


def _top1(entries: np.ndarray, probes: np.ndarray) -> np.ndarray:
    return (probes @ entries.T).max(axis=1) if probes.size else np.zeros(0, np.float32)


@dataclass(frozen=True)
class Pooled:
    """What a cell of the table rests on: non-mated scores pooled over `lists` lists, and the
    mated searches of the listed people on the same lists (top-1 score, right person or not)."""

    non_mated: np.ndarray
    mated_scores: np.ndarray
    mated_correct: np.ndarray
    lists: int


def pooled_searches(
    gallery: Gallery,
    size: int,
    lists: int,
    seed: int,
    fusion: tuple[int, str] | None = None,
    pool: Sequence[str] | None = None,
    min_searches: int = 0,
    max_lists: int = 2000,
) -> Pooled:
    """Top-1 (or fused-track) scores pooled over at least `lists` random lists of `size` people,
    and more lists (up to `max_lists`) until `min_searches` non-mated searches are pooled."""
    candidates = sorted(pool if pool is not None else gallery.enrol)
    if size > len(candidates):
        raise CalibrationError(f"cannot draw a list of {size} from {len(candidates)} enrollable people")
    rng = random.Random(f"{seed}/{size}")
    # Mated tracks are drawn from their own stream: measuring TPIR must not change which lists and
    # non-mated tracks the thresholds are set on.
    mated_rng = random.Random(f"{seed}/{size}/mated")
    out: list[np.ndarray] = []
    m_scores: list[np.ndarray] = []
    m_correct: list[np.ndarray] = []
    pooled_n = drawn = 0
    while drawn < lists or (pooled_n < min_searches and drawn < max_lists):
        drawn += 1
        names = sorted(rng.sample(candidates, size))
        listed = set(names)
        entries = np.stack([gallery.enrol[p] for p in names])
        others = [p for p in sorted(gallery.probes) if p not in listed]
        if fusion is None:
            probes = [gallery.probes[p] for p in others if len(gallery.probes[p])]
            if probes:
                out.append(_top1(entries, np.concatenate(probes)))
            mated = [(i, gallery.mated[p]) for i, p in enumerate(names) if len(gallery.mated.get(p, ()))]
            if mated:
                s = np.concatenate([m for _, m in mated]) @ entries.T
                truth = np.concatenate([np.full(len(m), i) for i, m in mated])
                m_scores.append(s.max(axis=1))
                m_correct.append(s.argmax(axis=1) == truth)
        else:
            n, mode = fusion
            tracks = [t for p in others for t in tracks_of(gallery.probes[p], n, rng)]
            if tracks:
                scores = np.stack(tracks) @ entries.T  # (T, n, entries)
                out.append(fuse_scores(scores, mode).max(axis=1))
            mated_t = [(i, t) for i, p in enumerate(names)
                       for t in tracks_of(gallery.mated.get(p, _EMPTY), n, mated_rng)]
            if mated_t:
                fused = fuse_scores(np.stack([t for _, t in mated_t]) @ entries.T, mode)
                m_scores.append(fused.max(axis=1))
                m_correct.append(fused.argmax(axis=1) == np.array([i for i, _ in mated_t]))
        pooled_n += int(out[-1].size) if out else 0
    def cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(xs) if xs else np.zeros(0, dtype)

    return Pooled(cat(out, np.float32), cat(m_scores, np.float32), cat(m_correct, bool), drawn)


_EMPTY = np.zeros((0, 1), np.float32)


def tracks_of(embs: np.ndarray, n: int, rng: random.Random) -> list[np.ndarray]:
    """Disjoint tracks of n crops of one person, in a seeded random order (a person yields len//n)."""
    order = list(range(len(embs)))
    rng.shuffle(order)
    return [embs[order[i : i + n]] for i in range(0, len(order) - n + 1, n)]


def build_curve(
    gallery: Gallery,
    sizes: Sequence[int],
    targets: Sequence[float],
    lists: int,
    seed: int,
    fusion: tuple[int, str] | None = None,
    pool: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    min_searches: int = 0,
    keep: dict[int, Pooled] | None = None,
) -> Curve:
    """Thresholds per size and target; `min_searches` draws more lists where a size leaves few
    non-mated searches per list, so that each threshold rests on enough of them (at FPIR 2e-4,
    25,000 searches allow 5 false alerts). `keep` receives each size's pooled searches."""
    rows: dict[str, list[float]] = {fpir_key(t): [] for t in targets}
    searches: list[int] = []
    drawn: list[int] = []
    for size in sizes:
        got = pooled_searches(gallery, size, lists, seed, fusion, pool, min_searches)
        scores = got.non_mated
        if scores.size == 0:
            raise CalibrationError(f"no non-mated searches left for lists of {size}")
        if keep is not None:
            keep[size] = got
        searches.append(int(scores.size))
        drawn.append(got.lists)
        for t in targets:
            rows[fpir_key(t)].append(threshold_at_fpir(scores, t))
        if progress:
            progress(f"size {size}: {scores.size} non-mated {'tracks' if fusion else 'searches'} "
                     f"over {got.lists} lists")
    # Monotone in size: a larger list must never get a lower threshold than a smaller one.
    mono = {k: tuple(np.maximum.accumulate(np.asarray(v)).tolist()) for k, v in rows.items()}
    return Curve(tuple(sizes), tuple(targets), mono, tuple(searches), tuple(drawn))


def calibrate_table(
    samples: Sequence[Sample],
    emb: Embeddings,
    sizes: Sequence[int],
    targets: Sequence[float],
    lists: int,
    seed: int,
    fusion_mode: FusionMode,
    flip: bool = PRODUCTION_FLIP_TTA,
    gate: float | None = PRODUCTION_MIN_QUALITY,
    enrol_photos: int = ENROL_PHOTOS,
    template: TemplateMode = PRODUCTION_TEMPLATE,
    pool: Sequence[str] | None = None,
    provenance: dict[str, Any] | None = None,
    log: Callable[[str], None] = _stderr_log,
    min_searches: int = 0,
    keep: dict[int, dict[int, Pooled]] | None = None,
) -> CalibrationTable:
    """A calibration table from the people in `samples` (enrolment = each person's first
    `enrol_photos` images but one, on the build path, made one template per person by the build's
    rule `person_templates`). Listed people are drawn from those with 2+ images (`pool` overrides), as in
    `lfr eval`: listing people with one image would need their photo enrolled on the build path too
    (no quality gate), and enrolling it from its gated edge crop instead lowers every threshold (a
    gated template draws fewer strangers; measured: FPIR 0.019 at a 1e-2 threshold on held-apart
    people). `keep`, if given, receives the pooled searches per crops-per-decision and size."""
    emb.need_flip(flip)
    by: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by[s.identity].append(s)
    candidates = sorted(pool if pool is not None else [p for p, v in by.items() if len(v) >= 2])
    if enrol_photos < 1 or (template == "each" and enrol_photos > 1):
        raise CalibrationError("calibration enrols 1+ photos as a mean template, or 1 photo as it is")

    def enrolled_from(p: str) -> int:
        return enrolled_count(len(by[p]), enrol_photos)

    emb.enrol(s.path for p in candidates for s in by[p][: enrolled_from(p)])
    emb.probe([s.path for s in samples])
    enrol = {}
    for p in candidates:
        got = emb.enrolled_vectors((s.path for s in by[p][: enrolled_from(p)]), flip)
        if len(got):
            enrol[p] = person_templates([p] * len(got), [p] * len(got), got, template)[2][0]

    def stack(imgs: Sequence[Sample]) -> np.ndarray:
        vecs = [g.emb(flip) for g in (emb.probes[s.path] for s in imgs) if g.acquired(gate)]
        return np.stack(vecs) if vecs else np.zeros((0, EMBEDDING_DIM), np.float32)

    gallery = Gallery(enrol, {p: stack(imgs) for p, imgs in by.items()},
                      {p: stack(imgs[enrolled_from(p):]) for p, imgs in by.items()})
    sizes = [s for s in sizes if s <= len(enrol)]
    kept: dict[int, dict[int, Pooled]] = keep if keep is not None else {}
    kept[1] = {}
    single = build_curve(gallery, sizes, targets, lists, seed, progress=log, min_searches=min_searches, keep=kept[1])
    fused = {}
    for n in range(2, MAX_TRACK_CROPS + 1):
        kept[n] = {}
        fused[n] = build_curve(gallery, sizes, targets, lists, seed, fusion=(n, fusion_mode), progress=log,
                               min_searches=min_searches, keep=kept[n])
    return CalibrationTable(
        model=emb.embedder.model_name,
        pipeline={"flip_tta": flip, "template": template, "min_quality": gate,
                  "enrolment": f"{template} of the first {enrol_photos} images but one (at least 1), build path",
                  "probe": "edge FaceCropper central face, JPEG q95 wire",
                  "tracks": "n different images of one person",
                  "listed": "people with 2+ images" if pool is None else "a given pool"},
        single=single, fused=fused, fusion_mode=fusion_mode,
        provenance=provenance or {},
    ).with_track_floor()


def production_gain(
    after: CalibrationTable, before: CalibrationTable | None, kept: dict[int, dict[int, Pooled]],
    sizes: Sequence[int] = PRODUCTION_SIZES, targets: Sequence[float] = (1e-2, 1e-3, OPERATING_FPIR),
) -> list[dict[str, Any]]:
    """TPIR on the (clean) mated searches of the calibration lists, at the new table's threshold
    and at the one the table it replaces gave: what production gains from the new table."""
    if before is not None and any(before.pipeline.get(k) != after.pipeline.get(k) for k in production_pipeline()):
        before = None  # its thresholds are for scores made another way: not comparable on these
    rows = []
    for crops, by_size in sorted(kept.items()):
        for size in sizes:
            got = by_size.get(size)
            if got is None:
                continue
            res = OpenSetResult(got.mated_scores, got.mated_correct, got.non_mated)
            for target in targets:
                row: dict[str, Any] = {"crops": crops, "size": size, "target_fpir": target,
                                       "mated": res.n_mated, "non_mated": res.n_non_mated, "lists": got.lists}
                for name, table in (("after", after), ("before", before)):
                    try:
                        t = table.threshold(target, size, crops) if table is not None else None
                    except CalibrationError as exc:
                        row[name] = {"threshold": None, "why": str(exc)}
                        continue
                    if t is None:
                        row[name] = {"threshold": None, "why": "no table made with this pipeline"}
                        continue
                    row[name] = {"threshold": round(t, 6), "tpir": res.tpir(t).to_dict(), "fpir": res.fpir(t).to_dict()}
                rows.append(row)
    return rows



@dataclass(frozen=True)
class RebuiltTable:
    table: CalibrationTable
    gain: list[dict[str, Any]]  # `production_gain` against the table it replaced

    def summary(self, out: Path) -> dict[str, Any]:
        curves = [(1, self.table.single), *self.table.fused.items()]
        return {"table": str(out),
                "searches_per_cell": {str(n): dict(zip(map(str, c.sizes), c.searches, strict=True)) for n, c in curves},
                "lists_per_cell": {str(n): dict(zip(map(str, c.sizes), c.lists, strict=True)) for n, c in curves},
                "production_gain": self.gain}


def rebuild_table(
    root: Path, samples: list[Sample], emb: Embeddings, sizes: Sequence[int], lists: int, seed: int,
    fusion_mode: FusionMode, out: Path, command: str | None = None, errata: Errata | None = None,
) -> RebuiltTable:
    """Build the table from `samples`, write it to `out`, and measure what it gains over the one there."""
    try:
        before: CalibrationTable | None = CalibrationTable.load(out)
    except CalibrationError:
        before = None  # nothing (readable) to replace
    kept: dict[int, dict[int, Pooled]] = {}
    table = calibrate_table(
        samples, emb, sizes, DEFAULT_TARGETS, lists, seed, fusion_mode,
        provenance={
            "dataset": root.name, "images": len(samples), "lists_per_size": lists, "seed": seed,
            "min_non_mated_per_cell": MIN_CALIBRATION_SEARCHES,
            "errata": errata_note(errata),
            "built": utcnow().strftime("%Y-%m-%d"),
            "command": command or f"lfr calibrate --lists {lists} --seed {seed} --fusion-mode {fusion_mode}",
        },
        min_searches=MIN_CALIBRATION_SEARCHES, keep=kept,
    )
    table.write(out)
    return RebuiltTable(table, production_gain(table, before, kept))
