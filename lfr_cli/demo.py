"""`lfr demo`: one local end-to-end deployment on the embedded stack, scored against ground truth.

A 20-person watchlist from lfw-dev (one image each); other images of 10 of them and
one image each of 20 people not on the list walk past the camera in a generated walk-by
video (`lfr_eval.scenario`), which the real edge uploader reads at its frame rate (dropping
frames it cannot keep up with), tracks, samples and sends; the session expires; the watchlist
is purged and verified gone; a late crop is refused. A track's true identity comes from the
scenario's ground-truth file (who was at the crop's box in the crop's frame).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_uploader.delivery import Delivery
from edge_uploader.pipeline import FaceCropper, photo_message
from edge_uploader.runner import Uploader
from edge_uploader.sender import SqsSender
from edge_uploader.sources import Frame, FrameSource
from edge_uploader.spool import Spool
from infra import constants as C
from lfr_cli.admin import Admin, AdminError
from lfr_cli.aws import AwsContext
from lfr_core.contracts import Alert, CropMessage, DeploymentState
from lfr_core.face.detect import Detection
from lfr_eval.datasets import LfwImage, read_lfw_manifest

DEMO_SEED = 7
DEMO_CAMERA = "demo-cam-1"
DEMO_VIDEO_FPS = 8.0
SESSION_MARGIN_S = 45  # the session must outlast the walk-by video plus the deployment's start-up


@dataclass(frozen=True)
class DemoPlan:
    watchlist: list[LfwImage]  # enrolment image of each watchlisted person
    watchlisted_probes: list[LfwImage]  # a different image of some of them
    passers_by: list[LfwImage]  # people not on the watchlist


def plan_demo(
    seed: int = DEMO_SEED, watchlist_size: int = 20, shown: int = 10, passers_by: int = 20
) -> DemoPlan:
    """A seeded, reproducible choice of people; nothing is tuned to individual images."""
    by_id: dict[str, list[LfwImage]] = {}
    for img in read_lfw_manifest():
        by_id.setdefault(img.identity, []).append(img)
    rng = random.Random(seed)
    multi = sorted(i for i, imgs in by_id.items() if len(imgs) >= 2)
    listed = rng.sample(multi, watchlist_size)
    others = sorted(set(by_id) - set(listed))
    return DemoPlan(
        watchlist=[by_id[i][0] for i in listed],
        watchlisted_probes=[by_id[i][1] for i in listed[:shown]],
        passers_by=[by_id[i][0] for i in rng.sample(others, passers_by)],
    )


@dataclass
class DemoSummary:
    deployment_id: str
    watchlist_size: int
    enrol_rejects: int
    threshold: float
    track_messages_sent: int  # one per track (plus the late crop), each with 1-3 crops
    crops_sent: int
    faces_below_gate: int
    watchlisted_people_shown: int
    passers_by_shown: int
    alerts_true: int  # alerts = encounters: one per listed person per walk-by (all its tracks)
    alerts_false: int
    watchlisted_missed: int
    # What an officer feels: listed people found of those shown, and how many times the phone
    # sounded for them (pushes: an encounter's first publish; its updates replace it silently).
    people_shown: int
    people_found: int
    encounters: int
    pushes: int
    pushes_per_found_person: float | None
    updates: int  # later revisions of an encounter's alert (collapsed on the device)
    late_crops_refused: int
    objects_remaining: int
    final_state: str
    median_queue_to_publish_ms: float | None
    alerts: list[dict[str, Any]] = field(default_factory=list)


class PhoneStandIn:
    """An SQS queue subscribed to the alert topic: stands in for an officer's phone."""

    def __init__(self, ctx: AwsContext, on_alert: Callable[[Alert], None]) -> None:
        self._sqs = ctx.client("sqs")
        self.url = self._sqs.create_queue(QueueName="lfr-demo-phone")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        ctx.client("sns").subscribe(
            TopicArn=ctx.outputs[C.OUTPUT_ALERT_TOPIC_ARN], Protocol="sqs", Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self.alerts: list[Alert] = []
        self._on_alert = on_alert
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="demo-phone", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            resp = self._sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for m in resp.get("Messages", []):
                alert = Alert.model_validate_json(m["Body"])
                self.alerts.append(alert)
                self._on_alert(alert)
                self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait_queue_drained(ctx: AwsContext, timeout_s: float) -> None:
    sqs, url = ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0:
            return
        time.sleep(0.5)
    raise AdminError(f"crop queue not drained after {timeout_s:.0f}s")


def run_demo_on(
    ctx: AwsContext, plan: DemoPlan, session_s: int = 60, say: Callable[[str], None] = print
) -> DemoSummary:
    admin = Admin(ctx)
    truth: dict[str, str] = {}  # track id -> who really walked past

    def on_alert(a: Alert) -> None:
        who = truth.get(a.track_id)  # the crop's truth may be recorded just after its alert lands
        verdict = "?    " if who is None else "TRUE " if who == a.watchlist_label else "FALSE"
        kind = "ALERT " if a.revision <= 1 else "UPDATE"
        say(f"  {kind} [{verdict}] {a.watchlist_label} similarity={a.similarity:.3f} camera={a.camera_id}")

    from lfr_eval.scenario import Person, make_scenario, track_identity

    scratch = tempfile.TemporaryDirectory(prefix="lfr-demo-video-")
    video = Path(scratch.name) / "walkby.mp4"
    say("generating the walk-by video ...")
    scene = make_scenario(
        [Person(img.identity, img.path) for img in plan.watchlisted_probes + plan.passers_by],
        video, Path(scratch.name) / "truth.json", fps=DEMO_VIDEO_FPS, seed=DEMO_SEED, on_no_face="skip",
    )
    video_s = scene["n_frames"] / scene["fps"]
    session_s = max(session_s, int(video_s) + SESSION_MARGIN_S)
    phone = PhoneStandIn(ctx, on_alert)
    try:
        with tempfile.TemporaryDirectory(prefix="lfr-demo-watchlist-") as tmp:
            # Links, not copies: the dataset stays where it is.
            for img in plan.watchlist:
                (Path(tmp) / img.file).symlink_to(img.path)
            rec = admin.create_authorise_start("demo", Path(tmp), duration_s=session_s)
        dep = rec.deployment_id
        say(f"deployment {dep}: watchlist of {len(plan.watchlist)} uploaded, session {session_s}s, "
            f"threshold {rec.threshold:.3f} for one crop, "
            + ", ".join(f"{t:.3f} for {n}" for n, t in enumerate(rec.track_thresholds, start=2))
            + f" ({rec.fusion_mode} fusion)")
        rec = admin.wait_for(dep, {DeploymentState.ACTIVE}, timeout_s=600)
        say(f"ACTIVE: {rec.watchlist_size} enrolled, {len(rec.enrol_rejects)} rejected, "
            f"expires {rec.expires_at:%H:%M:%S}")

        # The real uploader, reading the video as a camera (its frame rate; frames it cannot keep up
        # with are dropped), tracking, sampling and sending through the spooling delivery.
        def on_crop(msg: CropMessage, frame: Frame, det: Detection) -> None:
            who = track_identity(scene, frame.index, det.box)
            if who is not None:
                truth.setdefault(msg.track_id, who)

        delivery = Delivery(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL],
                            Spool(Path(scratch.name) / "spool"), expires_at=rec.expires_at)
        uploader = Uploader(FaceCropper(), delivery, deployment_id=dep, camera_id=DEMO_CAMERA, on_crop=on_crop,
                            progress=lambda line: say(f"  edge: {line}"), progress_every_s=10.0)
        with FrameSource(str(video), realtime=True) as source:
            edge = uploader.run(source)
        delivery.wait_idle(60)
        delivered = delivery.close()
        shown = len(scene["people"])
        say(f"edge: {shown} people walked past ({video_s:.0f}s of video), {edge.frames_processed}/"
            f"{edge.frames_read} frames processed, {edge.faces} faces, {edge.tracks} tracks, "
            f"{edge.below_gate} below the quality gate, {delivered.sent} track messages sent "
            f"({edge.crops_selected} crops, up to 3 per track, decided together)")
        sender = SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL])
        _wait_queue_drained(ctx, timeout_s=300)
        time.sleep(2.0)  # let the last SNS deliveries reach the phone

        say("waiting for the session to expire and the watchlist to be purged ...")
        rec = admin.wait_for(dep, {DeploymentState.CLOSED}, timeout_s=session_s + 300)
        # A crop that arrives after the end must be refused, not matched.
        late_probe = plan.watchlisted_probes[0]
        late = photo_message(late_probe.path, deployment_id=dep, camera_id=DEMO_CAMERA)
        if late is None:
            raise AdminError("late probe produced no crop")
        sender.send([late])
        deadline = time.monotonic() + 60
        while admin.get(dep).refused_crops < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        _wait_queue_drained(ctx, timeout_s=60)
        rec = admin.get(dep)
    finally:
        phone.stop()
        scratch.cleanup()  # the video and its ground truth are test material, never kept

    # One alert per encounter: a better crop or another camera republishes the same alert id as a
    # new revision, which the phone collapses into the first notification.
    pushed = {a.alert_id for a in phone.alerts if a.revision == 1}
    updated = {(a.alert_id, a.revision) for a in phone.alerts if a.revision > 1}
    latest: dict[str, Alert] = {}
    for a in phone.alerts:
        if a.alert_id not in latest or a.revision > latest[a.alert_id].revision:
            latest[a.alert_id] = a
    alerts = list(latest.values())
    true_alerts = [a for a in alerts if truth.get(a.track_id) == a.watchlist_label]
    in_video = {p["identity"] for p in scene["people"]}
    shown_ids = {img.identity for img in plan.watchlisted_probes} & in_video
    hit_ids = {a.watchlist_label for a in true_alerts}
    found = shown_ids & hit_ids
    true_pushes = sum(1 for a in true_alerts if a.alert_id in pushed)
    latencies = [a.queue_to_publish_ms for a in alerts if a.queue_to_publish_ms is not None]
    return DemoSummary(
        deployment_id=dep,
        watchlist_size=rec.watchlist_size,
        enrol_rejects=len(rec.enrol_rejects),
        threshold=rec.threshold,
        track_messages_sent=delivered.sent + 1,
        crops_sent=edge.crops_selected + 1,
        faces_below_gate=edge.below_gate,
        watchlisted_people_shown=len(shown_ids),
        passers_by_shown=len(in_video - shown_ids),
        alerts_true=len(true_alerts),
        alerts_false=len(alerts) - len(true_alerts),
        watchlisted_missed=len(shown_ids - hit_ids),
        people_shown=len(shown_ids),
        people_found=len(found),
        encounters=len(alerts),
        pushes=len(pushed),
        pushes_per_found_person=round(true_pushes / len(found), 2) if found else None,
        updates=len(updated),
        late_crops_refused=rec.refused_crops,
        objects_remaining=admin.objects_remaining(dep),
        final_state=str(rec.state),
        median_queue_to_publish_ms=statistics.median(latencies) if latencies else None,
        alerts=[a.model_dump(mode="json") for a in alerts],
    )


def run_demo(as_json: bool = False, session_s: int = 60) -> int:
    from lfr_cli.local.stack import EmbeddedStack

    def say(line: str) -> None:
        print(line, flush=True)

    say("starting the embedded AWS stack (moto) and deploying the CDK template ...")
    with EmbeddedStack() as stack:
        ctx = AwsContext(region=stack.region, endpoint_url=stack.endpoint)
        summary = run_demo_on(ctx, plan_demo(), session_s=session_s, say=say)
    doc = asdict(summary)
    say("")
    say("summary")
    for key, value in doc.items():
        if key != "alerts":
            say(f"  {key:28s} {value}")
    say(f"  people found / shown: {summary.people_found}/{summary.people_shown}; {summary.pushes} push(es) for "
        f"{summary.encounters} encounter(s), {summary.pushes_per_found_person} per found person, "
        f"{summary.updates} silent update(s)")
    if as_json:
        doc.pop("alerts")
        print(json.dumps(doc), flush=True)
    ok = summary.objects_remaining == 0 and summary.late_crops_refused >= 1
    return 0 if ok else 1
