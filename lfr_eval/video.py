"""One decision per track (`lfr eval-video`), measured on generated walk-by videos.

`lfr eval --fusion N` measures tracks made of N *different photos* of a person. A camera's track
is not that: its crops are frames of one walk, nearly the same picture. This measures
what the deployed path does with real tracks: it walks listed people (an image other than their
enrolment photo) and strangers past a synthetic camera (`lfr scenario`), runs the edge uploader
(detect, track, gate, bundle up to 3 crops per track) into memory, and decides every track's
message by the match function's rule (`lfr_core.matching.decide`), at the thresholds a deployment of this list size gets
from the calibration table for the target FPIR. It reports, per decision rule, the share of listed
people's tracks identified (TPIR) and the stranger tracks that alerted (false alerts), with counts
and 95% intervals. The video lives in a temporary folder deleted at exit; nothing of a face is kept.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_uploader.delivery import DeliveryStats
from edge_uploader.pipeline import FaceCropper
from edge_uploader.runner import Uploader
from edge_uploader.sources import Frame, FrameSource
from lfr_core.calibration import shipped_table
from lfr_core.contracts import CropMessage
from lfr_core.face.detect import Detection
from lfr_core.face.image import decode_jpeg
from lfr_core.matching import (
    FUSION_MODES,
    PRODUCTION_FLIP_TTA,
    PRODUCTION_TEMPLATE,
    Decision,
    Thresholds,
    WatchlistIndex,
    decide,
    person_templates,
)
from lfr_eval.calibrate import ENROL_PHOTOS
from lfr_eval.datasets import read_lfw_manifest
from lfr_eval.embeddings import Embeddings
from lfr_eval.fusion import track_top1
from lfr_eval.metrics import Rate
from lfr_eval.scenario import Person, make_scenario, track_identity


class CollectingSink:
    """An uploader sink that keeps its messages in memory (for evaluation and tests; the van sends them)."""

    def __init__(self) -> None:
        self.messages: list[CropMessage] = []

    def deployment_expired(self) -> bool:
        return False

    def submit(self, msg: CropMessage) -> None:
        self.messages.append(msg)

    def stats(self) -> DeliveryStats | None:
        return None


@dataclass
class VideoTrack:
    """One message of the edge uploader, as the evaluation sees it."""

    identity: str | None  # ground truth at the message's best crop
    listed: bool
    embeddings: np.ndarray  # (crops, 128), in memory only
    qualities: tuple[float, ...] = ()  # the edge's quality score of each crop, in the same order


@dataclass
class RuleResult:
    name: str
    threshold: str
    hits: int = 0  # listed people's tracks identified as the right person above threshold
    mated: int = 0
    false: int = 0  # strangers' tracks that alerted
    non_mated: int = 0
    found: set[str] = field(default_factory=set)

    def summary(self, listed_walkers: int) -> dict[str, Any]:
        return {
            "rule": self.name, "threshold": self.threshold,
            "tpir_tracks": Rate(self.hits, self.mated).to_dict(),
            "false_alert_tracks": Rate(self.false, self.non_mated).to_dict(),
            "listed_walkers_found": Rate(len(self.found), listed_walkers).to_dict(),
        }


Decide = Callable[[WatchlistIndex, np.ndarray, tuple[float, ...]], tuple[str, Decision]]  # -> (label, decision)


def rules(target_fpir: float, size: int) -> dict[str, tuple[str, Decide]]:
    """Decision rules compared, at the thresholds a deployment of `size` gets for `target_fpir`.
    Each decides with `lfr_core.matching.decide`, the match function's rule."""
    table = shipped_table()
    t1 = table.threshold(target_fpir, size)
    tn = {n: table.threshold(target_fpir, size, n) for n in (2, 3)}
    one = Thresholds(t1)  # every track size at the one-crop threshold
    production = Thresholds(t1, (tn[2], tn[3]))
    mode = table.fusion_mode
    other = next(m for m in FUSION_MODES if m != mode)

    def best_crop(index: WatchlistIndex, e: np.ndarray, _q: tuple[float, ...]) -> tuple[str, Decision]:
        h = index.top1(e[:1])[0]  # the message's own crop: the best by quality
        return h.label, decide(h.score, 1, one)

    def any_crop(index: WatchlistIndex, e: np.ndarray, _q: tuple[float, ...]) -> tuple[str, Decision]:
        h = max(index.top1(e), key=lambda x: x.score)  # each crop decided alone; the track keeps its best
        return h.label, decide(h.score, 1, one)

    def fused(index: WatchlistIndex, e: np.ndarray, _q: tuple[float, ...]) -> tuple[str, Decision]:
        return production_decision(index, e, mode, production)

    def other_at_t1(index: WatchlistIndex, e: np.ndarray, _q: tuple[float, ...]) -> tuple[str, Decision]:
        h = index.fused_top1(e, other)
        return h.label, decide(h.score, len(e), one)

    def candidate_at_t1(mode: str) -> Decide:
        # lfr_eval.fusion's candidates, held to the one-crop threshold (no table for them yet).
        def rule(index: WatchlistIndex, e: np.ndarray, q: tuple[float, ...]) -> tuple[str, Decision]:
            h = track_top1(index, e, q, mode)
            return h.label, decide(h.score, len(e), one)
        return rule

    return {
        "best crop only": (f"{t1:.3f}", best_crop),
        "each crop alone (before fusion)": (f"{t1:.3f}", any_crop),
        f"production: {mode} fusion, calibrated per track size": (
            f"1:{t1:.3f} 2:{tn[2]:.3f} 3:{tn[3]:.3f}", fused),
        f"{other} fusion at the one-crop threshold": (f"{t1:.3f}", other_at_t1),
        "feature fusion (mean embedding) at the one-crop threshold": (f"{t1:.3f}", candidate_at_t1("feature")),
        "quality-weighted fusion at the one-crop threshold": (f"{t1:.3f}", candidate_at_t1("quality")),
    }


def production_decision(
    index: WatchlistIndex, crops: np.ndarray, mode: str, thresholds: Thresholds
) -> tuple[str, Decision]:
    """What the match function decides for a track of these crop embeddings: the fused top-1
    against the threshold for that many crops."""
    h = index.fused_top1(crops, mode)
    return h.label, decide(h.score, len(crops), thresholds)


@dataclass
class VideoEvaluation:
    summary: dict[str, Any]  # the JSON report: counts and rates only, nothing of a face
    results: list[RuleResult]
    listed_walked: int  # listed people who walked past with a face (the "found" denominator)


def measure_video(
    watchlist_size: int, listed_walkers: int, strangers: int, seed: int, target_fpir: float,
    log: Callable[[str], None] | None = None,
) -> VideoEvaluation:
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.monotonic()
    by_id: dict[str, list[Path]] = {}
    for img in read_lfw_manifest():
        by_id.setdefault(img.identity, []).append(img.path)
    rng = random.Random(seed)
    multi = sorted(i for i, v in by_id.items() if len(v) >= 2)
    if not 1 <= listed_walkers <= watchlist_size <= len(multi):
        raise ValueError(f"need 1 <= listed walkers <= watchlist size <= {len(multi)}")
    listed = rng.sample(multi, watchlist_size)
    others = sorted(set(by_id) - set(listed))
    if strangers > len(others):
        raise ValueError(f"at most {len(others)} strangers")
    # Listed people walk past with a photo other than their enrolment photo; strangers with any.
    walkers = [Person(p, by_id[p][1]) for p in listed[:listed_walkers]]
    walkers += [Person(p, by_id[p][0]) for p in rng.sample(others, strangers)]
    rng.shuffle(walkers)

    emb = Embeddings(log=say)

    def enrol_photos(person: str) -> list[Path]:
        # Enrolled as production enrols (`person_templates`): up to ENROL_PHOTOS, never the walking photo.
        return [by_id[person][0], *by_id[person][2 : ENROL_PHOTOS + 1]]

    emb.enrol(s for p in listed for s in enrol_photos(p))
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    for p in listed:
        got = emb.enrolled_vectors(enrol_photos(p), PRODUCTION_FLIP_TTA)
        ids += [p] * len(got)
        vecs.append(got)
    index = WatchlistIndex(*person_templates(ids, ids, np.concatenate(vecs), PRODUCTION_TEMPLATE))
    say(f"enrolled {len(index)} of {len(listed)} listed people from {len(ids)} photos; "
        f"walking {len(walkers)} past the camera")

    sink = CollectingSink()
    who: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="lfr-eval-video-") as tmp:
        video, truth_path = Path(tmp) / "walk.mp4", Path(tmp) / "truth.json"
        truth = make_scenario(walkers, video, truth_path, seed=seed, on_no_face="skip")

        def on_crop(msg: CropMessage, frame: Frame, det: Detection) -> None:
            who[msg.message_id] = track_identity(truth, frame.index, det.box)

        uploader = Uploader(FaceCropper(), sink, deployment_id="eval-video", camera_id="eval", on_crop=on_crop)
        with FrameSource(str(video), realtime=False) as source:
            stats = uploader.run(source)
    say(f"edge: {stats.frames_processed} frames, {stats.tracks} tracks, {len(sink.messages)} messages, "
        f"{stats.crops_selected} crops")

    listed_set = set(index.labels)
    skipped = set(truth.get("skipped", []))
    walked = sum(1 for w in walkers if w.identity in listed_set and w.identity not in skipped)
    tracks: list[VideoTrack] = []
    for m in sink.messages:
        crops = [decode_jpeg(m.image.to_bytes())] + [decode_jpeg(c.image.to_bytes()) for c in m.more]  # type: ignore[union-attr]
        ident = who.get(m.message_id)
        qualities = (m.quality.score, *(c.quality.score for c in m.more))
        tracks.append(VideoTrack(ident, ident in listed_set, emb.embedder.embed(np.stack(crops)), qualities))

    results = []
    for name, (thr, rule) in rules(target_fpir, len(index)).items():
        r = RuleResult(name, thr)
        for t in tracks:
            if t.identity is None:
                continue  # a track the ground truth cannot place (a detector false positive)
            label, decision = rule(index, t.embeddings, t.qualities)
            alert = decision.alert
            if t.listed:
                r.mated += 1
                if alert and label == t.identity:
                    r.hits += 1
                    r.found.add(t.identity)
            else:
                r.non_mated += 1
                r.false += int(alert)
        results.append(r)

    crops_hist = {n: sum(1 for t in tracks if len(t.embeddings) == n) for n in (1, 2, 3)}
    summary = {
        "watchlist_size": len(index), "target_fpir": target_fpir, "seed": seed,
        "walkers": {"listed": listed_walkers, "strangers": strangers, "skipped": len(truth.get("skipped", []))},
        "tracks": len(tracks), "unplaced_tracks": sum(t.identity is None for t in tracks),
        "crops_per_track": {str(k): v for k, v in crops_hist.items()},
        "rules": [r.summary(walked) for r in results],
        "seconds": round(time.monotonic() - started, 1),
    }
    return VideoEvaluation(summary, results, walked)
