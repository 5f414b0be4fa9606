"""One alert rule (`lfr_core.matching.decide`): the match service, `lfr eval`'s identification and
`lfr eval-video`'s production rule decide the same on the boundary (a fused score exactly at the
threshold alerts; one float above it does not) and pick the same threshold for 1, 2 and 3 crops.

The embedder is replaced by one that returns chosen unit vectors: the real model cannot be steered
to a score exactly at a threshold, and the rule under test runs after the model. Everything after
it (decode, index search, fusion, decision, alert records) is the production code.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from functions.handlers import match as match_handler
from functions.logic import watchlist
from functions.logic.match import MatchService
from lfr_core.contracts import CROP_SIZE, MAX_TRACK_CROPS
from lfr_core.layout import watchlist_index_key
from lfr_core.matching import EMBEDDING_DIM, Thresholds, WatchlistIndex, decide
from lfr_eval.datasets import Sample
from lfr_eval.embeddings import Embeddings, Probe
from lfr_eval.identification import Variant, WatchlistSplit, evaluate
from lfr_eval.video import production_decision
from tests.fakes import (
    InMemoryAlertPublisher,
    InMemoryAlertRepository,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    RecordingMetrics,
    audit_log,
    crop_message,
    deployment,
    lambda_context,
    page_link,
    require_models,
    sqs_event,
)

DEP = "dep-rule"
# Each crop's cosine with the listed person's entry; max fusion takes the first n's best.
CROP_SCORES = (0.61, 0.58, 0.6)
LOW, HIGH = 0.05, 0.99  # the thresholds of the OTHER track sizes: the wrong pick would flip the outcome


def _unit(i: int) -> np.ndarray:
    v = np.zeros(EMBEDDING_DIM, np.float32)
    v[i] = 1.0
    return v


ENTRY, STRANGER = _unit(0), _unit(1)


def _crop_vector(score: float, axis: int) -> np.ndarray:
    v = score * _unit(0) + math.sqrt(1.0 - score * score) * _unit(axis)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _crops(n: int) -> np.ndarray:
    return np.stack([_crop_vector(s, 2 + i) for i, s in enumerate(CROP_SCORES[:n])])


def _index() -> WatchlistIndex:
    return watchlist.load_index(watchlist.index_bytes(["a_0001", "b_0001"], ["A", "B"], np.stack([ENTRY, STRANGER])))


def _thresholds(n: int, at: float, alerts: bool) -> Thresholds:
    """`at` for tracks of n crops; the other sizes set so that using them would flip the decision."""
    other = HIGH if alerts else LOW
    values = {k: (at if k == n else other) for k in range(1, MAX_TRACK_CROPS + 1)}
    return Thresholds(values[1], tuple(values[k] for k in range(2, MAX_TRACK_CROPS + 1)))


class _VectorEmbedder:
    """Returns the queued vectors, one per crop, in the order the service embeds them."""

    def __init__(self) -> None:
        self.queue: list[np.ndarray] = []

    def embed(self, crops: Any) -> np.ndarray:
        out, self.queue = np.stack(self.queue[: len(crops)]), self.queue[len(crops) :]
        return out


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _match_path(n: int, thresholds: Thresholds) -> tuple[bool, float | None]:
    """The match service (through its Lambda handler): did the track alert, at which threshold."""
    deployments = InMemoryDeploymentRepository()
    wl = InMemoryObjectStore("watchlist")
    etag = wl.put_object(watchlist_index_key(DEP), watchlist.index_bytes(["a_0001", "b_0001"], ["A", "B"],
                                                                           np.stack([ENTRY, STRANGER])))
    deployments.create(deployment(DEP, threshold=thresholds.one_crop, index_etag=etag, watchlist_size=2,
                                  track_thresholds=thresholds.tracks, fusion_mode="max"))
    embedder = _VectorEmbedder()
    embedder.queue = list(_crops(n))
    alerts = InMemoryAlertRepository()
    service = MatchService(
        deployments=deployments, alerts=alerts, watchlists=wl, crops=InMemoryObjectStore("alerts"),
        publisher=InMemoryAlertPublisher(), embedder=embedder, metrics=RecordingMetrics(), clock=Clock(NOW),
        audit=audit_log(), page_links=page_link,
    )
    match_handler.set_service(service)
    try:
        jpegs = [_jpeg(i) for i in range(n)]
        resp = match_handler.handler(sqs_event([("sqs-1", crop_message(DEP, jpegs[0], more=jpegs[1:]))]),
                                     lambda_context())
    finally:
        match_handler.set_service(None)
    assert resp["batchItemFailures"] == [] and embedder.queue == []
    raised = alerts.list_for_deployment(DEP)
    assert all(a.crops_fused == n and a.watchlist_label == "A" for a in raised)
    return bool(raised), raised[0].threshold if raised else None


def _identification_path(n: int, thresholds: Thresholds, tmp: Path) -> bool:
    """`lfr eval`'s searches (a listed person's track of n images, fused as the variant says),
    counted at the threshold for tracks of that size."""
    require_models()
    listed = [Sample("A", tmp / "a0.jpg")] + [Sample("A", tmp / f"a{i + 1}.jpg") for i in range(n)]
    stranger = [Sample("B", tmp / "b0.jpg")]
    split = WatchlistSplit(listed + stranger, watchlist_size=1, seed=0)
    emb = Embeddings()
    emb.enrolled[listed[0].path] = (ENTRY, ENTRY)
    for s, v in zip(listed[1:], _crops(n), strict=True):
        emb.probes[s.path] = Probe(plain=v, flip=v, quality=1.0, iod=100.0)
    emb.probes[stranger[0].path] = Probe(plain=STRANGER, flip=STRANGER, quality=1.0, iod=100.0)
    outcome = evaluate(split, emb, Variant(gate=None, enrol_images=1, fusion=n, fusion_mode="max"))
    assert outcome.result.n_mated == 1 and outcome.result.mated_correct.all()
    return outcome.result.tpir(thresholds.for_crops(n)).k == 1


def _fused_score(n: int) -> float:
    return _index().fused_top1(_crops(n), "max").score


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("where", ["at", "just above"])
def test_the_match_service_and_both_evaluators_decide_alike_on_the_boundary(
    n: int, where: str, tmp_path: Path
) -> None:
    score = _fused_score(n)
    at = score if where == "at" else float(np.nextafter(np.float32(score), np.float32(np.inf)))
    expected = where == "at"  # a score exactly at its threshold alerts; one float below it does not
    thresholds = _thresholds(n, at, expected)

    rule = decide(score, n, thresholds)
    assert (rule.alert, rule.threshold) == (expected, at)
    label, video = production_decision(_index(), _crops(n), "max", thresholds)
    assert label == "A" and video == rule
    alerted, used = _match_path(n, thresholds)
    assert alerted is expected and (used == pytest.approx(at, abs=0) if alerted else used is None)
    assert _identification_path(n, thresholds, tmp_path) is expected


def test_longer_tracks_use_the_longest_calibrated_size_and_no_track_thresholds_mean_one_crops() -> None:
    t = Thresholds(0.5, (0.55, 0.6))
    assert [decide(0.6, n, t).threshold for n in (0, 1, 2, 3, 4, 7)] == [0.5, 0.5, 0.55, 0.6, 0.6, 0.6]
    assert decide(0.6, 4, t).alert and not decide(np.nextafter(0.6, 0), 4, t).alert
    assert [decide(0.5, n, Thresholds(0.5)) for n in (1, 2, 3)] == [decide(0.5, 1, Thresholds(0.5))] * 3
    assert decide(0.5, 3, Thresholds(0.5)).alert
