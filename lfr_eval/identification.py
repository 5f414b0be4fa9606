"""Open-set 1:N identification on an identity-labelled folder (`lfr eval`), on the production path.

Split: watchlist = the first image(s) of each chosen person with 2+ images (seeded);
mated searches = their other images; non-mated = every image of people not on the list, plus
every image of the extra non-mated folders. A search's top-1 (a track's fused top-1) is held to
the threshold by the match function's own rule (`lfr_core.matching.reaches` / `decide`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lfr_core.calibration import fpir_key, shipped_table
from lfr_core.errors import CalibrationError
from lfr_core.matching import (
    PRODUCTION_FLIP_TTA,
    PRODUCTION_FUSION,
    PRODUCTION_MIN_QUALITY,
    PRODUCTION_TEMPLATE,
    TemplateMode,
    WatchlistIndex,
    person_templates,
    reaches,
)
from lfr_eval.calibrate import ENROL_PHOTOS, enrolled_count, tracks_of
from lfr_eval.datasets import Sample, singletons
from lfr_eval.embeddings import Embeddings
from lfr_eval.fusion import track_top1
from lfr_eval.metrics import REPORT_FPIRS, OpenSetResult, Rate, difference_interval, summarise

OPERATING_FPIR = 2e-4  # the bar; NPL measured the Met at about 1 in 6,000
FAIRNESS_FPIRS = (1e-2, 1e-3, OPERATING_FPIR)
# The gate production used before it was chosen by measurement: the ablation's reference keeps it.
EARLIER_MIN_QUALITY = 0.3
GATES = {"none": None, "production": PRODUCTION_MIN_QUALITY, "earlier": EARLIER_MIN_QUALITY, "strict": 0.5}
GATE_SWEEP = (0.0, 0.2, 0.4)  # around the earlier gate, from the one-photo reference
# `lfr eval --gate-sweep`: the run's own pipeline at each of these gates (how production's was chosen).
PRODUCTION_GATE_SWEEP: tuple[float | None, ...] = (None, 0.0, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Variant:
    """One configuration of the techniques; `lfr eval --ablation` compares several on one pass."""

    name: str = "production"
    flip: bool = PRODUCTION_FLIP_TTA
    gate: float | None = PRODUCTION_MIN_QUALITY  # None: match every detected face
    enrol_images: int = ENROL_PHOTOS  # up to this many, leaving one to search
    template: TemplateMode = PRODUCTION_TEMPLATE  # several enrolment images: one entry "each", or their "mean"
    probe_from: int | None = None  # index of a listed person's first probe image (default: after enrolment)
    fusion: int = 1  # crops per track
    fusion_mode: str = PRODUCTION_FUSION  # production's (max, mean) or lfr_eval.fusion's (feature, quality)


@dataclass
class WatchlistSplit:
    """Which people are listed (seeded), and which images enrol, search mated and search non-mated."""

    samples: list[Sample]
    watchlist_size: int
    seed: int
    by_person: dict[str, list[Sample]] = field(default_factory=dict)
    listed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        by: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            by[s.identity].append(s)
        self.by_person = dict(by)
        multi = sorted(p for p, v in by.items() if len(v) >= 2 and not v[0].extra)
        if not 1 <= self.watchlist_size <= len(multi):
            raise ValueError(
                f"watchlist size must be 1..{len(multi)} (people with 2+ images), got {self.watchlist_size}"
            )
        self.listed = sorted(random.Random(self.seed).sample(multi, self.watchlist_size))

    def enrol_of(self, person: str, v: Variant) -> list[Sample]:
        imgs = self.by_person[person]
        return imgs[: enrolled_count(len(imgs), v.enrol_images)]

    def mated_of(self, person: str, v: Variant) -> list[Sample]:
        start = v.probe_from if v.probe_from is not None else len(self.enrol_of(person, v))
        return self.by_person[person][start:]

    def non_mated_people(self) -> list[str]:
        listed = set(self.listed)
        return [p for p in sorted(self.by_person) if p not in listed]

    def all_enrol_paths(self, variants: Sequence[Variant]) -> list[Path]:
        return [s.path for v in variants for p in self.listed for s in self.enrol_of(p, v)]

    def all_probe_paths(self, variants: Sequence[Variant]) -> list[Path]:
        paths = [s.path for v in variants for p in self.listed for s in self.mated_of(p, v)]
        return paths + [s.path for p in self.non_mated_people() for s in self.by_person[p]]


@dataclass
class SearchOutcome:
    """One variant's searches on one split (or pooled splits): the results and the failure counts."""

    variant: Variant
    result: OpenSetResult
    fte: Rate
    fta_mated: Rate
    fta_non_mated: Rate
    mated_gender: list[str]
    non_mated_gender: list[str]
    watchlist_size: int
    # For each non-mated search: (who was searched, whom they best matched) - names, no biometrics.
    non_mated_pairs: list[tuple[str, str]] = field(default_factory=list)

    def false_alert_pairs(self, target: float = OPERATING_FPIR, top: int = 10) -> dict[str, Any]:
        """Who the false alerts at the operating threshold are: the pairs that set the FPIR tail."""
        t = self.result.at_fpir(target).threshold
        alerted = reaches(self.result.non_mated_scores, t)
        above = [p for p, hit in zip(self.non_mated_pairs, alerted, strict=True) if hit]
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for p in above:
            counts[p] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"threshold": round(t, 6), "false_alerts": len(above), "distinct_pairs": len(counts),
                "top": [{"searched": a, "matched": b, "count": n} for (a, b), n in ranked[:top]]}

    def per_stranger(self) -> OpenSetResult:
        """The result with every stranger who walked past in the FPIR denominator: a non-mated
        search the gate (or the detector) dropped cannot alert. Gates that drop different strangers
        then compare at the same false-alert rate per passer-by, not per face that got through."""
        dropped = np.full(self.fta_non_mated.k, -1.0)  # the lowest cosine: below every threshold
        return OpenSetResult(self.result.mated_scores, self.result.mated_correct,
                             np.concatenate([self.result.non_mated_scores, dropped]))

    def summary(self) -> dict[str, Any]:
        out = summarise(self.result)
        out.update(
            variant=self.variant.__dict__,
            watchlist_size=self.watchlist_size,
            unit="track" if self.variant.fusion > 1 else "image",
            failure_to_enrol=self.fte.to_dict(),
            failure_to_acquire={"mated": self.fta_mated.to_dict(), "non_mated": self.fta_non_mated.to_dict()},
            fairness=self.fairness(),
            false_alerts_at_operating_point=self.false_alert_pairs(top=30) if self.non_mated_pairs else None,
            false_alerts_at_1e_3=self.false_alert_pairs(1e-3, top=60) if self.non_mated_pairs else None,
        )
        return out

    def fairness(self) -> dict[str, Any]:
        """FNIR and FPIR per gender at the thresholds for FPIR 1e-2, 1e-3 and the operating point (one
        threshold for everyone, set on all non-mated searches: no per-group thresholds)."""
        res = self.result
        m_g = np.asarray(self.mated_gender)
        n_g = np.asarray(self.non_mated_gender)
        out: dict[str, Any] = {}
        for target in FAIRNESS_FPIRS:
            t = res.at_fpir(target).threshold
            groups: dict[str, Any] = {}
            for g in ("M", "F"):
                sel_m, sel_n = m_g == g, n_g == g
                hits = int(np.sum(res.mated_correct[sel_m] & reaches(res.mated_scores[sel_m], t)))
                fnir = Rate(int(sel_m.sum()) - hits, int(sel_m.sum()))
                fpir = Rate(int(np.sum(reaches(res.non_mated_scores[sel_n], t))), int(sel_n.sum()))
                groups[g] = {"fnir": fnir.to_dict(), "fpir": fpir.to_dict()}

            out[fpir_key(target)] = {
                "threshold": round(t, 6), **groups,
                "ratio_F_over_M": {m: _ratio(groups["F"][m]["rate"], groups["M"][m]["rate"]) for m in ("fnir", "fpir")},
            }
        return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and b == b and a == a else None  # None when undefined (0 or NaN)


def evaluate(proto: WatchlistSplit, emb: Embeddings, v: Variant) -> SearchOutcome:
    emb.need_flip(v.flip)
    # Enrol by the watchlist build's rule (`person_templates`): one entry per image (top-1 over
    # entries = max over the person's templates), or one mean template per person.
    ids: list[str] = []
    labels: list[str] = []
    vecs: list[np.ndarray] = []
    failed = 0
    for person in proto.listed:
        got = emb.enrolled_vectors((s.path for s in proto.enrol_of(person, v)), v.flip)
        if not len(got):
            failed += 1
            continue
        person_vecs = person_templates([person] * len(got), [person] * len(got), got, v.template)[2]
        for j, vec in enumerate(person_vecs):
            ids.append(f"{person}#{j}")
            labels.append(person)
            vecs.append(vec)
    index = WatchlistIndex(entry_ids=ids, labels=labels, embeddings=np.stack(vecs))
    rng = random.Random(f"{proto.seed}/tracks")

    def units(samples: list[Sample]) -> list[list[Sample]]:
        if v.fusion <= 1:
            return [[s] for s in samples]
        return [list(t) for t in tracks_of(np.asarray(samples, dtype=object), v.fusion, rng)]

    def search(unit: list[Sample]) -> tuple[str, float] | None:
        got = [p for p in (emb.probes[s.path] for s in unit) if p.acquired(v.gate)]
        if not got:
            return None
        q = np.stack([p.emb(v.flip) for p in got])
        if len(unit) == 1:
            hit = index.top1(q)[0]
            return hit.label, hit.score
        # The match function's fusion (per person, then crops), or a candidate rule of lfr_eval.fusion.
        hit = track_top1(index, q, [p.quality for p in got], v.fusion_mode)
        return hit.label, hit.score

    m_scores, m_correct, m_gender = [], [], []
    m_fta = 0
    for person in proto.listed:
        for unit in units(proto.mated_of(person, v)):
            r = search(unit)
            m_gender.append(unit[0].gender)
            if r is None:
                m_fta += 1
                m_scores.append(-np.inf)
                m_correct.append(False)
            else:
                m_scores.append(r[1])
                m_correct.append(r[0] == person)
    n_scores, n_gender = [], []
    n_pairs: list[tuple[str, str]] = []
    n_total = 0
    for person in proto.non_mated_people():
        for unit in units(proto.by_person[person]):
            n_total += 1
            r = search(unit)
            if r is not None:
                n_scores.append(r[1])
                n_gender.append(unit[0].gender)
                n_pairs.append((person, r[0]))
    result = OpenSetResult(np.asarray(m_scores), np.asarray(m_correct, bool), np.asarray(n_scores))
    return SearchOutcome(
        v, result, Rate(failed, len(proto.listed)), Rate(m_fta, len(m_scores)),
        Rate(n_total - len(n_scores), n_total), m_gender, n_gender, len(proto.listed) - failed, n_pairs,
    )


def pooled(outcomes: Sequence[SearchOutcome]) -> SearchOutcome:
    """One variant's outcomes on several seeded watchlists as one: searches and counts pooled.

    Which people are listed moves the FPIR tail a lot at 2e-4 (a few look-alike, kin or mislabelled
    pairs dominate it), so one list's number is luck; the pool is the expected performance over
    lists. Its binomial intervals treat searches as independent, which they are not across lists
    (a person recurs), so they are narrower than the truth.
    """
    first = outcomes[0]
    if len(outcomes) == 1:
        return first

    def cat(get: Callable[[OpenSetResult], np.ndarray]) -> np.ndarray:
        return np.concatenate([get(o.result) for o in outcomes])

    def total(get: Callable[[SearchOutcome], Rate]) -> Rate:
        return Rate(sum(get(o).k for o in outcomes), sum(get(o).n for o in outcomes))

    return SearchOutcome(
        first.variant,
        OpenSetResult(cat(lambda r: r.mated_scores), cat(lambda r: r.mated_correct), cat(lambda r: r.non_mated_scores)),
        total(lambda o: o.fte), total(lambda o: o.fta_mated), total(lambda o: o.fta_non_mated),
        [g for o in outcomes for g in o.mated_gender], [g for o in outcomes for g in o.non_mated_gender],
        round(sum(o.watchlist_size for o in outcomes) / len(outcomes)),
        [p for o in outcomes for p in o.non_mated_pairs],
    )



def ablation_variants(base: Variant) -> list[Variant]:
    """Each technique with and without, from one enrolment photo without TTA (the reference,
    `reference_of`) and the rest held at `base` (same mated/non-mated sets per pair)."""
    base = replace(base, flip=False, enrol_images=1, template="each", gate=EARLIER_MIN_QUALITY)
    vs = [
        replace(base, name="one photo, gate 0.3, no TTA (the earlier production)"),
        replace(base, name="flip TTA", flip=True),
        replace(base, name="no quality gate", gate=None),
        replace(base, name="strict gate 0.5", gate=GATES["strict"]),
        replace(base, name="enrol 1 (probes from image 4)", probe_from=3),
        replace(base, name="enrol 3, max over templates", enrol_images=3, template="each", probe_from=3),
        replace(base, name="enrol 3, mean template", enrol_images=3, template="mean", probe_from=3),
    ]
    vs += [replace(base, name=f"gate {g}", gate=g) for g in GATE_SWEEP]
    vs.append(replace(base, name="tracks of 2, max fusion", fusion=2, fusion_mode="max"))
    for mode in ("max", "mean"):
        vs.append(replace(base, name=f"tracks of 3, {mode} fusion", fusion=3, fusion_mode=mode))
    vs.append(replace(base, name="tracks of 3, feature fusion (mean embedding)", fusion=3, fusion_mode="feature"))
    vs.append(replace(base, name="tracks of 3, quality-weighted score fusion", fusion=3, fusion_mode="quality"))
    vs.append(replace(base, name="tracks of 3, max fusion + flip TTA", fusion=3, fusion_mode="max", flip=True))
    vs.append(replace(base, name="tracks of 3, feature fusion + flip TTA", fusion=3, fusion_mode="feature", flip=True))
    vs.append(replace(base, name="flip TTA + enrol 3 max", flip=True, enrol_images=3, probe_from=3))
    vs.append(replace(base, name="flip TTA + enrol 3 mean (production)", flip=True, enrol_images=3, template="mean",
                      probe_from=3, gate=PRODUCTION_MIN_QUALITY))
    return vs



def gate_sweep_variants(base: Variant) -> list[Variant]:
    return [replace(base, name=f"gate {'none' if g is None else g}", gate=g) for g in PRODUCTION_GATE_SWEEP]


def gate_sweep(outcomes: Sequence[SearchOutcome], fpirs: Sequence[float] = FAIRNESS_FPIRS) -> list[dict[str, Any]]:
    """Each gate's outcome held to the same false alerts per stranger walking past (`per_stranger`:
    a stranger the gate dropped cannot alert), at each target FPIR's own threshold and at the
    shipped table's threshold for the list's size: the measurement production's gate is chosen by."""
    rows = []
    for o in outcomes:
        walked = o.per_stranger()
        row: dict[str, Any] = {
            "variant": o.variant.name, "gate": o.variant.gate,
            "failure_to_acquire": {"mated": o.fta_mated.to_dict(), "non_mated": o.fta_non_mated.to_dict()},
            "per_stranger": {fpir_key(f): walked.at_fpir(f).to_dict() for f in fpirs},
        }
        try:
            t = shipped_table().threshold(OPERATING_FPIR, max(o.watchlist_size, 1))
        except CalibrationError:
            t = None  # no table for this pipeline (or list size): the own thresholds still compare
        if t is not None:
            row["at_shipped_threshold"] = walked.at_threshold(t, OPERATING_FPIR).to_dict()
        rows.append(row)
    return rows


def reference_of(v: Variant, variants: Sequence[Variant]) -> Variant | None:
    """The production configuration measured on the same searches as `v` (same track size and
    probe images) before mean templates and flip TTA: gate 0.3, no TTA, one enrolment photo, the
    production fusion."""
    for r in variants:
        if (r != v and r.fusion == v.fusion and r.probe_from == v.probe_from and not r.flip
                and r.gate == EARLIER_MIN_QUALITY and r.enrol_images == 1 and r.template == "each"
                and r.fusion_mode == PRODUCTION_FUSION):
            return r
    return None


def gains(outcomes: Sequence[SearchOutcome], fpirs: Sequence[float] = REPORT_FPIRS[1:3]) -> list[dict[str, Any]]:
    """Each variant's TPIR gain over its reference (`reference_of`) at each target FPIR, with the
    gain's 95% interval (`difference_interval`); each side at its own threshold for that FPIR.
    `tpir_gain_per_stranger`: the same with FPIR per stranger walking past (`per_stranger`), the
    fair comparison where the variant's gate differs from the reference's."""
    by = {o.variant: o for o in outcomes}
    out = []
    for o in outcomes:
        ref = reference_of(o.variant, list(by))
        if ref is None:
            continue
        row: dict[str, Any] = {"variant": o.variant.name, "reference": ref.name}
        for key, mine, theirs in (("tpir_gain", o.result, by[ref].result),
                                  ("tpir_gain_per_stranger", o.per_stranger(), by[ref].per_stranger())):
            cells = {}
            for f in fpirs:
                a, b = mine.at_fpir(f), theirs.at_fpir(f)
                d, lo, hi = difference_interval(a.tpir, b.tpir)
                cells[fpir_key(f)] = {"gain": round(d, 4), "ci95": [round(lo, 4), round(hi, 4)],
                                      "resolvable": f * a.fpir.n >= 1.0 and f * b.fpir.n >= 1.0}
            row[key] = cells
        out.append(row)
    return out


def at_shipped_threshold(o: SearchOutcome) -> dict[str, Any] | None:
    """The rates a deployment of this list's size would get from the shipped calibration table
    (read before this run may rewrite it): the table's threshold, measured on this run's searches."""
    v = o.variant
    if (v.fusion != 1 or v.flip != PRODUCTION_FLIP_TTA or v.template != PRODUCTION_TEMPLATE
            or v.gate != PRODUCTION_MIN_QUALITY):
        return None  # the table is for the production pipeline's single crops
    try:
        t = shipped_table().threshold(OPERATING_FPIR, max(o.watchlist_size, 1))
    except CalibrationError:
        return None
    return o.result.at_threshold(t, OPERATING_FPIR).to_dict()


def digest(o: SearchOutcome) -> dict[str, Any]:
    s = summarise(o.result)
    return {"variant": o.variant.name, "mated": o.result.n_mated, "non_mated": o.result.n_non_mated,
            "rank1": s["rank1"], "tpir_at_fpir": s["tpir_at_fpir"]}



@dataclass
class IdentificationRun:
    """One `lfr eval` measurement: the variants' outcomes (pooled over the lists), with errata
    applied and, when errata were given, as labelled; the embeddings stay in memory only."""

    splits: list[WatchlistSplit]
    outcomes: list[SearchOutcome]
    outcomes_labelled: list[SearchOutcome]  # empty without errata
    emb: Embeddings


def measure(
    samples: list[Sample], labelled: list[Sample] | None, extras: list[Sample], watchlist_size: int | None,
    seed: int, lists: int, variants: Sequence[Variant], emb: Embeddings, log: Callable[[str], None],
) -> IdentificationRun:
    """`samples` (errata applied, extras included) split `lists` times from `seed`; `labelled`: the
    same folder as labelled, measured beside it on the same embeddings (errata only drop or
    relabel images, so each image is embedded once)."""
    if lists < 1:
        raise ValueError("--lists must be >= 1")

    def splits(of: list[Sample]) -> list[WatchlistSplit]:
        multi = len({s.identity for s in of if not s.extra} - singletons(of))
        return [WatchlistSplit(of, watchlist_size or multi // 2, seed + i) for i in range(lists)]

    protos = splits(samples)
    protos_labelled = splits(labelled + extras) if labelled is not None else []
    every = protos + protos_labelled
    enrol_paths = [p for pr in every for p in pr.all_enrol_paths(variants)]
    log(f"enrolling {len(set(enrol_paths))} watchlist images ({len(protos)} lists of {len(protos[0].listed)} people)")
    emb.enrol(enrol_paths)
    probe_paths = [p for pr in every for p in pr.all_probe_paths(variants)]
    log(f"probing {len(set(probe_paths))} images{' (degraded: cctv)' if emb.degrade else ''}")
    emb.probe(probe_paths)
    outcomes = [pooled([evaluate(pr, emb, v) for pr in protos]) for v in variants]
    outcomes_labelled = ([pooled([evaluate(pr, emb, v) for pr in protos_labelled]) for v in variants]
                         if protos_labelled else [])
    return IdentificationRun(protos, outcomes, outcomes_labelled, emb)
