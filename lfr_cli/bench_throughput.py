"""`lfr bench` throughput: what the embedded stack sustains on this machine, against what its cores allow.

1. **The ceiling.** Raw SFace inference with one process per core the local stack may use
   (`aws_emulation.runtime.machine_cap`; the match workers are one more, see that module), each
   one onnxruntime thread as the match function runs it, on real aligned crops in messages of 3:
   the crops/s "both cores allow".
2. **The stack.** An `EmbeddedStack` (the CDK template on moto, the real match handler in its
   workers, the SQS pollers), a 20-person watchlist of real lfw-dev enrolment photos, one started
   deployment; then track messages of 3 real crops each (20% of them other photos of listed
   people, the rest strangers) are offered at each stated rate for N seconds.

How "processed" is observed, for every message and without reading one: the crop queue's depth
through the SQS API (`functions.dal.queue_stats`, the van console's own signal: visible + in
flight). A message leaves the queue only when the poller deletes it after the match handler
returned it as processed (a failed one stays, and would reach the DLQ, which is checked), so
messages acknowledged by SendMessageBatch minus the depth is the count of finished messages. Sampled
every `SAMPLE_S`, that cumulative curve against the curve of sends gives each message's end-to-end
time (sent -> handler finished) when the queue is first-in first-out (the k-th to finish is taken
as the k-th sent; the mean over the run is exact whatever the order, by Little's law), and the age
of the oldest unfinished message at every sample (the queue age; CloudWatch's
ApproximateAgeOfOldestMessage on AWS). This works unchanged against AWS, sees strangers as well
as matches, and carries nothing of a face. The alternatives see less: the camera's `queue_lag_ms`
is the wait before an invocation starts, one value per camera per invocation; the EMF metrics
give the match function's own `QueueToPublishMs` only for alerts, in CloudWatch's periods.
Queue-to-publish for alerts is the function's own figure (SentTimestamp -> SNS publish), read
from the alerts a subscribed queue receives, as an officer's phone would.

Timings are reported, never asserted: the machine is shared, so each run also records the load
average around it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

CROPS_PER_TRACK = 3
SAMPLE_S = 0.2  # queue depth sampling period: the resolution of the per-message times
LISTED_SHARE = 0.2  # of messages: another photo of a listed person (the rest are strangers)
THROUGHPUT_SEED = 13
FULL_RATES = ("2", "5", "10", "0.8x", "1.2x")  # "x": a multiple of the ceiling's messages/s
QUICK_RATES = ("2", "1.2x")
FULL_SECONDS = 60.0
QUICK_SECONDS = 10.0
CEILING_SECONDS = 10.0
# Offering stops early once this many messages wait: the embedded stack's SQS (moto) slows as its
# queue grows (a receive scans every message), so an unbounded backlog measures moto, not the stack,
# and would take hours to drain. Measured: offered 24 messages/s for 10 minutes, it processed 4.2,
# then 3.7, then 1.2-2.5 messages/s as the queue grew, with match invocations timing out.
MAX_BACKLOG = 300
# A queue is bounded when the oldest unfinished message in the run's last third is no older than
# twice the first third's plus this floor: an overloaded queue's age grows linearly with time.
AGE_FLOOR_S = 1.0


def parse_rates(text: str | Sequence[str]) -> list[str]:
    """'2,5,0.8x@600' -> ['2', '5', '0.8x@600']; each a positive number, optionally followed by x (a
    multiple of the ceiling) and @seconds (this rate's own duration, e.g. a 10-minute soak)."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise ValueError("--rates: give at least one rate")
    for item in items:
        try:
            rate, _, secs = item.partition("@")
            value = float(rate.removesuffix("x"))
            if secs and not float(secs) > 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"--rates: {item!r} is not a number (messages/s) or a multiple of the ceiling (0.8x)"
            ) from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--rates: {item!r} must be positive")
    return items


def rate_value(item: str, ceiling_messages_per_s: float) -> float:
    rate = item.partition("@")[0]
    return float(rate[:-1]) * ceiling_messages_per_s if rate.endswith("x") else float(rate)


def rate_seconds(item: str, default: float) -> float:
    secs = item.partition("@")[2]
    return float(secs) if secs else default


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


# -- the ceiling ------------------------------------------------------------------------------------


def _ceiling_worker(crops: np.ndarray, seconds: float, barrier: Any, results: Any) -> None:
    """One core's worth: one process, one onnxruntime thread, embedding one message's crops a call."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from lfr_core.face.embed import FaceEmbedder

    embedder = FaceEmbedder(intra_op_threads=1)
    batches = [crops[i : i + CROPS_PER_TRACK] for i in range(0, len(crops) - CROPS_PER_TRACK + 1, CROPS_PER_TRACK)]
    for b in batches[:3]:
        embedder.embed(b)  # warm: the first calls allocate
    barrier.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        embedder.embed(batches[n % len(batches)])
        n += 1
    results.put(n * CROPS_PER_TRACK / (time.perf_counter() - t0))


@dataclass
class Ceiling:
    processes: int
    seconds: float
    crops_per_s: float  # all processes together
    crops_per_s_each: list[float]
    messages_per_s: float  # crops_per_s / CROPS_PER_TRACK
    load_avg_before: float


def measure_ceiling(crops: np.ndarray, processes: int, seconds: float = CEILING_SECONDS) -> Ceiling:
    """Raw inference throughput: `processes` embedders running at once (spawned: no inherited threads)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    load = os.getloadavg()[0]
    procs = [ctx.Process(target=_ceiling_worker, args=(crops, seconds, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        each = [float(results.get(timeout=seconds + 300)) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    total = sum(each)
    return Ceiling(processes, seconds, total, each, total / CROPS_PER_TRACK, load)


# -- real faces -------------------------------------------------------------------------------------


@dataclass
class FacePlan:
    watchlist: list[Any]  # LfwImage: enrolment photo of each listed person
    listed: dict[str, list[Any]]  # identity -> Crops of OTHER photos of a listed person
    strangers: dict[str, list[Any]]  # identity -> Crops of a person not on the list


def plan_faces(seed: int = THROUGHPUT_SEED, shown: int = 8, unseen: int = 12, strangers: int = 16) -> FacePlan:
    """Seeded choice of lfw-dev people; each shown person needs 3 gated crops of photos other than
    the enrolment one, each stranger 3 gated crops. People whose photos yield fewer are skipped."""
    import cv2

    from edge_uploader.pipeline import FaceCropper
    from lfr_eval.datasets import LfwImage, read_lfw_manifest

    by_id: dict[str, list[LfwImage]] = {}
    for img in read_lfw_manifest():
        by_id.setdefault(img.identity, []).append(img)
    rng = random.Random(seed)
    cropper = FaceCropper()

    def crops_of(images: list[LfwImage]) -> list[Any]:
        out = []
        for img in images:
            frame = cv2.imread(str(img.path), cv2.IMREAD_COLOR)
            found = cropper.crops(frame, faces="central") if frame is not None else []
            if found and cropper.passes(found[0]):
                out.append(found[0])
            if len(out) == CROPS_PER_TRACK:
                break
        return out

    candidates = sorted(i for i, imgs in by_id.items() if len(imgs) >= 1 + CROPS_PER_TRACK)
    rng.shuffle(candidates)
    listed: dict[str, list[Any]] = {}
    for ident in candidates:
        if len(listed) == shown:
            break
        got = crops_of(by_id[ident][1:])
        if len(got) == CROPS_PER_TRACK:
            listed[ident] = got
    others = sorted(set(by_id) - set(listed))
    rng.shuffle(others)
    unseen_ids = others[:unseen]
    strange: dict[str, list[Any]] = {}
    for ident in others[unseen:]:
        if len(strange) == strangers:
            break
        if len(by_id[ident]) >= CROPS_PER_TRACK:
            got = crops_of(by_id[ident])
            if len(got) == CROPS_PER_TRACK:
                strange[ident] = got
    if len(listed) < shown or len(strange) < strangers:
        raise RuntimeError("lfw-dev gave too few people with 3 gated crops")
    watchlist = [by_id[i][0] for i in [*listed, *unseen_ids]]
    return FacePlan(watchlist, listed, strange)


# -- offering messages and watching the queue --------------------------------------------------------


@dataclass
class QueueSample:
    t: float  # monotonic seconds since the run started
    acked: int  # messages SendMessageBatch had acknowledged
    depth: int  # visible + in flight


@dataclass
class RatePoint:
    rate: str  # as stated: messages/s, or a multiple of the ceiling ("0.8x")
    offered_per_s: float
    offered_fraction_of_ceiling: float
    seconds: float
    messages_sent: int
    sent_per_s: float  # what the sender achieved
    processed_per_s: float  # sustained: finished in the offered period's last two thirds, per second
    crops_per_s: float
    fraction_of_ceiling: float
    end_to_end_ms: dict[str, float | None]  # sent -> handler finished, every message (p50, p95, max, mean)
    queue_to_publish_ms: dict[str, float | None]  # alerts: the function's own figure (p50, p95, n)
    alerts: int
    max_depth: int
    max_age_s: float
    first_third_max_age_s: float
    last_third_max_age_s: float
    bounded: bool
    drain_s: float  # after the last send, until the queue was empty
    drained: bool
    backlog_capped: bool  # offering stopped early: more than MAX_BACKLOG messages waited
    load_avg: list[float] = field(default_factory=list)  # 1-min load average before and after
    # Where the cores went during the run (offer + drain): CPU seconds of the match workers and of
    # this process (moto, the pollers, the sender), and the match function's own embedding time
    # per crop from its EMF metrics (CloudWatch sums of EmbedBatchMs / CropsEmbedded).
    cpu: dict[str, float | None] = field(default_factory=dict)


class _Offer:
    """Sends `n` messages at `rate` from message templates, and samples the queue until it drains."""

    def __init__(self, sqs: Any, queue_url: str, depth: Callable[[], dict[str, Any]]) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._depth = depth
        self._lock = threading.Lock()  # a sample sees the counter and the queue at one instant
        self.acked = 0
        self.sent_at: list[float] = []
        self.samples: list[QueueSample] = []
        self.capped = False

    def sample(self, t0: float) -> QueueSample:
        with self._lock:
            d = self._depth()
            s = QueueSample(time.monotonic() - t0, self.acked, int(d["waiting"]) + int(d["in_flight"]))
        self.samples.append(s)
        return s

    def send(self, bodies: list[str], t0: float) -> None:
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        with self._lock:
            resp = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
            if resp.get("Failed"):
                raise RuntimeError(f"SendMessageBatch refused {len(resp['Failed'])} message(s)")
            now = time.monotonic() - t0
            self.acked += len(bodies)
            self.sent_at.extend([now] * len(bodies))

    def run(self, make_body: Callable[[int], str], n: int, rate: float, drain_timeout_s: float) -> tuple[float, bool]:
        """Offer `n` messages at `rate`/s (fewer if the backlog passes `MAX_BACKLOG`: `capped`);
        returns (drain seconds, drained)."""
        self.capped = False
        t0 = time.monotonic()
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                self.sample(t0)
                stop.wait(SAMPLE_S)

        thread = threading.Thread(target=sampler, name="throughput-sampler", daemon=True)
        thread.start()
        try:
            i = 0
            while i < n:
                if self.samples and self.samples[-1].depth > MAX_BACKLOG:
                    self.capped = True
                    break
                due = min(n, int((time.monotonic() - t0) * rate) + 1)
                if due <= i:
                    time.sleep(max(0.0, (i / rate) - (time.monotonic() - t0)))
                    continue
                k = min(due - i, 10)  # one SendMessageBatch holds up to 10, as the edge sends them
                self.send([make_body(i + j) for j in range(k)], t0)
                i += k
            end_send = time.monotonic()
            deadline = end_send + drain_timeout_s
            drained = False
            while time.monotonic() < deadline:
                if self.sample(t0).depth == 0:
                    drained = True
                    break
                time.sleep(SAMPLE_S)
            return time.monotonic() - end_send, drained
        finally:
            stop.set()
            thread.join(timeout=5)


def completion_times(sent_at: Sequence[float], samples: Sequence[QueueSample]) -> list[float | None]:
    """When the k-th message finished (first in, first out), from the sampled finished-count curve,
    linearly interpolated between samples; None for a message not finished by the last sample."""
    pts = sorted(samples, key=lambda s: s.t)
    done_t = [s.t for s in pts]
    done_n = [max(0, s.acked - s.depth) for s in pts]
    # The finished count cannot fall: a message redelivered after a failure may briefly reappear.
    done_n = list(np.maximum.accumulate(done_n)) if done_n else []
    out: list[float | None] = []
    j = 0
    for k in range(1, len(sent_at) + 1):
        while j < len(done_n) and done_n[j] < k:
            j += 1
        if j == len(done_n):
            out.append(None)
            continue
        if j == 0 or done_n[j - 1] == done_n[j]:
            out.append(done_t[j])
            continue
        n0, n1, t0, t1 = done_n[j - 1], done_n[j], done_t[j - 1], done_t[j]
        out.append(t0 + (k - n0) / (n1 - n0) * (t1 - t0))
    return out


def queue_ages(sent_at: Sequence[float], samples: Sequence[QueueSample]) -> list[tuple[float, float]]:
    """(t, age of the oldest unfinished message) at each sample, first in, first out."""
    ages = []
    for s in samples:
        finished = max(0, min(s.acked - s.depth, len(sent_at)))
        ages.append((s.t, s.t - sent_at[finished] if finished < s.acked else 0.0))
    return ages


def analyse(rate: str, offered: float, ceiling: Ceiling, seconds: float, offer: _Offer, drain: tuple[float, bool],
            q2p: list[float], load: list[float]) -> RatePoint:
    sent = offer.sent_at
    done = completion_times(sent, offer.samples)
    latencies = [1000 * (d - s) for s, d in zip(sent, done, strict=True) if d is not None]
    offered_end = sent[-1] if sent else seconds
    ages = queue_ages(sent, offer.samples)
    in_offer = [(t, a) for t, a in ages if t <= offered_end]
    first = [a for t, a in in_offer if t < offered_end / 3] or [0.0]
    last = [a for t, a in in_offer if t >= 2 * offered_end / 3] or [0.0]
    # Sustained: messages finished during the offered period's last two thirds (past the ramp-up).
    fin = [(s.t, max(0, s.acked - s.depth)) for s in offer.samples]
    lo = min(fin, key=lambda p: abs(p[0] - offered_end / 3))
    hi = min(fin, key=lambda p: abs(p[0] - offered_end))
    processed = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")
    crops = processed * CROPS_PER_TRACK
    span = sent[-1] - sent[0] if len(sent) > 1 else float("nan")
    first_max, last_max = max(first), max(last)
    return RatePoint(
        rate=rate,
        offered_per_s=offered,
        offered_fraction_of_ceiling=offered / ceiling.messages_per_s,
        seconds=seconds,
        messages_sent=len(sent),
        sent_per_s=(len(sent) - 1) / span if span > 0 else float("nan"),
        processed_per_s=processed,
        crops_per_s=crops,
        fraction_of_ceiling=crops / ceiling.crops_per_s,
        end_to_end_ms={
            "p50": _pct(latencies, 50), "p95": _pct(latencies, 95),
            "max": max(latencies) if latencies else None,
            "mean": float(np.mean(latencies)) if latencies else None,
            "finished": len(latencies),
        },
        queue_to_publish_ms={"p50": _pct(q2p, 50), "p95": _pct(q2p, 95), "n": len(q2p)},
        alerts=len(q2p),
        max_depth=max((s.depth for s in offer.samples), default=0),
        max_age_s=max((a for _, a in ages), default=0.0),
        first_third_max_age_s=first_max,
        last_third_max_age_s=last_max,
        bounded=last_max <= 2 * first_max + AGE_FLOOR_S,
        drain_s=drain[0],
        drained=drain[1],
        backlog_capped=offer.capped,
        load_avg=load,
    )


# -- where the time goes ----------------------------------------------------------------------------------


def _proc_cpu_s(pids: Sequence[int]) -> float | None:
    """utime + stime of these processes (Linux /proc); None where it cannot be read."""
    total = 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None
    return total


def _metric_sum(cw: Any, name: str, start: datetime, end: datetime) -> float:
    points = cw.get_metric_statistics(
        Namespace="lfr", MetricName=name, Dimensions=[{"Name": "service", "Value": "lfr"}],
        StartTime=start, EndTime=end, Period=3600, Statistics=["Sum"],
    ).get("Datapoints", [])
    return float(sum(p["Sum"] for p in points))


class CpuWatch:
    """CPU seconds of the match workers and this process, and the function's embedding time, over a run."""

    def __init__(self, workers: Callable[[], list[int]], cw: Any) -> None:
        self._workers = workers
        self._cw = cw

    def __enter__(self) -> CpuWatch:
        from lfr_core.contracts import utcnow

        self.pids = self._workers()
        self.w0 = _proc_cpu_s(self.pids)
        self.p0 = time.process_time()
        self.t0 = time.monotonic()
        self.start = utcnow().replace(microsecond=0)
        return self

    def __exit__(self, *exc: object) -> None:
        from datetime import timedelta

        from lfr_core.contracts import utcnow

        wall = time.monotonic() - self.t0
        w1 = _proc_cpu_s(self.pids) if self._workers() == self.pids else None  # a restarted worker: unknown
        end = utcnow().replace(microsecond=0) + timedelta(seconds=1)
        embed_ms = _metric_sum(self._cw, "EmbedBatchMs", self.start, end)
        crops = _metric_sum(self._cw, "CropsEmbedded", self.start, end)
        self.result: dict[str, float | None] = {
            "wall_s": wall,
            "match_workers_cpu_s": None if w1 is None or self.w0 is None else w1 - self.w0,
            "stack_process_cpu_s": time.process_time() - self.p0,
            "embed_ms_per_crop": embed_ms / crops if crops else None,
            "embed_busy_s": embed_ms / 1000,
        }


# -- the whole measurement ------------------------------------------------------------------------------


def _bodies(plan: FacePlan, deployment_id: str, seed: int, listed_share: float) -> Callable[[int], str]:
    """Message i's JSON: fresh ids and capture times on templates encoded once (so the bench spends
    its CPU on sending, not on JPEG encoding). Listed people's messages each come from another
    camera, so each republishes its encounter's alert and gives a queue-to-publish figure."""
    from lfr_core.contracts import CropMessage, new_id, utcnow

    def template(crops: list[Any]) -> CropMessage:
        now = utcnow()
        msg: CropMessage = crops[0].to_message(deployment_id=deployment_id, camera_id="bench-cam",
                                               track_id=new_id(), captured_at=now,
                                               more=[(c, now) for c in crops[1:]])
        return msg

    listed = [template(c) for c in plan.listed.values()]
    strangers = [template(c) for c in plan.strangers.values()]
    rng = random.Random(seed)
    run = new_id()[:8]

    def body(i: int) -> str:
        is_listed = rng.random() < listed_share
        base = rng.choice(listed if is_listed else strangers)
        now: datetime = utcnow()
        msg = base.model_copy(update={
            "message_id": new_id(), "track_id": new_id(), "captured_at": now,
            "camera_id": f"bench-{run}-{i}" if is_listed else f"bench-street-{i % 4}",
            "more": tuple(c.model_copy(update={"captured_at": now}) for c in base.more),
        })
        return msg.model_dump_json()

    return body


def stranger_jpegs(plan: FacePlan) -> list[bytes]:
    from lfr_core.face.image import encode_jpeg

    return [encode_jpeg(c.aligned_bgr, quality=95) for crops in plan.strangers.values() for c in crops]


def measure_throughput(
    out: Path, rates: Sequence[str], seconds: float, leak_scan: bool = True, listed_share: float = LISTED_SHARE,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """The ceiling, then the embedded stack at each rate; returns report["throughput"]."""
    from aws_emulation.runtime import machine_cap
    from functions.dal.queue_stats import SqsQueueStats
    from infra import constants as C
    from lfr_cli.admin import Admin
    from lfr_cli.aws import AwsContext
    from lfr_cli.demo import PhoneStandIn
    from lfr_cli.local.stack import EmbeddedStack
    from lfr_core.contracts import DeploymentState

    started = time.monotonic()
    say("throughput: cropping real faces (lfw-dev) ...")
    plan = plan_faces()
    all_crops = np.stack([c.aligned_bgr for crops in [*plan.listed.values(), *plan.strangers.values()] for c in crops])
    cores = machine_cap()
    say(f"throughput: raw inference ceiling, {cores} process(es) x 1 thread, {CEILING_SECONDS:.0f} s ...")
    ceiling = measure_ceiling(all_crops, cores)
    say(f"throughput: ceiling {ceiling.crops_per_s:.1f} crops/s = {ceiling.messages_per_s:.1f} messages/s")
    offered = [(r, rate_value(r, ceiling.messages_per_s), rate_seconds(r, seconds)) for r in rates]

    def drain_timeout(secs: float) -> float:
        return max(120.0, 3 * secs)  # a saturated run's backlog drains at the stack's pace

    # The session outlasts every run and its drain; it is stopped (and purged) at the end.
    session_s = int(600 + sum(secs + drain_timeout(secs) for _, _, secs in offered))

    say("throughput: starting the embedded stack and deploying the template ...")
    points: list[RatePoint] = []
    checks: dict[str, Any] = {}
    with EmbeddedStack(run_dir=(out / "local").resolve()) as stack:  # cdk runs the app from its own cwd
        ctx = AwsContext(region=stack.region, endpoint_url=stack.endpoint)
        admin = Admin(ctx, actor="cli:bench")
        match_fn = next(
            fn for fn in stack.runtime.functions.values() if fn.handler == "functions.handlers.match.handler"
        )
        pollers = [
            p for p in (stack.pollers.pollers if stack.pollers else []) if p.mapping.function_arn == match_fn.arn
        ]
        phone = PhoneStandIn(ctx, on_alert=lambda a: None)
        try:
            with tempfile.TemporaryDirectory(prefix="lfr-bench-watchlist-") as tmp:
                for img in plan.watchlist:  # links: the dataset is never copied
                    (Path(tmp) / img.file).symlink_to(img.path)
                rec = admin.create_authorise_start("bench-throughput", Path(tmp), duration_s=session_s)
            dep = rec.deployment_id
            rec = admin.wait_for(dep, {DeploymentState.ACTIVE}, timeout_s=600)
            say(f"throughput: deployment {dep} ACTIVE, {rec.watchlist_size} enrolled")
            sqs = ctx.client("sqs")
            url = ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]
            stats = SqsQueueStats(url, sqs)
            body = _bodies(plan, dep, THROUGHPUT_SEED, listed_share)
            cw = ctx.client("cloudwatch")

            def worker_pids() -> list[int]:
                return sorted(w.pid for w in stack.runtime.workers(match_fn.name) if w.pid is not None)

            total_sent = 0
            # Warm every match worker (the model loads on a container's first invocation).
            warm = _Offer(sqs, url, stats.depth)
            warm.run(body, 4 * max(1, match_fn.max_workers), 50.0, drain_timeout_s=300)
            total_sent += warm.acked
            for rate, value, secs in offered:
                n = max(1, round(value * secs))
                say(f"throughput: offering {value:.2f} messages/s ({rate}) for {secs:.0f} s ({n} messages) ...")
                load_before = os.getloadavg()[0]
                alerts_before = len(phone.alerts)
                offer = _Offer(sqs, url, stats.depth)
                with CpuWatch(worker_pids, cw) as cpu:
                    drain = offer.run(body, n, value, drain_timeout_s=drain_timeout(secs))
                total_sent += offer.acked
                time.sleep(1.5)  # the last alerts' SNS -> phone-queue delivery
                q2p = [a.queue_to_publish_ms for a in phone.alerts[alerts_before:] if a.queue_to_publish_ms is not None]
                point = analyse(rate, value, ceiling, secs, offer, drain, q2p, [load_before, os.getloadavg()[0]])
                point.cpu = cpu.result
                points.append(point)
                say("throughput: " + rate_line(point, ceiling))
            # The machine is shared: the ceiling again, with the stack idle, shows how far it moved.
            say("throughput: the ceiling again, after the runs ...")
            ceiling_after = measure_ceiling(all_crops, cores)
            dlq = SqsQueueStats(ctx.outputs[C.OUTPUT_CROP_DLQ_URL], sqs).depth()
            seen = admin.get(dep).faces_seen
            admin.stop(dep, reason="bench finished")
            rec = admin.wait_for(dep, {DeploymentState.CLOSED}, timeout_s=300)
            checks = {
                "messages_sent": total_sent,
                "crops_sent": total_sent * CROPS_PER_TRACK,
                # The deployment's counter, one per track message the match function compared with
                # the watchlist (whatever its number of crops).
                "faces_seen": seen,
                "dlq_messages": dlq["waiting"] + dlq["in_flight"],
                "crop_queue_messages": sum(stats.depth().values()),
                "failed_invocations": sum(p.failed_invocations for p in pollers),
                "objects_remaining": admin.objects_remaining(dep),
                "final_state": str(rec.state),
            }
        finally:
            phone.stop()
        if leak_scan:
            from lfr_cli.leakscan import needles_for, scan

            t = time.monotonic()
            found = scan(ctx.client, needles_for(stranger_jpegs(plan)), [stack.log_dir],
                         allow=["s3://cdk-hnb659fds-assets-"])
            checks["leak_findings"] = [f"{f.location} {f.kind}" for f in found]
            checks["leak_scan_s"] = time.monotonic() - t
    saturating = max(points, key=lambda p: p.offered_per_s)
    bounded = [p for p in points if p.bounded]
    return {
        "signal": "crop queue depth (SQS ApproximateNumberOfMessages + NotVisible) every "
                  f"{SAMPLE_S} s against SendMessageBatch acknowledgements; per-message times first in, first out",
        "sample_s": SAMPLE_S,
        "listed_share": listed_share,
        "watchlist_size": len(plan.watchlist),
        "ceiling": asdict(ceiling),
        "ceiling_after": asdict(ceiling_after),
        "stack": {
            "match_workers": match_fn.max_workers,
            "pollers": sum(p.concurrency for p in pollers),
            "memory_mb": match_fn.memory_mb,
            "batch_size": pollers[0].mapping.batch_size if pollers else None,
            "batching_window_s": pollers[0].mapping.batching_window_s if pollers else None,
        },
        "rates": [asdict(p) for p in points],
        "saturation": {
            "offered_per_s": saturating.offered_per_s,
            "processed_per_s": saturating.processed_per_s,
            "sustained_over_ceiling": saturating.fraction_of_ceiling,
            # The shared machine moves the ceiling between measurements: against the later one too.
            "sustained_over_ceiling_after": saturating.crops_per_s / ceiling_after.crops_per_s,
        },
        "max_bounded_fraction_of_ceiling": max((p.fraction_of_ceiling for p in bounded), default=None),
        "checks": checks,
        "seconds": time.monotonic() - started,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def rate_line(p: RatePoint, ceiling: Ceiling) -> str:
    e, q = p.end_to_end_ms, p.queue_to_publish_ms
    return (
        f"{p.offered_per_s:5.2f} msg/s offered ({p.rate}, {p.offered_fraction_of_ceiling:.2f}x ceiling) for "
        f"{p.seconds:.0f} s{f' (stopped at {p.messages_sent} sent: backlog over {MAX_BACKLOG})' * p.backlog_capped}"
        f": {p.processed_per_s:.2f} processed/s = {p.crops_per_s:.1f} crops/s = "
        f"{100 * p.fraction_of_ceiling:.0f}% of {ceiling.crops_per_s:.1f}; end-to-end p50 {_ms(e['p50'])} "
        f"p95 {_ms(e['p95'])} ms; queue-to-publish p50 {_ms(q['p50'])} p95 {_ms(q['p95'])} ms ({q['n']} alerts); "
        f"queue max {p.max_depth} msgs, age max {p.max_age_s:.1f} s (first third {p.first_third_max_age_s:.1f}, "
        f"last {p.last_third_max_age_s:.1f}: {'bounded' if p.bounded else 'GROWING'}); load {p.load_avg[0]:.1f}"
        + _cpu_text(p, ceiling)
    )


def _cpu_text(p: RatePoint, ceiling: Ceiling) -> str:
    c = p.cpu
    if not c or not c.get("wall_s"):
        return ""
    wall = float(c["wall_s"] or 0)
    workers = c.get("match_workers_cpu_s")
    per_crop = c.get("embed_ms_per_crop")
    return (
        f"; cores used: match workers {'-' if workers is None else f'{workers / wall:.2f}'}, stack process "
        f"{float(c['stack_process_cpu_s'] or 0) / wall:.2f}; embedding {float(c['embed_busy_s'] or 0) / wall:.2f} "
        f"worker-s/s at {'-' if per_crop is None else f'{per_crop:.0f}'} ms/crop "
        f"(ceiling {1000 * ceiling.processes / ceiling.crops_per_s:.0f})"
    )


def summary_lines(t: dict[str, Any]) -> list[str]:
    c = t["ceiling"]
    ceiling = Ceiling(**c)
    lines = [f"throughput ceiling: {c['crops_per_s']:.1f} crops/s raw SFace ({c['processes']} process(es) x 1 "
             f"thread; {c['messages_per_s']:.1f} messages of 3/s; after the runs "
             f"{t['ceiling_after']['crops_per_s']:.1f}); stack: {t['stack']['match_workers']} match "
             f"worker(s), {t['stack']['pollers']} poller(s), batch {t['stack']['batch_size']}"]
    for p in t["rates"]:
        lines.append("throughput " + rate_line(RatePoint(**p), ceiling))
    s = t["saturation"]
    lines.append(f"throughput saturated: {s['processed_per_s']:.2f} processed/s offered {s['offered_per_s']:.2f}; "
                 f"sustained/ceiling {s['sustained_over_ceiling']:.2f} (against the ceiling after the runs: "
                 f"{s['sustained_over_ceiling_after']:.2f})")
    ch = t["checks"]
    lines.append(f"throughput checks: {ch.get('messages_sent')} messages sent, faces_seen {ch.get('faces_seen')}, "
                 f"DLQ {ch.get('dlq_messages')}, leak findings "
                 f"{len(ch.get('leak_findings', [])) if 'leak_findings' in ch else 'not scanned'}")
    return lines


def run_throughput(
    out: Path, as_json: bool, rates: Sequence[str], seconds: float, listed_share: float = LISTED_SHARE
) -> int:
    """`lfr bench --throughput`: only this section; writes `throughput.json` in `out`."""
    import json

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "throughput": measure_throughput(out, rates, seconds, listed_share=listed_share),
    }
    (out / "throughput.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report) if as_json else "\n".join(summary_lines(report["throughput"])))
    return 0
