"""The uploader's loop: frames -> detect -> track -> align + quality gate -> sample -> deliver.

Detection runs on every processed frame (YuNet); the tracker keeps one id per person; the sampler
chooses which gate-passing crops leave the van; `Delivery` gets them to SQS or the encrypted spool.
Nothing here writes a crop anywhere but the delivery path (and the preview, when asked for).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from pydantic import ValidationError

from edge_uploader.delivery import DeliveryStats
from edge_uploader.pipeline import FaceCropper
from edge_uploader.preview import Annotation, PreviewWriter, Status
from edge_uploader.sampler import Bundle, SamplingPolicy, TrackSampler
from edge_uploader.sources import Frame, FrameSource, SourceStatus
from edge_uploader.status import CameraHeartbeat
from edge_uploader.tracker import DEFAULT_MAX_GAP_S, Tracker
from lfr_core.contracts import CropMessage, rejection_reason
from lfr_core.face.detect import Detection

CropHook = Callable[[CropMessage, Frame, Detection], None]
# Camera id and its state now; called when the camera goes down and when it is back (a drop shorter than a
# frame shows only as "up" with one more reconnection).
CameraHook = Callable[[str, SourceStatus], None]
# A camera that gave no frame for this long is checked: down means its tracks end now, and the deadline still holds.
IDLE_CHECK_S = 1.0


class Sink(Protocol):
    """Where a track's message goes: `Delivery` (SQS + spool) in the van, a list in `lfr eval-video`."""

    def deployment_expired(self) -> bool: ...

    def submit(self, msg: CropMessage) -> None: ...

    def stats(self) -> DeliveryStats | None: ...


@dataclass
class RunStats:
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_bad: int = 0
    faces: int = 0
    below_gate: int = 0
    passed_gate: int = 0
    tracks: int = 0  # confirmed tracks (>= min_hits detections)
    crops_selected: int = 0
    messages_sent: int = 0  # one per track: its crops travel together
    # Tracks whose message failed the contract's plausibility bounds (the cloud would refuse it):
    # dropped here, counted per reason tag, never sent.
    messages_invalid: dict[str, int] = field(default_factory=dict)
    crops_per_track: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    detect_s: float = 0.0
    stopped_by_expiry: bool = False
    delivery: DeliveryStats | None = None
    camera_up: bool = True
    reconnects: int = 0  # a dropped stream delivering again
    gap_s: float = 0.0  # seconds without frames while the stream was down
    tracks_cut: int = 0  # tracks ended because the stream dropped (flushed, never resumed)

    @property
    def fps(self) -> float:
        return self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        d = self.delivery
        deliv = (f"sent={d.sent} queued={d.queued} spooled={d.spooled} in_spool={d.in_spool} "
                 f"expired={d.expired} refused={d.refused_after_expiry} "
                 f"crops_dropped={sum(d.dropped.values())}{d.dropped if d.dropped else ''}") if d else ""
        invalid = sum(self.messages_invalid.values())
        return (f"frames read={self.frames_read} processed={self.frames_processed} dropped={self.frames_dropped} "
                f"bad={self.frames_bad} | faces={self.faces} below_gate={self.below_gate} tracks={self.tracks} | "
                f"track messages {deliv}{f' invalid={invalid}' if invalid else ''} | {self.fps:.1f} fps"
                + (f" | camera {'up' if self.camera_up else 'DOWN'} reconnects={self.reconnects} "
                   f"gap={self.gap_s:.1f}s tracks_cut={self.tracks_cut}"
                   if self.reconnects or not self.camera_up else ""))


class Uploader:
    def __init__(
        self,
        cropper: FaceCropper,
        delivery: Sink,
        *,
        deployment_id: str,
        camera_id: str,
        policy: SamplingPolicy | None = None,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
        preview: PreviewWriter | None = None,
        on_crop: CropHook | None = None,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 2.0,
        on_camera: CameraHook | None = None,
        heartbeat: CameraHeartbeat | None = None,
    ) -> None:
        self.cropper = cropper
        self.delivery = delivery
        self.deployment_id = deployment_id
        self.camera_id = camera_id
        self.policy = policy or SamplingPolicy()
        self.max_gap_s = max_gap_s
        self.preview = preview
        self.on_crop = on_crop
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.on_camera = on_camera
        # The camera's status to the cloud (edge_uploader/status.py): on every state change and
        # every interval, checked on each pass of the loop below.
        self.heartbeat = heartbeat

    def run(self, source: FrameSource) -> RunStats:
        """Process the source until it ends (or the deployment expires). Source errors propagate."""
        stats = RunStats()
        # Stills are unrelated moments: every face in every image is its own one-frame track.
        independent = source.kind == "folder"
        policy = replace(self.policy, min_hits=1) if independent else self.policy
        tracker = Tracker(self.max_gap_s)
        sampler = TrackSampler(policy)
        started = time.perf_counter()
        last_progress = started
        segment, camera = 0, (True, 0)
        try:
            for frame in source.frames_or_idle(IDLE_CHECK_S):
                if self.delivery.deployment_expired():
                    stats.stopped_by_expiry = True
                    break
                cam = source.status()
                if self.heartbeat is not None:
                    self.heartbeat.tick(cam, source.counts.read)
                if (cam.up, cam.reconnects) != camera:
                    camera = (cam.up, cam.reconnects)
                    if self.on_camera is not None:
                        self.on_camera(self.camera_id, cam)
                if frame is None or frame.segment != segment:
                    # The stream dropped: its tracks end now and their crops leave; positions from
                    # before the gap must not continue a track after it.
                    if not cam.up or (frame is not None and frame.segment != segment):
                        for tr in tracker.end_all():
                            stats.tracks_cut += 1
                            self._send(sampler.end(tr), stats, {})
                    if frame is None:
                        self._counts(stats, source, started)
                        last_progress = self._progress(stats, last_progress)
                        continue
                    segment = frame.segment
                stats.frames_processed += 1
                t0 = time.perf_counter()
                dets = self.cropper.detector.detect(frame.image)
                stats.detect_s += time.perf_counter() - t0
                status: dict[str, Status] = {}
                if independent:
                    for tr in tracker.end_all():
                        self._send(sampler.end(tr), stats, status)
                assignments, ended = tracker.update(dets, frame.t)
                for tr in ended:
                    self._send(sampler.end(tr), stats, status)
                for a in assignments:
                    stats.faces += 1
                    if a.track.hits == policy.min_hits:
                        stats.tracks += 1
                    crop = self.cropper.crop(frame.image, a.detection)
                    if not self.cropper.passes(crop):
                        stats.below_gate += 1
                        status[a.track.track_id] = "below_gate"
                        continue
                    stats.passed_gate += 1
                    status[a.track.track_id] = "tracked"
                    sampler.offer(a.track, crop, frame)
                for bundle in sampler.due(tracker.active, frame.t):
                    self._send(bundle, stats, status)
                self._counts(stats, source, started)
                if self.preview is not None:
                    self.preview.write(frame.image, [
                        Annotation(a.detection.box, a.track.track_id, status.get(a.track.track_id, "tracked"),
                                   sampler.crops_for(a.track.track_id))
                        for a in assignments
                    ], f"{self.camera_id} frame {frame.index}  tracks {len(tracker.active)}  "
                       f"crops {stats.crops_selected}")
                last_progress = self._progress(stats, last_progress)
        finally:
            # The source ended (or failed): tracks still in view get their decision now.
            for tr in tracker.end_all():
                self._send(sampler.end(tr), stats, {})
            self._counts(stats, source, started)
        return stats

    def _progress(self, stats: RunStats, last: float) -> float:
        now = time.perf_counter()
        if self.progress is None or now - last < self.progress_every_s:
            return last
        self.progress(stats.line())
        return now

    def _send(self, bundle: Bundle | None, stats: RunStats, status: dict[str, Status]) -> None:
        """One message per track: its best crop, with the others in `more`."""
        if bundle is None:
            return
        (best, frame), rest = bundle.best, bundle.crops[1:]
        try:
            msg = best.to_message(
                deployment_id=self.deployment_id, camera_id=self.camera_id, track_id=bundle.track_id,
                captured_at=frame.captured_at, more=[(c, f.captured_at) for c, f in rest],
            )
        except ValidationError as exc:
            # Built through the one contract: what the cloud would reject is not sent (nor crashes the run).
            reason = rejection_reason(exc)
            stats.messages_invalid[reason] = stats.messages_invalid.get(reason, 0) + 1
            return
        self.delivery.submit(msg)
        stats.messages_sent += 1
        stats.crops_selected += len(bundle.crops)
        stats.crops_per_track[bundle.track_id] = len(bundle.crops)
        status[bundle.track_id] = "sent"
        if self.on_crop is not None:
            self.on_crop(msg, frame, best.detection)

    def _counts(self, stats: RunStats, source: FrameSource, started: float) -> None:
        stats.frames_read = source.counts.read
        stats.frames_dropped = source.counts.dropped
        stats.frames_bad = source.counts.bad
        cam = source.status()
        stats.camera_up, stats.reconnects, stats.gap_s = cam.up, cam.reconnects, cam.gap_s
        stats.elapsed_s = time.perf_counter() - started
        stats.delivery = self.delivery.stats()
