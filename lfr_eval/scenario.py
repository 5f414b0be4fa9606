"""`lfr scenario make`: a synthetic "walk-by" video of known people, with a ground-truth file.

Each person's face is cut from one of their images (around the detected face, with a margin) and
pasted as a soft-edged patch onto a synthetic street-like background (no image beyond the dataset
is used). People walk across the frame in lanes, in both directions, several at once, growing as
they approach (varying scale), with per-person blur and brightness and a per-frame JPEG quality
that drifts, so the uploader sees the nuisances a real camera gives it.

The ground truth records, for every frame, which identity's face is where (box and eye distance),
so a test or the demo can say which person each track really was. Generated videos belong in a
temp dir or `build/`, never in the repository.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from lfr_core.face.detect import FaceDetector, pick_central
from lfr_eval.datasets import read_lfw_manifest

DEFAULT_SIZE = (1280, 720)
DEFAULT_FPS = 10.0
DEFAULT_WALK_S = 4.0
DEFAULT_CONCURRENT = 3
# Eye distance (px) a face has at the far and near end of its walk: the near end is above the
# ~40 px at 720p where the detector and the quality gate are comfortable, the far end below it.
DEFAULT_IOD_RANGE = (26.0, 58.0)
TRUTH_SCHEMA = 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}


class ScenarioError(Exception):
    """A scenario that cannot be made: no usable face in an identity's images, bad arguments."""


@dataclass(frozen=True)
class Person:
    identity: str
    image: Path


@dataclass(frozen=True)
class _Patch:
    """A face cut-out: BGR pixels, an alpha mask, and where the face sits inside it."""

    bgr: np.ndarray
    alpha: np.ndarray  # float32 (H, W) in [0, 1]
    face_box: tuple[float, float, float, float]  # x, y, w, h in patch coordinates
    iod: float  # eye distance in patch pixels


def _cut_patch(image_bgr: np.ndarray, detector: FaceDetector) -> _Patch | None:
    det = pick_central(detector.detect(image_bgr), image_bgr.shape)
    if det is None:
        return None
    x, y, w, h = det.box
    # Enough margin for the detector to see a head, little enough to keep bystanders out of the patch.
    x0 = max(int(x - 0.35 * w), 0)
    y0 = max(int(y - 0.3 * h), 0)
    x1 = min(int(x + 1.35 * w), image_bgr.shape[1])
    y1 = min(int(y + 1.25 * h), image_bgr.shape[0])
    patch = image_bgr[y0:y1, x0:x1].copy()
    ph, pw = patch.shape[:2]
    # Soft elliptical edge: no hard rectangle border for the detector to latch onto.
    alpha = np.zeros((ph, pw), np.float32)
    cv2.ellipse(alpha, (pw // 2, ph // 2), (int(pw * 0.46), int(ph * 0.47)), 0, 0, 360, 1.0, -1)
    alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(pw, ph) * 0.06), dtype=np.float32)
    iod = float(np.linalg.norm(det.landmarks[1] - det.landmarks[0]))
    return _Patch(patch, alpha, (x - x0, y - y0, w, h), iod)


def synthetic_background(width: int, height: int, seed: int) -> np.ndarray:
    """A street-like backdrop drawn from shapes and noise: sky gradient, building blocks, pavement."""
    rng = np.random.default_rng(seed)
    bg = np.zeros((height, width, 3), np.float32)
    sky = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    bg[:] = (1 - sky) * np.array([200, 170, 140], np.float32) + sky * np.array([90, 95, 100], np.float32)
    for _ in range(14):
        bw, bh = int(rng.integers(80, 260)), int(rng.integers(height // 4, height * 3 // 4))
        bx = int(rng.integers(-40, width))
        colour = rng.integers(50, 200, 3).tolist()
        cv2.rectangle(bg, (bx, height - bh), (bx + bw, height), colour, -1)
        for wy in range(height - bh + 15, height - 40, 40):  # windows
            for wx in range(bx + 10, bx + bw - 20, 35):
                cv2.rectangle(bg, (wx, wy), (wx + 18, wy + 22), (40, 40, 40) if rng.random() < 0.5 else
                              (150, 190, 200), -1)
    cv2.rectangle(bg, (0, int(height * 0.85)), (width, height), (110, 110, 115), -1)  # pavement
    bg += rng.normal(0, 6, bg.shape).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, bgr: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    h, w = bgr.shape[:2]
    fx0, fy0 = max(x, 0), max(y, 0)
    fx1, fy1 = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    src = bgr[fy0 - y:fy1 - y, fx0 - x:fx1 - x].astype(np.float32)
    a = alpha[fy0 - y:fy1 - y, fx0 - x:fx1 - x, None]
    dst = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(a * src + (1 - a) * dst, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Walk:
    person: Person
    patch: _Patch
    start_f: int
    n_frames: int
    lane_y: float
    leftwards: bool
    iod_from: float
    iod_to: float
    blur: float
    gain: float


def make_scenario(
    people: Sequence[Person],
    out: Path,
    truth_path: Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
    walk_s: float = DEFAULT_WALK_S,
    concurrent: int = DEFAULT_CONCURRENT,
    iod_range: tuple[float, float] = DEFAULT_IOD_RANGE,
    seed: int = 0,
    detector: FaceDetector | None = None,
    on_no_face: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]:
    """Write the walk-by video to `out` (mp4v) and its ground truth to `truth_path`; returns the truth.

    A person whose image has no detectable face raises `ScenarioError`, or with `on_no_face="skip"`
    is left out (listed under "skipped" in the truth).
    """
    if not people:
        raise ScenarioError("no people to walk past the camera")
    if concurrent < 1 or fps <= 0 or walk_s <= 0:
        raise ScenarioError("concurrent, fps and walk time must be positive")
    width, height = size
    detector = detector or FaceDetector()
    rng = random.Random(seed)
    walks: list[_Walk] = []
    n_lanes = max(concurrent, 1)
    walk_f = round(walk_s * fps)
    stagger = walk_f / concurrent
    skipped: list[str] = []
    for person in people:
        img = cv2.imread(str(person.image), cv2.IMREAD_COLOR)
        patch = _cut_patch(img, detector) if img is not None and img.size else None
        if patch is None:
            if on_no_face == "skip":
                skipped.append(person.identity)
                continue
            raise ScenarioError(f"no face found in {person.image} ({person.identity})")
        i = len(walks)
        lane = i % n_lanes
        # Lanes spread over the middle of the frame; a face walks in its own lane, so faces do not collide.
        lane_y = height * (0.25 + 0.5 * (lane + 0.5) / n_lanes)
        lo, hi = iod_range
        grow = rng.random() < 0.75  # most people approach the camera, some walk away from it
        a, b = rng.uniform(lo, lo + 0.25 * (hi - lo)), rng.uniform(hi - 0.15 * (hi - lo), hi)
        walks.append(_Walk(
            person=person, patch=patch, start_f=round(i * stagger + rng.uniform(0, 0.2 * stagger)),
            n_frames=round(walk_f * rng.uniform(0.9, 1.1)), lane_y=lane_y, leftwards=lane % 2 == 1,
            iod_from=a if grow else b, iod_to=b if grow else a,
            blur=rng.uniform(0.0, 1.2), gain=rng.uniform(0.7, 1.25),
        ))
    if not walks:
        raise ScenarioError("no usable face in any of the people's images")
    total = max(w.start_f + w.n_frames for w in walks) + 2
    background = synthetic_background(width, height, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ScenarioError(f"cannot write video {out}")
    frames_truth: list[list[dict[str, Any]]] = []
    jpeg_q = 75.0
    try:
        for f in range(total):
            frame = background.copy()
            here: list[dict[str, Any]] = []
            for pid, w in enumerate(walks):
                k = f - w.start_f
                if not 0 <= k < w.n_frames:
                    continue
                u = k / max(w.n_frames - 1, 1)
                iod = w.iod_from + (w.iod_to - w.iod_from) * u
                s = iod / w.patch.iod
                ph, pw = w.patch.bgr.shape[:2]
                sw, sh = max(round(pw * s), 2), max(round(ph * s), 2)
                bgr = cv2.resize(w.patch.bgr, (sw, sh), interpolation=cv2.INTER_CUBIC)
                alpha = cv2.resize(w.patch.alpha, (sw, sh), interpolation=cv2.INTER_LINEAR)
                # Blur breathes along the walk (focus, motion); brightness is the person's lighting.
                sigma = w.blur * (0.5 + 0.5 * math.sin(2 * math.pi * u * 1.5 + pid))
                if sigma > 0.3:
                    bgr = cv2.GaussianBlur(bgr, (0, 0), sigma)
                bgr = np.clip(bgr.astype(np.float32) * w.gain, 0, 255).astype(np.uint8)
                travel = width + sw
                cx = (width + sw / 2 - u * travel) if w.leftwards else (-sw / 2 + u * travel)
                cy = w.lane_y + 12 * math.sin(2 * math.pi * u * 3)  # gait bob
                x, y = round(cx - sw / 2), round(cy - sh / 2)
                _paste(frame, bgr, alpha, x, y)
                fx, fy, fw, fh = w.patch.face_box
                box = [x + fx * s, y + fy * s, fw * s, fh * s]
                inside_w = min(box[0] + box[2], width) - max(box[0], 0)
                inside_h = min(box[1] + box[3], height) - max(box[1], 0)
                if inside_w > 0.8 * box[2] and inside_h > 0.8 * box[3]:
                    here.append({"person": pid, "identity": w.person.identity,
                                 "box": [round(v, 1) for v in box], "iod": round(iod, 1)})
            jpeg_q = float(np.clip(jpeg_q + rng.uniform(-8, 8), 35, 92))
            ok, enc = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_q)])
            decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else None
            if decoded is not None:
                frame = np.asarray(decoded, dtype=np.uint8)
            writer.write(frame)
            frames_truth.append(here)
    finally:
        writer.release()
    truth: dict[str, Any] = {
        "schema": TRUTH_SCHEMA,
        "video": out.name,
        "fps": fps,
        "width": width,
        "height": height,
        "n_frames": total,
        "people": [
            {"person": pid, "identity": w.person.identity, "image": w.person.image.name,
             "first_frame": w.start_f, "last_frame": w.start_f + w.n_frames - 1,
             "max_iod": round(max(w.iod_from, w.iod_to), 1)}
            for pid, w in enumerate(walks)
        ],
        "skipped": skipped,
        "frames": frames_truth,
    }
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps(truth))
    return truth


def people_from_lfw(n: int, seed: int = 0) -> list[Person]:
    """`n` distinct lfw-dev people, one image each, seeded."""
    by_id: dict[str, list[Path]] = {}
    for img in read_lfw_manifest():
        by_id.setdefault(img.identity, []).append(img.path)
    if n < 1 or n > len(by_id):
        raise ScenarioError(f"--from-lfw wants 1..{len(by_id)} people, got {n}")
    rng = random.Random(seed)
    return [Person(i, by_id[i][0]) for i in rng.sample(sorted(by_id), n)]


def people_from_dirs(dirs: Sequence[Path]) -> list[Person]:
    """One person per folder (its name is the identity), using the folder's first image."""
    people = []
    for d in dirs:
        if not d.is_dir():
            raise ScenarioError(f"identity folder not found: {d}")
        imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not imgs:
            raise ScenarioError(f"no images in identity folder {d}")
        people.append(Person(d.name, imgs[0]))
    return people


def truth_at(truth: dict[str, Any], frame_index: int, box: Sequence[float],
             min_iou: float = 0.3) -> dict[str, Any] | None:
    """The ground truth's entry at `box` in frame `frame_index` (best IoU of at least `min_iou`), or None."""
    if not 0 <= frame_index < len(truth["frames"]):
        return None
    best, best_iou = None, min_iou
    for entry in truth["frames"][frame_index]:
        iou = box_iou(box, entry["box"])
        if iou >= best_iou:
            best, best_iou = entry, iou
    return best


def track_identity(truth: dict[str, Any], frame_index: int, box: Sequence[float],
                   min_iou: float = 0.3) -> str | None:
    """Who (by name) the ground truth says is at `box` in frame `frame_index`, or None."""
    entry = truth_at(truth, frame_index, box, min_iou)
    return None if entry is None else str(entry["identity"])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Fragmentation:
    """How whole a tracker's tracks are, against the ground truth of a walk-by.

    A crossing is one person's walk past the camera that at least one track was placed on. A track
    is placed on the person the truth puts at its box (`track_identity`'s rule, by person, not name);
    only tracks of at least `min_hits` detections count (shorter ones send nothing). An identity
    switch is a track whose placed person changes between two of its detections.
    """

    crossings: int
    tracks: int  # tracks placed on at least one person
    unplaced: int  # tracks the truth cannot place (detector false positives)
    switches: int
    tracks_by_person: dict[int, int]

    @property
    def tracks_per_crossing(self) -> float:
        return sum(self.tracks_by_person.values()) / self.crossings if self.crossings else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"crossings": self.crossings, "tracks": self.tracks, "unplaced_tracks": self.unplaced,
                "tracks_per_crossing": round(self.tracks_per_crossing, 3), "identity_switches": self.switches}


def track_person(truth: dict[str, Any], frame_index: int, box: Sequence[float], min_iou: float = 0.3) -> int | None:
    """Which person (index in the truth's `people`) is at `box` in frame `frame_index`, or None."""
    entry = truth_at(truth, frame_index, box, min_iou)
    return None if entry is None else int(entry["person"])


def fragmentation(observations: Iterable[tuple[int, str, Sequence[float]]], truth: dict[str, Any],
                  min_hits: int = 2) -> Fragmentation:
    """Tracks per crossing and identity switches of `(frame index, track id, box)` observations."""
    seen: dict[str, list[int | None]] = {}
    for frame_index, track_id, box in sorted(observations, key=lambda o: o[0]):
        seen.setdefault(track_id, []).append(track_person(truth, frame_index, box))
    by_person: dict[int, int] = {}
    unplaced = switches = placed = 0
    for people in seen.values():
        if len(people) < min_hits:
            continue
        known = [p for p in people if p is not None]
        if not known:
            unplaced += 1
            continue
        placed += 1
        switches += sum(1 for a, b in itertools.pairwise(known) if a != b)
        for p in set(known):
            by_person[p] = by_person.get(p, 0) + 1
    return Fragmentation(len(by_person), placed, unplaced, switches, by_person)
