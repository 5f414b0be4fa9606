"""`lfr eval` and `lfr calibrate`: open-set 1:N accuracy on an identity-labelled folder, on the production path.

Enrolment goes through the watchlist build's own crop function (`BuildService._crop`: decode,
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
from functions.logic.build_watchlist import BuildService
from lfr_core.calibration import (
    DEFAULT_SIZES,
    DEFAULT_TARGETS,
    CalibrationTable,
    Gallery,
    build_curve,
    tracks_of,
)
from lfr_core.contracts import CROP_SIZE, MAX_TRACK_CROPS, InlineJpeg, utcnow
from lfr_core.datasets import REPO_ROOT
from lfr_core.errors import DatasetNotFoundError, InvalidImageError
from lfr_core.evaluation import REPORT_FPIRS, OpenSetResult, Rate, fpir_key, summarise
from lfr_core.face.embed import EMBEDDING_DIM, FaceEmbedder
from lfr_core.face.image import decode_jpeg
from lfr_core.matching import PRODUCTION_FUSION, FusionMode, WatchlistIndex, fuse_scores
from tests.fakes import InMemoryDeploymentRepository, InMemoryObjectStore

DEFAULT_OUT = REPO_ROOT / "build" / "eval"
OPERATING_FPIR = 2e-4  # the bar; NPL measured the Met at about 1 in 6,000
BATCH = 32
GATES = {"none": None, "production": DEFAULT_MIN_QUALITY, "strict": 0.5}


# -- the data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    gender: str = "unknown"
    extra: bool = False  # from --non-mated: never on the watchlist


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cropper = FaceCropper()
        self.embedder = FaceEmbedder(intra_op_threads=threads)
        self.store = InMemoryObjectStore()
        self.builder = BuildService(InMemoryDeploymentRepository(), self.store, self.cropper.detector, self.embedder)
        self.degrade, self.seed = degrade, seed
        self.probes: dict[Path, Probe] = {}
        self.enrolled: dict[Path, tuple[np.ndarray, np.ndarray] | str] = {}
        self.log = log or (lambda _m: None)

    def enrol(self, paths: Iterable[Path]) -> None:
        """Build-path crops of watchlist images (clean: enrolment photos are not CCTV)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.enrolled]
        pending: list[tuple[Path, np.ndarray]] = []
        for path in todo:
            key = "eval/enrol"
            self.store.put_object(key, path.read_bytes())
            crop = self.builder._crop(key)  # the production enrolment crop, not a copy of it
            del self.store.objects[key]  # image bytes held only while cropping
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
        plain, flip = self.embedder.embed_both(np.stack([c for _, c in pending]))
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
        plain, flip = self.embedder.embed_both(np.stack([c for _, c in pending]))
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
            false_alerts_at_operating_point=self.false_alert_pairs() if self.non_mated_pairs else None,
        )
        return out

    def fairness(self) -> dict[str, Any]:
        """FNIR and FPIR per gender at the operating threshold and at FPIR 1e-2 (where counts allow a ratio)."""
        res = self.result
        m_g = np.asarray(self.mated_gender)
        n_g = np.asarray(self.non_mated_gender)
        out: dict[str, Any] = {}
        for target in (OPERATING_FPIR, 1e-2):
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
) -> int:
    log = _stderr_log
    root = dataset or _lfw()
    samples = load_folder(root) + [s for d in non_mated for s in load_folder(d, extra=True)]
    multi = len({s.identity for s in samples if not s.extra} - _singletons(samples))
    if lists < 1:
        raise ValueError("--lists must be >= 1")
    protos = [Protocol(samples, watchlist_size or multi // 2, seed + i) for i in range(lists)]
    proto = protos[0]
    base = Variant(
        name="this run", flip=flip, gate=GATES[gate], enrol_images=enrol_images, template=template,
        fusion=fusion, fusion_mode=fusion_mode,
    )
    variants = [base, *ablation_variants(replace(base, flip=False, fusion=1))] if ablation else [base]
    emb = Embeddings(degrade=degrade, seed=seed, threads=threads, log=log)
    started = time.monotonic()
    enrol_paths = [p for pr in protos for p in pr.all_enrol_paths(variants)]
    log(f"enrolling {len(set(enrol_paths))} watchlist images ({len(protos)} lists of {len(proto.listed)} people)")
    emb.enrol(enrol_paths)
    probe_paths = [p for pr in protos for p in pr.all_probe_paths(variants)]
    log(f"probing {len(set(probe_paths))} images{' (degraded: cctv)' if degrade else ''}")
    emb.probe(probe_paths)
    outcomes = [pooled([evaluate(pr, emb, v) for pr in protos]) for v in variants]
    main = outcomes[0]
    out.mkdir(parents=True, exist_ok=True)
    tag = (f"{'cctv-' if degrade else ''}{'fusion' + str(fusion) + '-' if fusion > 1 else ''}s{seed}"
           f"{f'x{lists}' if lists > 1 else ''}")
    det_path = out / f"det-{tag}.png"
    write_det(
        [o for o in outcomes if o.variant.fusion == 1 and o.variant.probe_from is None][:4] if ablation else outcomes,
        det_path,
        f"{root.name}{' + cctv' if degrade else ''}: {main.watchlist_size} listed, "
        + (f"seed {seed}" if lists == 1 else f"pooled over {lists} lists (seeds {seed}-{seed + lists - 1})"),
    )
    summary = main.summary()
    summary.update(
        dataset=str(root), non_mated_dirs=[str(d) for d in non_mated], seed=seed, lists=lists, degrade=degrade,
        det_png=str(det_path), seconds=round(time.monotonic() - started, 1),
        command="lfr eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lfr eval",
    )
    if ablation:
        summary["ablation"] = [o.summary() for o in outcomes[1:]]
    json_path = out / f"eval-{tag}.json"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")

    print(f"dataset {root}: {len(proto.listed)} people listed "
          f"({f'seed {seed}' if lists == 1 else f'{lists} lists, seeds {seed}-{seed + lists - 1}, pooled'}), "
          f"failure to enrol {main.fte}; probes {'degraded (cctv)' if degrade else 'clean'}")
    print(TABLE_HEAD)
    for o in outcomes:
        print(table_line(o))
    for key, fair in summary["fairness"].items():
        cells = "; ".join(
            f"{m.upper()} F {fair['F'][m]['k']}/{fair['F'][m]['n']} vs M {fair['M'][m]['k']}/{fair['M'][m]['n']} "
            f"(ratio {fair['ratio_F_over_M'][m]})"
            for m in ("fnir", "fpir")
        )
        print(f"by gender at the FPIR {key} threshold {fair['threshold']}: {cells}")
    fa = summary["false_alerts_at_operating_point"]
    if fa:
        pairs = "; ".join(f"{p['searched']} -> {p['matched']} x{p['count']}" for p in fa["top"][:5])
        print(f"false alerts at the FPIR {fpir_key(OPERATING_FPIR)} threshold {fa['threshold']}: {fa['false_alerts']} "
              f"in {fa['distinct_pairs']} pairs (searched -> matched); most: {pairs}")
    print(f"wrote {json_path} and {det_path}")
    if calibrate_out is not None:
        # The same in-memory embeddings also rebuild the table: one pass over the images, not two.
        _calibrate_with(root, samples=[s for s in samples if not s.extra], emb=emb, sizes=DEFAULT_SIZES,
                        lists=20, seed=seed, fusion_mode=PRODUCTION_FUSION, out=calibrate_out,
                        command=summary["command"])
    if as_json:
        # The ablation detail stays in the file; the line carries this run and a one-row-per-variant digest.
        digest = {k: v for k, v in summary.items() if k != "ablation"}
        if ablation:
            digest["ablation"] = [
                {"variant": o.variant.name, "mated": o.result.n_mated, "non_mated": o.result.n_non_mated,
                 "rank1": o.summary()["rank1"], "tpir_at_fpir": o.summary()["tpir_at_fpir"]}
                for o in outcomes[1:]
            ]
        print(json.dumps(digest, separators=(",", ":")))
    return 0


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
) -> CalibrationTable:
    """A calibration table from the people in `samples` (enrolment = each person's first image)."""
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
    probes: dict[str, np.ndarray] = {}
    for p, imgs in by.items():
        got = [emb.probes[s.path] for s in imgs]
        vecs = [g.emb(flip) for g in got if g.acquired(gate)]
        probes[p] = np.stack(vecs) if vecs else np.zeros((0, EMBEDDING_DIM), np.float32)
    gallery = Gallery(enrol, probes)
    sizes = [s for s in sizes if s <= len(enrol)]
    single = build_curve(gallery, sizes, targets, lists, seed, progress=log)
    fused = {
        n: build_curve(gallery, sizes, targets, lists, seed, fusion=(n, fusion_mode), progress=log)
        for n in range(2, MAX_TRACK_CROPS + 1)
    }
    return CalibrationTable(
        model=emb.embedder.model_name,
        pipeline={"flip_tta": flip, "min_quality": gate, "enrolment": "first image, build path",
                  "probe": "edge FaceCropper central face, JPEG q95 wire",
                  "tracks": "n different images of one person"},
        single=single, fused=fused, fusion_mode=fusion_mode,
        provenance=provenance or {},
    ).with_track_floor()


def run_calibrate(
    dataset: Path | None, sizes: Sequence[int], lists: int, seed: int, fusion_mode: FusionMode,
    out: Path, threads: int | None = None,
) -> int:
    root = dataset or _lfw()
    return _calibrate_with(root, load_folder(root), Embeddings(threads=threads, log=_stderr_log), sizes, lists,
                           seed, fusion_mode, out)


def _calibrate_with(
    root: Path, samples: list[Sample], emb: Embeddings, sizes: Sequence[int], lists: int, seed: int,
    fusion_mode: FusionMode, out: Path, command: str | None = None,
) -> int:
    table = calibrate_table(
        samples, emb, sizes, DEFAULT_TARGETS, lists, seed, fusion_mode,
        provenance={
            "dataset": root.name, "images": len(samples), "lists_per_size": lists, "seed": seed,
            "built": utcnow().strftime("%Y-%m-%d"),
            "command": command or f"lfr calibrate --lists {lists} --seed {seed} --fusion-mode {fusion_mode}",
        },
    )
    table.write(out)
    print(f"wrote {out}")
    named = [("single crop", table.single)] + [(f"track of {n} ({fusion_mode})", c) for n, c in table.fused.items()]
    for name, curve in named:
        print(f"{name}: size " + " ".join(f"{s:>6d}" for s in curve.sizes))
        for k, row in curve.thresholds.items():
            print(f"  FPIR {k:>6s}  " + " ".join(f"{t:6.3f}" for t in row))
    return 0

