"""`lfr eval` and `lfr calibrate`: open-set 1:N accuracy on an identity-labelled folder, on the production path.

Enrolment goes through the watchlist build's own rule (`build_watchlist.enrolment_crop`: decode,
detect, central face, size check, align); probes go through the edge (`FaceCropper`: detect,
central face, align, quality gate) and the wire (JPEG q95 encode in `Crop.to_message`, decode with
the match function's size check); both are embedded by `FaceEmbedder` and searched with
`WatchlistIndex`. Embeddings live in a process-local dict only: nothing of a face is written.

Protocol (issue 5): watchlist = the first image(s) of each chosen person with 2+ images (seeded);
mated searches = their other images; non-mated = every image of people not on the list, plus
every image under `--non-mated DIR`.
"""

from __future__ import annotations

import csv
import json
import random
import re
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_uploader.pipeline import DEFAULT_MIN_QUALITY, IMAGE_SUFFIXES, FaceCropper
from edge_uploader.quality import MIN_INTEROCULAR_PX
from functions.logic.build_watchlist import enrolment_crop
from lfr_cli.errata import Errata, load_errata
from lfr_core.calibration import (
    DEFAULT_SIZES,
    DEFAULT_TARGETS,
    CalibrationTable,
    Gallery,
    Pooled,
    build_curve,
    tracks_of,
)
from lfr_core.contracts import CROP_SIZE, MAX_TRACK_CROPS, InlineJpeg, utcnow
from lfr_core.datasets import REPO_ROOT
from lfr_core.errors import CalibrationError, DatasetNotFoundError, InvalidImageError
from lfr_core.evaluation import REPORT_FPIRS, OpenSetResult, Rate, fpir_key, summarise
from lfr_core.face.embed import EMBEDDING_DIM, FaceEmbedder
from lfr_core.face.image import decode_jpeg
from lfr_core.matching import PRODUCTION_FUSION, FusionMode, WatchlistIndex, fuse_scores

DEFAULT_OUT = REPO_ROOT / "build" / "eval"
OPERATING_FPIR = 2e-4  # the issue's bar; NPL measured the Met at about 1 in 6,000
BATCH = 32
FAIRNESS_FPIRS = (1e-2, 1e-3, OPERATING_FPIR)
GATES = {"none": None, "production": DEFAULT_MIN_QUALITY, "strict": 0.5}


# -- the data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    gender: str = "unknown"
    extra: bool = False  # from --non-mated: never on the watchlist


def _natural(p: Path) -> tuple[Any, ...]:
    """1.pgm, 2.pgm, ..., 10.pgm (ORL) in numeric order; zero-padded LFW names sort as before."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)


def load_folder(root: Path, extra: bool = False) -> list[Sample]:
    """LFW layout: <root>[/images]/<identity>/<files>; genders from <root>/manifest.csv if present."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder {root} not found")
    images = root / "images" if (root / "images").is_dir() else root
    genders: dict[str, str] = {}
    if (root / "manifest.csv").is_file():
        with (root / "manifest.csv").open(newline="") as f:
            genders = {r["identity"]: r.get("gender") or "unknown" for r in csv.DictReader(f)}
    people = sorted(p for p in images.iterdir() if p.is_dir())
    samples: list[Sample] = []
    if not people and extra:
        # A flat folder of non-mated images: each file its own (unlisted) person.
        samples = [Sample(f"extra:{p.stem}", p, extra=True) for p in _images(images)]
    for person in people:
        ident = f"extra:{person.name}" if extra else person.name
        samples += [Sample(ident, p, genders.get(person.name, "unknown"), extra) for p in _images(person)]
    if not samples:
        raise DatasetNotFoundError(f"no images under {images}")
    return samples


LFW_DEV_ERRATA = REPO_ROOT / "docs" / "accuracy" / "lfw-dev-errata.toml"


def resolve_errata(errata: str | None, dataset: Path | None) -> Errata | None:
    """`--errata FILE` | `--errata none`; by default the project's reviewed file for lfw-dev (the
    default dataset) and none for any other folder."""
    if errata is not None:
        return None if errata == "none" else load_errata(Path(errata))
    return load_errata(LFW_DEV_ERRATA) if dataset is None else None


def _errata_note(
    errata: Errata | None, labelled: Sequence[Sample] = (), fixed: Sequence[Sample] = ()
) -> dict[str, Any] | None:
    if errata is None:
        return None
    path = errata.path
    shown = str(path.relative_to(REPO_ROOT)) if path and path.is_relative_to(REPO_ROOT) else str(path)
    note: dict[str, Any] = {"file": shown, "entries": errata.counts()}
    if labelled:
        note["images"] = {"labelled": len(labelled), "after": len(fixed)}
        note["people"] = {"labelled": len({s.identity for s in labelled}), "after": len({s.identity for s in fixed})}
    return note


# -- degradation (probes only) ----------------------------------------------------------------


def degrade_cctv(frame: np.ndarray, iod_px: float, seed: int, key: str) -> np.ndarray:
    """Surveillance conditions, seeded per image: 24-40 px between the eyes, motion blur, noise, JPEG 30-50."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    target_iod = rng.uniform(24.0, 40.0)
    out = frame
    if iod_px > target_iod:
        scale = target_iod / iod_px
        h, w = frame.shape[:2]
        out = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    length = int(rng.integers(3, 8))  # px of motion during the exposure, at the reduced size
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rot, (length, length)), dtype=np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    out = cv2.filter2D(out, -1, kernel)
    noisy = out.astype(np.float32) + rng.normal(0.0, rng.uniform(2.0, 6.0), out.shape).astype(np.float32)
    out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 51))])
    if not ok:
        raise InvalidImageError("encode_failed", "degradation JPEG")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR))


# -- embedding on the production path ---------------------------------------------------------


@dataclass
class Probe:
    """One probe image after the edge and the wire; embeddings are None when no face was acquired."""

    plain: np.ndarray | None = None
    flip: np.ndarray | None = None
    quality: float = 0.0
    iod: float = 0.0
    reason: str | None = None  # unreadable | no_face | undecodable

    def acquired(self, gate: float | None) -> bool:
        if self.plain is None:
            return False
        return gate is None or (self.quality >= gate and self.iod >= MIN_INTEROCULAR_PX)

    def emb(self, flip: bool) -> np.ndarray:
        e = self.flip if flip else self.plain
        assert e is not None
        return e


class Embeddings:
    """Process-local cache of enrolment and probe embeddings (plain and flip-TTA from one pass)."""

    def __init__(
        self, degrade: str | None = None, seed: int = 0, threads: int | None = None,
        log: Callable[[str], None] | None = None, with_flip: bool = True,
    ) -> None:
        self.cropper = FaceCropper()
        self.embedder = FaceEmbedder(intra_op_threads=threads)
        self.degrade, self.seed = degrade, seed
        self.probes: dict[Path, Probe] = {}
        self.enrolled: dict[Path, tuple[np.ndarray, np.ndarray] | str] = {}
        self.log = log or (lambda _m: None)
        # Flip-TTA embeddings double the embedding cost: made only when some variant needs them.
        self.with_flip = with_flip

    def _embed(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.with_flip:
            return self.embedder.embed_both(crops)
        plain = self.embedder.embed(crops)
        return plain, np.full_like(plain, np.nan)  # never used: `need_flip` refuses first

    def need_flip(self, flip: bool) -> None:
        if flip and not self.with_flip:
            raise ValueError("flip-TTA scores asked of embeddings made without them")

    def enrol(self, paths: Iterable[Path]) -> None:
        """Build-path crops of watchlist images (clean: enrolment photos are not CCTV)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.enrolled]
        pending: list[tuple[Path, np.ndarray]] = []
        started = time.monotonic()
        for i, path in enumerate(todo):
            if i and i % 500 == 0:
                self.log(f"  {i}/{len(todo)} enrolment images ({i / (time.monotonic() - started):.1f}/s)")
            crop = enrolment_crop(path.read_bytes(), self.cropper.detector)  # the production rule, not a copy
            if isinstance(crop, str):
                self.enrolled[path] = crop
            else:
                pending.append((path, crop))
            if len(pending) >= BATCH:
                self._embed_enrol(pending)
                pending = []
        self._embed_enrol(pending)

    def _embed_enrol(self, pending: list[tuple[Path, np.ndarray]]) -> None:
        if not pending:
            return
        plain, flip = self._embed(np.stack([c for _, c in pending]))
        for (path, _), a, b in zip(pending, plain, flip, strict=True):
            self.enrolled[path] = (a, b)

    def probe(self, paths: Sequence[Path]) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self.probes]
        started = time.monotonic()
        pending: list[tuple[Path, np.ndarray]] = []
        for i, path in enumerate(todo):
            pr = self.probes[path] = Probe()
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None or frame.size == 0:
                pr.reason = "unreadable"
                continue
            if self.degrade == "cctv":
                clean = self.cropper.crops(frame, faces="central")
                if not clean:
                    pr.reason = "no_face"
                    continue
                frame = degrade_cctv(frame, clean[0].quality.interocular_px, self.seed, path.name)
            crops = self.cropper.crops(frame, faces="central")
            if not crops:
                pr.reason = "no_face"
                continue
            crop = crops[0]
            pr.quality, pr.iod = crop.quality.score, crop.quality.interocular_px
            msg = crop.to_message(deployment_id="eval", camera_id="eval", track_id="eval", captured_at=utcnow())
            assert isinstance(msg.image, InlineJpeg)  # the edge always sends crops inline
            try:
                pending.append((path, decode_jpeg(msg.image.to_bytes(), expect_size=(CROP_SIZE, CROP_SIZE))))
            except InvalidImageError:
                pr.reason = "undecodable"
            if len(pending) >= BATCH:
                self._embed_probes(pending)
                pending = []
            if (i + 1) % 500 == 0:
                rate = (i + 1) / (time.monotonic() - started)
                self.log(f"  {i + 1}/{len(todo)} probe images ({rate:.1f}/s)")
        self._embed_probes(pending)

    def _embed_probes(self, pending: list[tuple[Path, np.ndarray]]) -> None:
        if not pending:
            return
        plain, flip = self._embed(np.stack([c for _, c in pending]))
        for (path, _), a, b in zip(pending, plain, flip, strict=True):
            self.probes[path].plain, self.probes[path].flip = a, b


# -- one evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One configuration of the techniques; `lfr eval --ablation` compares several on one pass."""

    name: str = "baseline"
    flip: bool = False
    gate: float | None = DEFAULT_MIN_QUALITY  # None: match every detected face
    enrol_images: int = 1
    template: str = "max"  # several enrolment images: one entry each (max) or their mean
    probe_from: int | None = None  # index of a listed person's first probe image (default: after enrolment)
    fusion: int = 1  # crops per track
    fusion_mode: str = PRODUCTION_FUSION


@dataclass
class Protocol:
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
        return imgs[: min(v.enrol_images, len(imgs) - 1)]

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
class Outcome:
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
        above = [p for p, sc in zip(self.non_mated_pairs, self.result.non_mated_scores, strict=True) if sc >= t]
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for p in above:
            counts[p] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"threshold": round(t, 6), "false_alerts": len(above), "distinct_pairs": len(counts),
                "top": [{"searched": a, "matched": b, "count": n} for (a, b), n in ranked[:top]]}

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
                hits = int(np.sum(res.mated_correct[sel_m] & (res.mated_scores[sel_m] >= t)))
                fnir = Rate(int(sel_m.sum()) - hits, int(sel_m.sum()))
                fpir = Rate(int(np.sum(res.non_mated_scores[sel_n] >= t)), int(sel_n.sum()))
                groups[g] = {"fnir": fnir.to_dict(), "fpir": fpir.to_dict()}

            out[fpir_key(target)] = {
                "threshold": round(t, 6), **groups,
                "ratio_F_over_M": {m: _ratio(groups["F"][m]["rate"], groups["M"][m]["rate"]) for m in ("fnir", "fpir")},
            }
        return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and b == b and a == a else None  # None when undefined (0 or NaN)


def evaluate(proto: Protocol, emb: Embeddings, v: Variant) -> Outcome:
    emb.need_flip(v.flip)
    # Enrol: one index entry per enrolled image (production labels several images of one person
    # with one label, so top-1 over entries = max over the person's templates), or their mean.
    ids: list[str] = []
    labels: list[str] = []
    vecs: list[np.ndarray] = []
    failed = 0
    for person in proto.listed:
        got = [e for s in proto.enrol_of(person, v) if not isinstance(e := emb.enrolled[s.path], str)]
        if not got:
            failed += 1
            continue
        person_vecs = [e[1] if v.flip else e[0] for e in got]
        if v.template == "mean":
            m = np.mean(person_vecs, axis=0)
            person_vecs = [m / np.linalg.norm(m)]
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
        got = [emb.probes[s.path] for s in unit]
        vecs_ = [p.emb(v.flip) for p in got if p.acquired(v.gate)]
        if not vecs_:
            return None
        q = np.stack(vecs_)
        if len(unit) == 1:
            hit = index.top1(q)[0]
            return hit.label, hit.score
        scores = q @ index.embeddings.T  # (crops, entries): the fusion needs every entry's score
        per_label = _per_label_max(scores, index.labels)
        fused = fuse_scores(per_label[0][None], v.fusion_mode)[0]
        j = int(np.argmax(fused))
        return per_label[1][j], float(fused[j])

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
    return Outcome(
        v, result, Rate(failed, len(proto.listed)), Rate(m_fta, len(m_scores)),
        Rate(n_total - len(n_scores), n_total), m_gender, n_gender, len(proto.listed) - failed, n_pairs,
    )


def _per_label_max(scores: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(crops, entries) -> (crops, people): a person's score is their best template's."""
    names = sorted(set(labels))
    col = {n: i for i, n in enumerate(names)}
    out = np.full((scores.shape[0], len(names)), -np.inf, np.float32)
    for j, lab in enumerate(labels):
        out[:, col[lab]] = np.maximum(out[:, col[lab]], scores[:, j])
    return out, names


def pooled(outcomes: Sequence[Outcome]) -> Outcome:
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

    def total(get: Callable[[Outcome], Rate]) -> Rate:
        return Rate(sum(get(o).k for o in outcomes), sum(get(o).n for o in outcomes))

    return Outcome(
        first.variant,
        OpenSetResult(cat(lambda r: r.mated_scores), cat(lambda r: r.mated_correct), cat(lambda r: r.non_mated_scores)),
        total(lambda o: o.fte), total(lambda o: o.fta_mated), total(lambda o: o.fta_non_mated),
        [g for o in outcomes for g in o.mated_gender], [g for o in outcomes for g in o.non_mated_gender],
        round(sum(o.watchlist_size for o in outcomes) / len(outcomes)),
        [p for o in outcomes for p in o.non_mated_pairs],
    )


# -- ablation and outputs -------------------------------------------------------------------


def ablation_variants(base: Variant) -> list[Variant]:
    """Each technique with and without, the rest held at `base` (same mated/non-mated sets per pair)."""
    vs = [
        replace(base, name="baseline (production: 1 image, gate 0.3, no TTA)"),
        replace(base, name="flip TTA", flip=True),
        replace(base, name="no quality gate", gate=None),
        replace(base, name="strict gate 0.5", gate=GATES["strict"]),
        replace(base, name="enrol 1 (probes from image 4)", probe_from=3),
        replace(base, name="enrol 3, max over templates", enrol_images=3, probe_from=3),
        replace(base, name="enrol 3, mean template", enrol_images=3, template="mean", probe_from=3),
    ]
    vs.append(replace(base, name="tracks of 2, max fusion", fusion=2, fusion_mode="max"))
    for mode in ("max", "mean"):
        vs.append(replace(base, name=f"tracks of 3, {mode} fusion", fusion=3, fusion_mode=mode))
    vs.append(replace(base, name="tracks of 3, max fusion + flip TTA", fusion=3, fusion_mode="max", flip=True))
    vs.append(replace(base, name="flip TTA + enrol 3 max", flip=True, enrol_images=3, probe_from=3))
    return vs


def table_line(o: Outcome) -> str:
    r = o.result
    pts = {f: r.at_fpir(f) for f in REPORT_FPIRS}
    op = pts[OPERATING_FPIR]
    lo, hi = op.tpir.ci
    cells = " ".join(f"{pts[f].tpir.value:.3f}" for f in REPORT_FPIRS)
    return (
        f"{o.variant.name:44s} {r.n_mated:6d} {r.n_non_mated:6d} {o.fta_mated.value:6.3f} "
        f"{r.rank1().value:6.3f} {cells}  [{lo:.3f}-{hi:.3f}] t={op.threshold:.3f}"
    )


TABLE_HEAD = (
    f"{'variant':44s} {'mated':>6s} {'nonmat':>6s} {'FTA':>6s} {'rank1':>6s} "
    + " ".join(f"{fpir_key(f):>5s}" for f in REPORT_FPIRS)
    + "  TPIR@2e-4 95% CI, threshold"
)


def write_det(outcomes: Sequence[Outcome], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for o in outcomes:
        _, fp, fn = o.result.det()
        keep = fp > 0
        ax.plot(fp[keep], np.maximum(fn[keep], 1e-4), label=o.variant.name, lw=1.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-3, 1)
    ax.axvline(OPERATING_FPIR, color="grey", ls=":", lw=1)
    ax.set_xlabel("FPIR (non-mated searches alerting)")
    ax.set_ylabel("FNIR (mated searches missed)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_det_by_group(o: Outcome, path: Path, title: str) -> None:
    """One DET curve per gender group (FPIR over that group's non-mated searches, FNIR over its
    mated ones) in one plot, with the one threshold at each operating point marked on each curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = o.result
    m_g, n_g = np.asarray(o.mated_gender), np.asarray(o.non_mated_gender)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    marks = {f: res.at_fpir(f).threshold for f in FAIRNESS_FPIRS}
    for g, name, colour in (("F", "women", "tab:red"), ("M", "men", "tab:blue")):
        sel_m, sel_n = m_g == g, n_g == g
        if not sel_m.any() or not sel_n.any():
            continue
        part = OpenSetResult(res.mated_scores[sel_m], res.mated_correct[sel_m], res.non_mated_scores[sel_n])
        _, fp, fn = part.det()
        keep = fp > 0
        ax.plot(fp[keep], np.maximum(fn[keep], 1e-4), label=f"{name} ({part.n_mated:,} mated, "
                f"{part.n_non_mated:,} non-mated)", lw=1.3, color=colour)
        for f, t in marks.items():
            x, y = part.fpir(t).value, 1 - part.tpir(t).value
            ax.plot([max(x, 1e-5)], [max(y, 1e-4)], "o", color=colour, ms=4)
            if g == "F":
                ax.annotate(f"t@{fpir_key(f)}", (max(x, 1e-5), max(y, 1e-4)), fontsize=6,
                            textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("FPIR within the group (non-mated searches alerting)")
    ax.set_ylabel("FNIR within the group (mated searches missed)")
    ax.set_title(title + "\ndots: the one threshold for everyone at FPIR 1e-2, 1e-3, 2e-4", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_eval(
    dataset: Path | None,
    non_mated: Sequence[Path],
    watchlist_size: int | None,
    seed: int,
    fusion: int,
    fusion_mode: str,
    degrade: str | None,
    flip: bool,
    gate: str,
    enrol_images: int,
    template: str,
    ablation: bool,
    out: Path,
    as_json: bool,
    threads: int | None = None,
    calibrate_out: Path | None = None,
    lists: int = 1,
    errata: str | None = None,
) -> int:
    log = _stderr_log
    root = dataset or _lfw()
    labelled = load_folder(root)
    fix = resolve_errata(errata, dataset)
    extras = [s for d in non_mated for s in load_folder(d, extra=True)]
    samples = (fix.apply(labelled) if fix else labelled) + extras
    if lists < 1:
        raise ValueError("--lists must be >= 1")

    def protocols(of: list[Sample]) -> list[Protocol]:
        multi = len({s.identity for s in of if not s.extra} - _singletons(of))
        return [Protocol(of, watchlist_size or multi // 2, seed + i) for i in range(lists)]

    protos = protocols(samples)
    # The same run as labelled, for comparison: errata only drop or relabel images, so its
    # embeddings are the same ones (each image is embedded once).
    protos_labelled = protocols(labelled + extras) if fix else []
    proto = protos[0]
    base = Variant(
        name="this run", flip=flip, gate=GATES[gate], enrol_images=enrol_images, template=template,
        fusion=fusion, fusion_mode=fusion_mode,
    )
    variants = [base, *ablation_variants(replace(base, flip=False, fusion=1))] if ablation else [base]
    emb = Embeddings(degrade=degrade, seed=seed, threads=threads, log=log, with_flip=any(v.flip for v in variants))
    started = time.monotonic()
    every = protos + protos_labelled
    enrol_paths = [p for pr in every for p in pr.all_enrol_paths(variants)]
    log(f"enrolling {len(set(enrol_paths))} watchlist images ({len(protos)} lists of {len(proto.listed)} people)")
    emb.enrol(enrol_paths)
    probe_paths = [p for pr in every for p in pr.all_probe_paths(variants)]
    log(f"probing {len(set(probe_paths))} images{' (degraded: cctv)' if degrade else ''}")
    emb.probe(probe_paths)
    outcomes = [pooled([evaluate(pr, emb, v) for pr in protos]) for v in variants]
    outcomes_labelled = [pooled([evaluate(pr, emb, v) for pr in protos_labelled]) for v in variants] if fix else []
    main = outcomes[0]
    out.mkdir(parents=True, exist_ok=True)
    tag = (f"{'cctv-' if degrade else ''}{'fusion' + str(fusion) + '-' if fusion > 1 else ''}s{seed}"
           f"{f'x{lists}' if lists > 1 else ''}")
    title = (f"{root.name}{' + cctv' if degrade else ''}{' (errata applied)' if fix else ''}: "
             f"{main.watchlist_size} listed, "
             + (f"seed {seed}" if lists == 1 else f"pooled over {lists} lists (seeds {seed}-{seed + lists - 1})"))
    det_path = out / f"det-{tag}.png"
    write_det(
        [o for o in outcomes if o.variant.fusion == 1 and o.variant.probe_from is None][:4] if ablation else outcomes,
        det_path, title,
    )
    det_gender = out / f"det-by-gender-{tag}.png"
    has_gender = {"M", "F"} <= set(main.mated_gender) and {"M", "F"} <= set(main.non_mated_gender)
    if has_gender:
        write_det_by_group(main, det_gender, title)
    summary = main.summary()
    summary.update(
        dataset=str(root), non_mated_dirs=[str(d) for d in non_mated], seed=seed, lists=lists, degrade=degrade,
        errata=_errata_note(fix, labelled, samples[: len(samples) - len(extras)]),
        det_png=str(det_path), det_by_gender_png=str(det_gender) if has_gender else None,
        seconds=round(time.monotonic() - started, 1),
        command="lfr eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lfr eval",
    )
    shipped = _at_shipped_threshold(main)
    if shipped:
        summary["at_shipped_threshold"] = shipped
    if ablation:
        summary["ablation"] = [o.summary() for o in outcomes[1:]]
    if fix:
        summary["as_labelled"] = outcomes_labelled[0].summary()
        if ablation:
            summary["as_labelled"]["ablation"] = [_digest(o) for o in outcomes_labelled[1:]]

    def table(rows: Sequence[Outcome], heading: str) -> None:
        print(heading)
        print(TABLE_HEAD)
        for o in rows:
            print(table_line(o))

    print(f"dataset {root}: {len(proto.listed)} people listed "
          f"({f'seed {seed}' if lists == 1 else f'{lists} lists, seeds {seed}-{seed + lists - 1}, pooled'}), "
          f"failure to enrol {main.fte}; probes {'degraded (cctv)' if degrade else 'clean'}")
    if fix:
        e = summary["errata"]
        table(outcomes_labelled, "as labelled:")
        table(outcomes, f"errata applied ({e['file']}: {', '.join(f'{n} {k}' for k, n in e['entries'].items())}; "
                        f"{e['images']['labelled']} -> {e['images']['after']} images, "
                        f"{e['people']['labelled']} -> {e['people']['after']} people):")
    else:
        table(outcomes, "as labelled (no errata):")
    for key, fair in summary["fairness"].items() if has_gender else ():
        cells = "; ".join(
            f"{m.upper()} F {fair['F'][m]['k']}/{fair['F'][m]['n']} vs M {fair['M'][m]['k']}/{fair['M'][m]['n']} "
            f"(ratio {fair['ratio_F_over_M'][m]})"
            for m in ("fnir", "fpir")
        )
        print(f"by gender at the FPIR {key} threshold {fair['threshold']}: {cells}")
    for key in ("false_alerts_at_operating_point", "false_alerts_at_1e_3"):
        fa = summary[key]
        if fa:
            pairs = "; ".join(f"{p['searched']} -> {p['matched']} x{p['count']}" for p in fa["top"][:12])
            print(f"false alerts at threshold {fa['threshold']}: {fa['false_alerts']} in {fa['distinct_pairs']} "
                  f"pairs (searched -> matched); most: {pairs}")
    if shipped:
        tp, fp = shipped["tpir"], shipped["fpir"]
        print(f"at the shipped table's threshold for FPIR {fpir_key(OPERATING_FPIR)} and {main.watchlist_size} "
              f"people ({shipped['threshold']}): TPIR {tp['rate']} ({tp['k']}/{tp['n']}), "
              f"FPIR {fp['rate']} ({fp['k']}/{fp['n']})")
    print(f"wrote {out / f'eval-{tag}.json'}, {det_path}" + (f" and {det_gender}" if has_gender else ""))
    if calibrate_out is not None:
        # The same in-memory embeddings also rebuild the table: one pass over the images, not two.
        summary["calibration"] = _calibrate_with(
            root, samples=[s for s in samples if not s.extra], emb=emb, sizes=DEFAULT_SIZES, lists=20, seed=seed,
            fusion_mode=PRODUCTION_FUSION, out=calibrate_out, command=summary["command"], errata=fix)
    json_path = out / f"eval-{tag}.json"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    if as_json:
        # The ablation detail stays in the file; the line carries this run and a one-row-per-variant digest.
        digest = {k: v for k, v in summary.items() if k not in ("ablation", "as_labelled", "calibration")}
        if ablation:
            digest["ablation"] = [_digest(o) for o in outcomes[1:]]
        if fix:
            digest["as_labelled"] = {k: summary["as_labelled"][k]
                                     for k in ("mated", "non_mated", "rank1", "tpir_at_fpir")}
        print(json.dumps(digest, separators=(",", ":")))
    return 0


def _at_shipped_threshold(o: Outcome) -> dict[str, Any] | None:
    """The rates a deployment of this list's size would get from the shipped calibration table
    (read before this run may rewrite it): the table's threshold, measured on this run's searches."""
    if o.variant.fusion != 1 or o.variant.flip or o.variant.gate != DEFAULT_MIN_QUALITY:
        return None  # the table is for the production pipeline's single crops
    try:
        t = CalibrationTable.load().threshold(OPERATING_FPIR, max(o.watchlist_size, 1))
    except CalibrationError:
        return None
    return o.result.at_threshold(t, OPERATING_FPIR).to_dict()


def _digest(o: Outcome) -> dict[str, Any]:
    s = summarise(o.result)
    return {"variant": o.variant.name, "mated": o.result.n_mated, "non_mated": o.result.n_non_mated,
            "rank1": s["rank1"], "tpir_at_fpir": s["tpir_at_fpir"]}


def _singletons(samples: Sequence[Sample]) -> set[str]:
    count: dict[str, int] = defaultdict(int)
    for s in samples:
        count[s.identity] += 1
    return {p for p, n in count.items() if n < 2}


def _lfw() -> Path:
    from lfr_core.datasets import lfw_root

    return lfw_root()


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- calibrate ------------------------------------------------------------------------------


MIN_CALIBRATION_SEARCHES = 30_000  # per cell: FPIR 2e-4 then rests on >= 6 false alerts
PRODUCTION_SIZES = (20, 200, 1000, 2000)  # the watchlist sizes `lfr eval --calibrate-out` reports TPIR for


def calibrate_table(
    samples: Sequence[Sample],
    emb: Embeddings,
    sizes: Sequence[int],
    targets: Sequence[float],
    lists: int,
    seed: int,
    fusion_mode: FusionMode,
    flip: bool = False,
    gate: float | None = DEFAULT_MIN_QUALITY,
    pool: Sequence[str] | None = None,
    provenance: dict[str, Any] | None = None,
    log: Callable[[str], None] = _stderr_log,
    min_searches: int = 0,
    keep: dict[int, dict[int, Pooled]] | None = None,
) -> CalibrationTable:
    """A calibration table from the people in `samples` (enrolment = each person's first image,
    on the build path). Listed people are drawn from those with 2+ images (`pool` overrides), as in
    `lfr eval`: listing people with one image would need their photo enrolled on the build path too
    (no quality gate), and enrolling it from its gated edge crop instead lowers every threshold (a
    gated template draws fewer strangers; measured: FPIR 0.019 at a 1e-2 threshold on held-apart
    people). `keep`, if given, receives the pooled searches per crops-per-decision and size."""
    emb.need_flip(flip)
    by: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by[s.identity].append(s)
    candidates = sorted(pool if pool is not None else [p for p, v in by.items() if len(v) >= 2])
    emb.enrol(by[p][0].path for p in candidates)
    emb.probe([s.path for s in samples])
    enrol = {}
    for p in candidates:
        e = emb.enrolled[by[p][0].path]
        if not isinstance(e, str):
            enrol[p] = e[1] if flip else e[0]

    def stack(imgs: Sequence[Sample]) -> np.ndarray:
        vecs = [g.emb(flip) for g in (emb.probes[s.path] for s in imgs) if g.acquired(gate)]
        return np.stack(vecs) if vecs else np.zeros((0, EMBEDDING_DIM), np.float32)

    gallery = Gallery(enrol, {p: stack(imgs) for p, imgs in by.items()}, {p: stack(imgs[1:]) for p, imgs in by.items()})
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
        pipeline={"flip_tta": flip, "min_quality": gate,
                  "enrolment": "first image, build path",
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
                        row[name] = {"threshold": None, "why": "no table"}
                        continue
                    row[name] = {"threshold": round(t, 6), "tpir": res.tpir(t).to_dict(), "fpir": res.fpir(t).to_dict()}
                rows.append(row)
    return rows


def run_calibrate(
    dataset: Path | None, sizes: Sequence[int], lists: int, seed: int, fusion_mode: FusionMode,
    out: Path, threads: int | None = None, errata: str | None = None,
) -> int:
    root = dataset or _lfw()
    labelled = load_folder(root)
    fix = resolve_errata(errata, dataset)
    samples = fix.apply(labelled) if fix else labelled
    emb = Embeddings(threads=threads, log=_stderr_log, with_flip=False)
    _calibrate_with(root, samples, emb, sizes, lists, seed, fusion_mode, out, errata=fix)
    return 0


def _calibrate_with(
    root: Path, samples: list[Sample], emb: Embeddings, sizes: Sequence[int], lists: int, seed: int,
    fusion_mode: FusionMode, out: Path, command: str | None = None, errata: Errata | None = None,
) -> dict[str, Any]:
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
            "errata": _errata_note(errata),
            "built": utcnow().strftime("%Y-%m-%d"),
            "command": command or f"lfr calibrate --lists {lists} --seed {seed} --fusion-mode {fusion_mode}",
        },
        min_searches=MIN_CALIBRATION_SEARCHES, keep=kept,
    )
    table.write(out)
    print(f"wrote {out}")
    named = [("single crop", table.single)] + [(f"track of {n} ({fusion_mode})", c) for n, c in table.fused.items()]
    for name, curve in named:
        print(f"{name}: size " + " ".join(f"{s:>6d}" for s in curve.sizes))
        for k, row in curve.thresholds.items():
            print(f"  FPIR {k:>6s}  " + " ".join(f"{t:6.3f}" for t in row))
        print("  non-mated " + " ".join(f"{n:6d}" for n in curve.searches))
        print("  lists     " + " ".join(f"{n:6d}" for n in curve.lists))
    gain = production_gain(table, before, kept)
    print(f"TPIR at the new table's thresholds vs the replaced table's ({out}), on these lists' mated searches:")
    for r in gain:
        cells = []
        for name in ("before", "after"):
            x = r.get(name) or {}
            cells.append(f"{name} t={x['threshold']:.3f} TPIR {x['tpir']['rate']:.3f}" if x.get("threshold")
                         else f"{name} n/a")
        print(f"  crops {r['crops']} size {r['size']:5d} FPIR {fpir_key(r['target_fpir']):>6s} "
              f"({r['mated']} mated): " + "; ".join(cells))
    curves = [(1, table.single), *table.fused.items()]
    return {"table": str(out),
            "searches_per_cell": {str(n): dict(zip(map(str, c.sizes), c.searches, strict=True)) for n, c in curves},
            "lists_per_cell": {str(n): dict(zip(map(str, c.sizes), c.lists, strict=True)) for n, c in curves},
            "production_gain": gain}
