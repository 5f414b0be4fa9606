"""How whole the edge tracker's tracks are on generated walk-bys, and a maintained
tracker's for comparison.

Each standard scenario (seeded `lfr scenario make` walk-bys) is detected once with the real detector;
the detections are then fed to each tracker at the full frame rate and with the frames a loaded van
drops (every second frame; a seeded 40 % of frames at random), and `scenario.fragmentation` counts
tracks per crossing and identity switches against the truth. The kept tracker is `edge_uploader.tracker`;
ByteTrack (as packaged in `supervision`) is measured when it is installed (it is not a dependency: it
needs scipy, matplotlib and the non-headless opencv-python, which clashes with opencv-python-headless;
`pip install --no-deps supervision==0.27.0.post2 'pyDeprecate<0.6'` for a comparison run).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_uploader.tracker import Tracker
from lfr_core.face.detect import Detection, FaceDetector
from lfr_eval.scenario import Fragmentation, fragmentation, make_scenario, people_from_lfw

# (people, seed, fps): small enough to detect in seconds; the demo's walk-by is (30, 7, 8.0). The first one
# split walkers and switched identities with the tracker before the duplicate and cross-motion rules
# (1.2 tracks per crossing and a switch when every second frame is dropped, 1.3 at random drops).
STANDARD_SCENARIOS: tuple[tuple[int, int, float], ...] = ((10, 7, 8.0), (8, 2, 10.0))
DROPS = ("none", "every-2nd", "random-40%")
Observation = tuple[int, str, Sequence[float]]
TrackerRun = Callable[[list[list[Detection]], list[int], float], list[Observation]]


def detect_video(video: Path, detector: FaceDetector) -> list[list[Detection]]:
    cap = cv2.VideoCapture(str(video))
    frames: list[list[Detection]] = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(detector.detect(image))
    finally:
        cap.release()
    return frames


def processed(n: int, drops: str, seed: int = 0) -> list[int]:
    """The frame indices a van processes: all, every second one, or a seeded random 60 %."""
    if drops == "none":
        return list(range(n))
    if drops == "every-2nd":
        return list(range(0, n, 2))
    rng = random.Random(seed)
    return [i for i in range(n) if rng.random() >= 0.4]


def run_edge(frames: list[list[Detection]], indices: list[int], fps: float) -> list[Observation]:
    tracker, out = Tracker(), list[Observation]()
    for i in indices:
        assignments, _ = tracker.update(frames[i], i / fps)
        out += [(i, a.track.track_id, a.detection.box) for a in assignments]
    return out


def bytetrack_available() -> bool:
    try:
        import supervision as sv
    except ImportError:
        return False
    return hasattr(sv, "ByteTrack")


def run_bytetrack(frames: list[list[Detection]], indices: list[int], fps: float) -> list[Observation]:
    import supervision as sv

    rate = fps * len(indices) / max(len(frames), 1)
    # Its lost-track buffer is in frames at 30 fps: one second of the processed rate, as the edge's max gap.
    bt = sv.ByteTrack(frame_rate=30, lost_track_buffer=max(round(rate), 1), minimum_consecutive_frames=1)
    out: list[Observation] = []
    for i in indices:
        dets = frames[i]
        if dets:
            xyxy = np.array([[d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3]] for d in dets])
            sd = sv.Detections(xyxy=xyxy.astype(np.float64), confidence=np.array([d.score for d in dets]),
                               class_id=np.zeros(len(dets), int))
        else:
            sd = sv.Detections.empty()
        tracked = bt.update_with_detections(sd)
        ids = [int(i) for i in (tracked.tracker_id if tracked.tracker_id is not None else [])]
        for (x1, y1, x2, y2), tid in zip(tracked.xyxy, ids, strict=True):
            out.append((i, f"bt{tid}", (float(x1), float(y1), float(x2 - x1), float(y2 - y1))))
    return out


@dataclass(frozen=True)
class TrackerResult:
    tracker: str
    drops: str
    frag: Fragmentation
    ms_per_frame: float

    def to_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "drops": self.drops, **self.frag.to_dict(),
                "ms_per_frame": round(self.ms_per_frame, 3)}


def measure(frames: list[list[Detection]], truth: dict[str, Any], trackers: dict[str, TrackerRun],
            drops: Sequence[str] = DROPS) -> list[TrackerResult]:
    results = []
    for how in drops:
        indices = processed(len(frames), how)
        for name, run in trackers.items():
            t0 = time.perf_counter()
            obs = run(frames, indices, float(truth["fps"]))
            ms = 1000 * (time.perf_counter() - t0) / max(len(indices), 1)
            results.append(TrackerResult(name, how, fragmentation(obs, truth), ms))
    return results


def trackers() -> dict[str, TrackerRun]:
    out: dict[str, TrackerRun] = {"edge": run_edge}
    if bytetrack_available():
        out["bytetrack"] = run_bytetrack
    return out


def scenario_detections(people: int, seed: int, fps: float, workdir: Path,
                        detector: FaceDetector) -> tuple[list[list[Detection]], dict[str, Any]]:
    video, truth_path = workdir / f"walk-{people}-{seed}.mp4", workdir / f"walk-{people}-{seed}.json"
    truth = make_scenario(people_from_lfw(people, seed), video, truth_path, seed=seed, fps=fps, detector=detector)
    t0 = time.perf_counter()
    frames = detect_video(video, detector)
    truth["detect_fps"] = len(frames) / (time.perf_counter() - t0)
    return frames, truth
