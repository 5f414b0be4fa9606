"""Keeps one identity per person across frames: IoU + constant-velocity motion association.

Chosen because it is cheap (no appearance model, so no embedding is computed at the edge) and is
enough for people crossing a camera's field of view at walking speed:
- each track predicts its face box at the new frame's time with a constant-velocity model
  (position and size velocities, exponentially smoothed), so a fast walker or a dropped frame
  still overlaps its prediction;
- detections are assigned greedily by affinity: IoU with the predicted box, or, when the boxes do
  not overlap, closeness of centres relative to the face size (gated), so a track survives a
  processing hiccup; each detection and each track is used at most once;
- an unmatched detection starts a new track; a track not seen for `max_gap_s` ends.
Track ids are random per run (uuid4 hex), so nothing links a person across runs or cameras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lfr_core.contracts import new_id
from lfr_core.face.detect import Detection

DEFAULT_MAX_GAP_S = 1.0
MIN_IOU = 0.2
# A detection whose centre is within CENTRE_GATE + speed * dt face-widths of the prediction may still continue
# a track: the speed allowance is what a walker can cover unpredicted (a new track has no velocity yet, so
# it gets more), so a low processing rate or dropped frames widen the gate instead of splitting the track.
CENTRE_GATE = 0.6
UNPREDICTED_SPEED = 4.0  # face-widths per second: a walker crossing near the camera
RESIDUAL_SPEED = 1.5  # what the constant-velocity prediction misses (turns, speed changes)
MAX_SIZE_RATIO = 1.6
# A walker strays little across their direction of motion (gait, a slight turn), so a moving track's centre
# distance counts the part across its motion this many times: a face in the next lane, where a lost walker
# would have been along their lane, starts its own track instead of taking over the lost one.
CROSS_MOTION_WEIGHT = 2.0
# A track seen once has no motion to predict from, so its gate widens fast with time: it may wait only this
# long for a second detection, or it takes over whoever comes near (another walker after a drop of frames).
TENTATIVE_MAX_GAP_S = 0.5
MIN_SPEED = 0.5  # face-widths per second: slower tracks have no reliable direction
VELOCITY_SMOOTHING = 0.5
# Two detections of one frame whose overlap covers this much of the smaller box are one face detected
# twice (YuNet does this on a face entering at the frame's edge); two tracks would follow it otherwise.
DUPLICATE_OVERLAP = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return float(iw * ih / smaller) if smaller > 0 else 0.0


def dedupe(detections: Sequence[Detection]) -> list[Detection]:
    """The frame's detections without second detections of one face (the better-scored one is kept)."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        box = np.asarray(d.box, dtype=np.float64)
        if all(overlap_of_smaller(box, np.asarray(k.box, dtype=np.float64)) < DUPLICATE_OVERLAP for k in kept):
            kept.append(d)
    return kept


@dataclass
class Track:
    track_id: str
    box: np.ndarray  # x, y, w, h at last_t
    first_t: float
    last_t: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # per second
    hits: int = 1

    def predict(self, t: float) -> np.ndarray:
        return self.box + self.velocity * (t - self.last_t)


@dataclass(frozen=True)
class Assignment:
    track: Track
    detection: Detection
    new: bool


class Tracker:
    def __init__(self, max_gap_s: float = DEFAULT_MAX_GAP_S) -> None:
        self.max_gap_s = max_gap_s
        self.active: dict[str, Track] = {}
        self.started = 0

    def _affinity(self, pred: np.ndarray, box: np.ndarray, gate: float, velocity: np.ndarray | None = None) -> float:
        o = iou(pred, box)
        if o >= MIN_IOU:
            return 1.0 + o  # any real overlap beats a centre-distance match
        size = max(float(pred[2]), 1.0)
        ratio = float(box[2]) / size
        if not 1 / MAX_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO:
            return 0.0
        pc = pred[:2] + pred[2:] / 2
        bc = box[:2] + box[2:] / 2
        off = (bc - pc) / size
        v = None if velocity is None else (velocity[:2] + velocity[2:] / 2) / size
        if v is not None and float(np.linalg.norm(v)) >= MIN_SPEED:
            along = v / float(np.linalg.norm(v))
            par = float(off @ along)
            perp = float(np.linalg.norm(off - par * along))
            d = float(np.hypot(par, CROSS_MOTION_WEIGHT * perp))
        else:
            d = float(np.linalg.norm(off))
        return 1.0 - d / gate if d < gate else 0.0

    def update(self, detections: Sequence[Detection], t: float) -> tuple[list[Assignment], list[Track]]:
        """Assign this frame's detections; returns the assignments and the tracks that ended.

        A second detection of one face is dropped (`dedupe`): it gets no assignment.
        """
        detections = dedupe(detections)
        ended = [tr for tr in self.active.values()
                 if t - tr.last_t > (self.max_gap_s if tr.hits > 1 else min(self.max_gap_s, TENTATIVE_MAX_GAP_S))]
        for tr in ended:
            del self.active[tr.track_id]
        boxes = [np.asarray(d.box, dtype=np.float64) for d in detections]
        tracks = list(self.active.values())
        pairs = []
        for ti, tr in enumerate(tracks):
            pred = tr.predict(t)
            dt = max(t - tr.last_t, 0.0)
            gate = CENTRE_GATE + (UNPREDICTED_SPEED if tr.hits == 1 else RESIDUAL_SPEED) * dt
            for di, box in enumerate(boxes):
                a = self._affinity(pred, box, gate, tr.velocity if tr.hits > 1 else None)
                if a > 0:
                    pairs.append((a, ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        out: list[Assignment] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tr = tracks[ti]
            dt = t - tr.last_t
            if dt > 0:
                v_new = (boxes[di] - tr.box) / dt
                tr.velocity = v_new if tr.hits == 1 else (
                    VELOCITY_SMOOTHING * v_new + (1 - VELOCITY_SMOOTHING) * tr.velocity)
            tr.box, tr.last_t = boxes[di], t
            tr.hits += 1
            out.append(Assignment(tr, detections[di], new=False))
        for di, det in enumerate(detections):
            if di in used_d:
                continue
            tr = Track(new_id(), boxes[di], first_t=t, last_t=t)
            self.active[tr.track_id] = tr
            self.started += 1
            out.append(Assignment(tr, det, new=True))
        return out, ended

    def end_all(self) -> list[Track]:
        ended = list(self.active.values())
        self.active.clear()
        return ended
