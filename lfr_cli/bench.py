"""`lfr bench`: what a crop, a search, a cold start and a camera-hour cost, measured in one run here.

Every number is measured on the machine it runs on, in this run, and reported (JSON + a PNG of the
search scaling curves); nothing is asserted about speed (tests check only the JSON's shape). Search
is measured on real face embeddings: the watchlist holds real enrolment photos of lfw-dev people and,
to reach large sizes, synthetic distractors drawn from a Gaussian fitted to real embeddings (the
mean and covariance of SFace's output, so the gallery is as anisotropic as real faces are); queries
are the same people's OTHER photos (mated), so "recall" is what a listed person's decision needs.
Wherever the int8 scan is measured, the approximate alternative (`InvertedLists`) is measured on
the same queries, with the least time any pass over the scan's codes can take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from infra.constants import MATCH_BATCH_SIZE, MATCH_BATCHING_WINDOW_S, MATCH_MEMORY_MB
from lfr_core.ann import SCAN_MIN_ENTRIES
from lfr_core.calibration import threshold_for
from lfr_core.matching import WatchlistIndex

DEFAULT_OUT = Path("build") / "bench"
FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
CROPS_PER_TRACK = 3  # what the edge sends per track (README "Edge uploader")
RATES_PER_S = (1.0, 5.0, 10.0)  # track messages per second from one camera

# List prices, us-east-1, as published by AWS and last checked 2025-06; London (eu-west-2) is within
# ~10%. Check the pricing pages before budgeting: these dated constants are the only inputs not measured.
PRICES_AS_OF = "2025-06 (us-east-1 list prices)"
LAMBDA_GB_S_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1e6
SQS_REQUEST_USD = 0.40 / 1e6
DYNAMODB_WRITE_USD = 0.625 / 1e6  # on-demand, per write request unit
DYNAMODB_READ_USD = 0.125 / 1e6
S3_GET_USD = 0.0004 / 1000
SNS_PUBLISH_USD = 0.50 / 1e6
REKOGNITION_SEARCH_USD = 0.001  # SearchFacesByImage, per image (first price tier)

T = TypeVar("T")


def progress(items: Sequence[T], label: str) -> Iterator[T]:
    """A one-line progress bar on stderr (the JSON goes to stdout)."""
    n = len(items)
    for i, item in enumerate(items):
        done = int(30 * i / max(n, 1))
        print(f"\r{label:<28} [{'#' * done}{'.' * (30 - done)}] {i}/{n}", end="", file=sys.stderr, flush=True)
        yield item
    print(f"\r{label:<28} [{'#' * 30}] {n}/{n}", file=sys.stderr, flush=True)


def _pct(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


# -- real embeddings ------------------------------------------------------------------------------


@dataclass
class RealFaces:
    """Embeddings of real photos (one per photo, the production crop path) and who is in each."""

    people: list[str]
    embeddings: np.ndarray
    crops: np.ndarray  # a few aligned crops, for timing the model

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(enrolment rows, mated query rows, the enrolment row each query should find)."""
        first: dict[str, int] = {}
        queries: list[int] = []
        expected: list[int] = []
        for row, person in enumerate(self.people):
            if person in first:
                queries.append(row)
                expected.append(first[person])
            else:
                first[person] = row
        enrol = np.array(sorted(first.values()))
        position = {row: i for i, row in enumerate(enrol)}
        return enrol, np.array(queries), np.array([position[r] for r in expected])


def real_faces(limit: int | None, cache: Path) -> RealFaces:
    """Embed lfw-dev photos through the edge's crop and the cloud's embedder (cached per limit)."""
    path = cache / f"lfw-embeddings-{limit or 'all'}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return RealFaces(npz["people"].tolist(), npz["embeddings"], npz["crops"])
    import cv2

    from edge_uploader.pipeline import FaceCropper
    from lfr_core.face.embed import FaceEmbedder
    from lfr_eval.datasets import read_lfw_manifest

    manifest = [m for m in read_lfw_manifest() if m.n_images >= 2]
    if limit is not None:
        manifest = manifest[:limit]
    cropper, embedder = FaceCropper(), FaceEmbedder()
    people: list[str] = []
    vectors: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    for image in progress(manifest, "embedding real faces"):
        frame = cv2.imread(str(image.path), cv2.IMREAD_COLOR)
        found = cropper.crops(frame, faces="central") if frame is not None else []
        if not found:
            continue
        people.append(image.identity)
        vectors.append(embedder.embed([found[0].aligned_bgr])[0])
        if len(crops) < 32:
            crops.append(found[0].aligned_bgr)
    faces = RealFaces(people, np.stack(vectors), np.stack(crops))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, people=np.array(people), embeddings=faces.embeddings, crops=faces.crops)
    return faces


def gallery(faces: RealFaces, size: int, seed: int = 0) -> tuple[WatchlistIndex, np.ndarray, np.ndarray]:
    """A watchlist of `size` entries: every real enrolment, then synthetic distractors; returns
    (index, mated queries, the entry each query's person is enrolled as)."""
    enrol, queries, expected = faces.split()
    real = faces.embeddings[enrol][:size]
    keep = expected < len(real)
    rng = np.random.default_rng(seed)
    extra = size - len(real)
    if extra > 0:
        mean = faces.embeddings.mean(axis=0)
        cov = np.cov(faces.embeddings.T) + 1e-6 * np.eye(faces.embeddings.shape[1])
        synth = (mean + rng.standard_normal((extra, len(mean))) @ np.linalg.cholesky(cov).T).astype(np.float32)
        synth /= np.linalg.norm(synth, axis=1, keepdims=True)
        emb = np.concatenate([real, synth])
    else:
        emb = real
    ids = [f"e{i}" for i in range(size)]
    return WatchlistIndex(ids, ids, emb), faces.embeddings[queries][keep], expected[keep]


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class SearchPoint:
    entries: int
    exact_ms_per_crop_batch: float  # a batch of 10 tracks x 3 crops, per crop
    exact_ms_per_crop_alone: float  # one single-crop message, p99
    exact_load_s: float  # artifact bytes -> searchable index
    artifact_mib: float
    exact_rank1_own: float  # mated queries whose best entry is their own enrolment (sanity)
    # The int8 scan (lfr_core.ann): candidates within its error bound, then the exact re-score.
    scan_build_s: float | None = None
    scan_ms_per_crop_batch: float | None = None
    scan_ms_per_crop_alone: float | None = None  # p99
    scan_ms_per_crop_track: float | None = None  # one 3-crop message, p99 per crop
    scan_load_s: float | None = None
    scan_recall_of_exact_best: float | None = None  # 1.0 by construction; measured all the same
    scan_decisions_equal_exact: float | None = None
    scan_candidates_p50: float | None = None
    scan_candidates_p99: float | None = None
    scan_artifact_mib: float | None = None
    # One read of the int8 codes with no arithmetic: what any pass over the whole gallery costs at
    # least, whatever its kernel (a lone crop's exact decision needs such a pass).
    scan_read_floor_ms: float | None = None
    # The rejected alternative, measured beside the scan: an approximate index (`InvertedLists`).
    ivf: IvfPoint | None = None


@dataclass
class IvfPoint:
    """An inverted-file index over k-means lists of the same gallery: a lone crop probes its
    nearest lists and is scored exactly within them. Recall of the exact best and the p99 time
    per lone crop, for each share of the lists probed (all of them is exact search, a check)."""

    lists: int
    build_s: float
    probe_shares: list[float]
    recall_of_exact_best: list[float]  # from each query's rank of the list holding its exact best
    timed_found_exact_best: list[float]  # of the timed lone crops, the share the search itself got right
    ms_per_crop_alone: list[float]  # p99


class InvertedLists:
    """The textbook inverted file (k-means lists, the gallery stored list by list), in numpy: how
    much of the gallery a lone crop must read for the exact best entry to be in what it reads.
    Measured here only; production keeps the scan (lfr_core/ann.py says why)."""

    KMEANS_ROUNDS = 10
    SAMPLE_PER_LIST = 64

    def __init__(self, embeddings: np.ndarray, lists: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        size = min(len(embeddings), self.SAMPLE_PER_LIST * lists)
        sample = embeddings[rng.choice(len(embeddings), size, replace=False)]
        centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
        for _ in range(self.KMEANS_ROUNDS):  # spherical k-means: cosine is the search's score
            nearest = np.argmax(sample @ centroids.T, axis=1)
            for k in range(lists):
                members = sample[nearest == k]
                if len(members):
                    centroids[k] = members.mean(axis=0)
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        self.centroids = centroids
        self.list_of = np.concatenate([
            np.argmax(embeddings[s : s + 65_536] @ centroids.T, axis=1) for s in range(0, len(embeddings), 65_536)
        ])
        self.order = np.argsort(self.list_of, kind="stable")
        self.stored = np.ascontiguousarray(embeddings[self.order])
        self.offsets = np.searchsorted(self.list_of[self.order], np.arange(lists + 1))

    def list_rank(self, queries: np.ndarray, entries: np.ndarray) -> np.ndarray:
        """How many lists each query would probe before the one holding its entry."""
        near = queries @ self.centroids.T
        own = near[np.arange(len(queries)), self.list_of[entries]]
        return (near > own[:, None]).sum(axis=1)

    def best_entry(self, query: np.ndarray, probes: int) -> int:
        """The best entry within the query's `probes` nearest lists, scored exactly."""
        near = self.centroids @ query
        best, best_row = -np.inf, -1
        for k in np.argpartition(-near, probes - 1)[:probes]:
            lo, hi = self.offsets[k], self.offsets[k + 1]
            if hi > lo:
                scores = self.stored[lo:hi] @ query
                j = int(np.argmax(scores))
                if scores[j] > best:
                    best, best_row = float(scores[j]), lo + j
        return int(self.order[best_row])


IVF_PROBE_SHARES = (1 / 32, 1 / 8, 1 / 4, 1.0)


def measure_ivf(embeddings: np.ndarray, queries: np.ndarray, exact_best: np.ndarray) -> IvfPoint:
    lists = max(8, round(len(embeddings) ** 0.5))
    t = time.perf_counter()
    ivf = InvertedLists(embeddings, lists)
    build_s = time.perf_counter() - t
    rank = ivf.list_rank(queries, exact_best)
    recall, found, alone = [], [], []
    timed = range(min(200, len(queries)))
    for share in IVF_PROBE_SHARES:
        probes = max(1, round(share * lists))
        recall.append(float(np.mean(rank < probes)))
        times, hits = [], 0
        for i in timed:
            t = time.perf_counter()
            entry = ivf.best_entry(queries[i], probes)
            times.append(time.perf_counter() - t)
            hits += entry == exact_best[i]
        alone.append(_pct(times, 99) * 1000)
        found.append(hits / len(timed))
    return IvfPoint(lists, build_s, list(IVF_PROBE_SHARES), recall, found, alone)


def _read_floor_ms(blocks: np.ndarray) -> float:
    """The fastest of three reads of every byte of `blocks` (an xor-reduce: memory, not arithmetic)."""
    words = blocks.reshape(-1).view(np.uint64)
    return min(_time_it(lambda: np.bitwise_xor.reduce(words), 3)) * 1000


def _time_it(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _best_entries(index: WatchlistIndex, queries: np.ndarray) -> np.ndarray:
    """Each query's decided entry, as single-crop tracks. In chunks: 2,000 queries against 1M
    entries would be an 8 GB score matrix at once."""
    return np.array([
        h.index
        for start in range(0, len(queries), 100)
        for h in index.fused_top1_batch([q[None] for q in queries[start : start + 100]], "max")
    ])


def measure_search(faces: RealFaces, size: int, with_scan: bool, queries_cap: int) -> SearchPoint:
    index, queries, expected = gallery(faces, size)
    queries = queries[:queries_cap]
    expected = expected[:queries_cap]
    rng = np.random.default_rng(1)
    tracks = [queries[rng.integers(len(queries), size=CROPS_PER_TRACK)] for _ in range(10)]
    index.fused_top1_batch(tracks, "max")  # warm BLAS
    batch = min(_time_it(lambda: index.fused_top1_batch(tracks, "max"), 3)) / (10 * CROPS_PER_TRACK)
    alone = _time_it(lambda: index.fused_top1_batch([queries[:1]], "max"), 20)
    exact_best = _best_entries(index, queries)
    artifact = index.to_npz_bytes()
    load = min(_time_it(lambda: WatchlistIndex.from_npz_bytes(artifact), 3))
    point = SearchPoint(
        entries=size,
        exact_ms_per_crop_batch=batch * 1000,
        exact_ms_per_crop_alone=_pct(alone, 99) * 1000,
        exact_load_s=load,
        artifact_mib=len(artifact) / 2**20,
        exact_rank1_own=float(np.mean(exact_best == expected)),
    )
    if with_scan:
        t = time.perf_counter()
        index.with_scan()
        point.scan_build_s = time.perf_counter() - t
        scan_artifact = index.to_npz_bytes()
        point.scan_artifact_mib = len(scan_artifact) / 2**20
        point.scan_load_s = min(_time_it(lambda: WatchlistIndex.from_npz_bytes(scan_artifact), 3))
        index.fused_top1_batch(tracks, "max")  # the scan model's session, once
        point.scan_ms_per_crop_batch = min(_time_it(lambda: index.fused_top1_batch(tracks, "max"), 3)) * 1000 / (
            10 * CROPS_PER_TRACK
        )
        alone = _time_it(lambda: index.fused_top1_batch([queries[:1]], "max"), 20)
        point.scan_ms_per_crop_alone = _pct(alone, 99) * 1000
        track = _time_it(lambda: index.fused_top1_batch([tracks[0]], "max"), 20)
        point.scan_ms_per_crop_track = _pct(track, 99) * 1000 / CROPS_PER_TRACK
        assert index.scan is not None
        scan = index.scan
        proposed = [c for start in range(0, len(queries), 100) for c in scan.candidates(queries[start : start + 100])]
        point.scan_recall_of_exact_best = float(np.mean([exact_best[i] in c for i, c in enumerate(proposed)]))
        counts = [len(c) for c in proposed]
        point.scan_candidates_p50, point.scan_candidates_p99 = _pct(counts, 50), _pct(counts, 99)
        point.scan_decisions_equal_exact = float(np.mean(_best_entries(index, queries) == exact_best))
        point.scan_read_floor_ms = _read_floor_ms(scan.blocks)
        point.ivf = measure_ivf(index.embeddings, queries, exact_best)
    return point


@dataclass
class StoragePoint:
    """What storing the gallery at a lower precision does to decisions: every real photo against
    every other (the query stays float32, the gallery row is rounded)."""

    dtype: str
    bytes_per_entry: int
    pairs: int
    max_score_error: float
    decisions_changed: dict[str, int]  # threshold -> pairs whose side of it changed


STORAGE_TARGETS = (1e-3, 2e-4)
STORAGE_LIST_SIZES = (20, 200, 1000)


def _int8_round_trip(emb: np.ndarray) -> np.ndarray:
    # Symmetric per-value scale: unit vectors have every component within [-1, 1].
    return np.clip(np.rint(emb * 127), -127, 127).astype(np.int8).astype(np.float32) / 127


def measure_storage(faces: RealFaces) -> list[StoragePoint]:
    emb = faces.embeddings.astype(np.float32)
    exact = emb @ emb.T
    off_diagonal = ~np.eye(len(emb), dtype=bool)
    thresholds = sorted({threshold_for(t, n) for t in STORAGE_TARGETS for n in STORAGE_LIST_SIZES})
    points = []
    for dtype, rounded, size in (
        ("float32", emb, 4),
        ("float16", emb.astype(np.float16).astype(np.float32), 2),
        ("int8", _int8_round_trip(emb), 1),
    ):
        scores = emb @ rounded.T
        changed = {
            f"{t:.4f}": int(((scores >= t) != (exact >= t))[off_diagonal].sum()) for t in thresholds
        }
        points.append(StoragePoint(dtype, size * emb.shape[1], int(off_diagonal.sum()),
                                   float(np.abs(scores - exact).max()), changed))
    return points


@dataclass
class ModelTiming:
    ms_per_crop_batch_1: float
    ms_per_crop_batch_10: float


def measure_model(faces: RealFaces) -> ModelTiming:
    from lfr_core.face.embed import FaceEmbedder

    embedder = FaceEmbedder(intra_op_threads=1)  # Lambda's CPU share at the match function's memory
    crops = np.resize(faces.crops, (10, *faces.crops.shape[1:]))
    embedder.embed(crops[:1])
    one = _time_it(lambda: embedder.embed(crops[:1]), 20)
    ten = _time_it(lambda: embedder.embed(crops), 5)
    return ModelTiming(
        ms_per_crop_batch_1=float(np.median(one)) * 1000, ms_per_crop_batch_10=float(np.median(ten)) * 100
    )


COLD_START_PROBE = """
import time, json, sys
from pathlib import Path
t0 = time.perf_counter()
import numpy as np
from lfr_core.face.embed import FaceEmbedder
from lfr_core.matching import WatchlistIndex
import functions.logic.match  # the match path's modules, as the handler imports them
t1 = time.perf_counter()
embedder = FaceEmbedder(intra_op_threads=1)
embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))
t2 = time.perf_counter()
index = WatchlistIndex.from_npz_file(Path(sys.argv[1]))
index.fused_top1_batch([np.ones((1, 128), np.float32)], 'max')
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "model_first_embed_s": t2 - t1, "index_load_first_search_s": t3 - t2,
                  "jit_imported": "numba" in sys.modules}))
"""


def measure_cold_start(faces: RealFaces, entries: int, out: Path) -> dict[str, Any]:
    """A fresh interpreter doing what a match container's first invocation does (no AWS calls)."""
    index, _, _ = gallery(faces, entries)
    if entries >= SCAN_MIN_ENTRIES:
        index.with_scan()
    artifact = out / f"cold-start-index-{entries}.npz"
    artifact.write_bytes(index.to_npz_bytes())
    try:
        done = subprocess.run(
            [sys.executable, "-c", COLD_START_PROBE, str(artifact)],
            capture_output=True, text=True, check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    finally:
        artifact.unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["entries"] = entries
    result["total_s"] = result["import_s"] + result["model_first_embed_s"] + result["index_load_first_search_s"]
    return result


# -- cost per camera-hour -------------------------------------------------------------------------


@dataclass
class CameraHour:
    messages_per_s: float
    invocations: float
    lambda_gb_s: float
    usd: dict[str, float] = field(default_factory=dict)
    usd_total: float = 0.0
    rekognition_usd: float = 0.0


def camera_hour(rate: float, ms_per_message: float, ms_per_invocation: float) -> CameraHour:
    """One camera sending `rate` track messages/s for an hour, at the template's batch settings."""
    messages = rate * 3600
    # With no batching window an invocation takes what is waiting: about one message per
    # invocation at low rates, up to the batch size when messages arrive faster than they finish.
    per_invocation = max(1.0, min(float(MATCH_BATCH_SIZE), rate * max(MATCH_BATCHING_WINDOW_S, ms_per_message / 1000)))
    invocations = messages / per_invocation
    seconds = invocations * (ms_per_invocation + per_invocation * ms_per_message) / 1000
    gb_s = seconds * MATCH_MEMORY_MB / 1024
    usd = {
        "lambda_compute": gb_s * LAMBDA_GB_S_USD,
        "lambda_requests": invocations * LAMBDA_REQUEST_USD,
        # Edge sends in batches of up to 10; the poller receives and deletes once per invocation.
        "sqs": (messages / 10 + 2 * invocations) * SQS_REQUEST_USD,
        # One counter update per invocation; the deployment read is cached per container for 2 s.
        "dynamodb": invocations * DYNAMODB_WRITE_USD + 1800 * DYNAMODB_READ_USD,
        "s3": S3_GET_USD,  # the index, once per container (a few per hour)
        "sns": 0.0,  # alerts only: a handful per hour, below a thousandth of a cent
    }
    total = sum(usd.values())
    return CameraHour(
        messages_per_s=rate, invocations=invocations, lambda_gb_s=gb_s, usd=usd, usd_total=total,
        # Rekognition searched once per track with its best crop (it has no track fusion).
        rekognition_usd=messages * REKOGNITION_SEARCH_USD,
    )


# -- the command ------------------------------------------------------------------------------------


def plot(points: list[SearchPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [p.entries for p in points]
    ax.loglog(x, [p.exact_ms_per_crop_batch for p in points], "o-", label="exact, per crop in a 10x3 batch")
    ax.loglog(x, [p.exact_ms_per_crop_alone for p in points], "s-", label="exact, one crop alone (p99)")
    scan = [p for p in points if p.scan_ms_per_crop_batch is not None]
    if scan:
        x_scan = [p.entries for p in scan]
        ax.loglog(x_scan, [p.scan_ms_per_crop_batch for p in scan], "^-", label="int8 scan + exact re-score, batch")
        ax.loglog(x_scan, [p.scan_ms_per_crop_track for p in scan], "v-", label="int8 scan, one 3-crop track (p99)")
        ax.loglog(x_scan, [p.scan_ms_per_crop_alone for p in scan], "d-", label="int8 scan, one crop alone (p99)")
    ax.axhline(5.0, color="grey", ls=":", label="goal: 5 ms per crop")
    ax.set_xlabel("watchlist entries")
    ax.set_ylabel("ms per crop (one core)")
    ax.set_title("Watchlist search scaling (lfr bench)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(
    quick: bool, out: Path, as_json: bool, scan_from: int | None = None,
    throughput_rates: Sequence[str] | None = None, throughput_seconds: float | None = None,
) -> int:
    """Quick mode (tests): 200 photos, 1k and 10k entries, the int8 scan and the inverted lists
    measured at 10k; the local stack's throughput at `throughput_rates` for `throughput_seconds`
    each (lfr_cli/bench_throughput.py)."""
    if scan_from is None:
        scan_from = QUICK_SIZES[-1] if quick else 10_000
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core": the match function's share
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    faces = real_faces(200 if quick else None, out)
    model = measure_model(faces)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    points = [
        measure_search(faces, n, with_scan=n >= scan_from, queries_cap=200 if quick else 2000)
        for n in progress(list(sizes), "search at each size")
    ]
    cold = measure_cold_start(faces, sizes[-1], out)
    storage = measure_storage(faces)
    # Per message: its crops through the model one at a time plus their share of the search.
    per_message_ms = CROPS_PER_TRACK * (model.ms_per_crop_batch_1 + points[0].exact_ms_per_crop_batch)
    # Per invocation fixed work (counter update, deployment read, metric flush): measured on the
    # local stack by the match handler; 14 ms is the figure the performance review measured there.
    per_invocation_ms = 14.0
    hours = [camera_hour(r, per_message_ms, per_invocation_ms) for r in RATES_PER_S]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "quick": quick},
        "model": asdict(model),
        "search": [asdict(p) for p in points],
        "cold_start": cold,
        "storage": [asdict(p) for p in storage],
        "cost_per_camera_hour": {
            "prices_as_of": PRICES_AS_OF,
            "ms_per_message": per_message_ms,
            "ms_per_invocation_fixed": per_invocation_ms,
            "memory_mb": MATCH_MEMORY_MB,
            "rates": [asdict(h) for h in hours],
        },
        "seconds": time.monotonic() - started,
    }
    from lfr_cli import bench_throughput

    report["throughput"] = bench_throughput.measure_throughput(
        out,
        throughput_rates or (bench_throughput.QUICK_RATES if quick else bench_throughput.FULL_RATES),
        throughput_seconds or (bench_throughput.QUICK_SECONDS if quick else bench_throughput.FULL_SECONDS),
    )
    report["seconds"] = time.monotonic() - started
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    plot(points, out / "search-scaling.png")
    if as_json:
        print(json.dumps(report))
    else:
        print(summary(report))
    return 0


def summary(report: dict[str, Any]) -> str:
    m = report["model"]
    lines = [
        f"model: {m['ms_per_crop_batch_1']:.1f} ms per crop alone, {m['ms_per_crop_batch_10']:.1f} in a batch of 10"
    ]
    for p in report["search"]:
        line = (f"search {p['entries']:>9,}: exact {p['exact_ms_per_crop_batch']:.2f} ms/crop batched, "
                f"{p['exact_ms_per_crop_alone']:.2f} alone (p99), load {p['exact_load_s']:.2f} s")
        if p["scan_recall_of_exact_best"] is not None:
            line += (
                f"; int8 scan {p['scan_ms_per_crop_batch']:.2f} ms/crop batched, {p['scan_ms_per_crop_track']:.2f}"
                f" in a 3-crop track, {p['scan_ms_per_crop_alone']:.2f} alone (p99), recall"
                f" {p['scan_recall_of_exact_best']:.4f}, load {p['scan_load_s']:.2f} s;"
                f" reading its codes once {p['scan_read_floor_ms']:.2f} ms"
            )
        if p["ivf"] is not None:
            ivf = p["ivf"]
            line += f"; inverted lists ({ivf['lists']}), lone crop probing " + ", ".join(
                f"{share:.0%}: recall {r:.4f} in {ms:.2f} ms"
                for share, r, ms in zip(
                    ivf["probe_shares"], ivf["recall_of_exact_best"], ivf["ms_per_crop_alone"], strict=True
                )
            )
        lines.append(line)
    c = report["cold_start"]
    lines.append(f"cold start at {c['entries']:,}: {c['total_s']:.2f} s (import {c['import_s']:.2f}, model "
                 f"{c['model_first_embed_s']:.2f}, index {c['index_load_first_search_s']:.2f})")
    for st in report["storage"]:
        lines.append(f"gallery as {st['dtype']}: {st['bytes_per_entry']} B/entry, score error <= "
                     f"{st['max_score_error']:.1e}, decisions changed {sum(st['decisions_changed'].values())} "
                     f"of {st['pairs'] * len(st['decisions_changed']):,}")
    for h in report["cost_per_camera_hour"]["rates"]:
        lines.append(f"{h['messages_per_s']:>4} msg/s: ${h['usd_total']:.4f} per camera-hour "
                     f"(Rekognition: ${h['rekognition_usd']:.2f})")
    if "throughput" in report:
        from lfr_cli.bench_throughput import summary_lines

        lines += summary_lines(report["throughput"])
    return "\n".join(lines)
