"""Frame sources through OpenCV: a video file, an RTSP/HTTP stream URL, a webcam index, or a folder of images.

Frame rate is decoupled from processing: a reader thread pulls frames as the source gives them into a
queue of at most `queue_size` frames and, when the consumer is slower, drops the OLDEST frame, so the
processing loop always gets a fresh frame and never builds a backlog (dropped frames are counted).
A video file stands in for a camera, so by default it is read at its own frame rate (`realtime`);
`realtime=False` reads a file as fast as it is consumed with no drops (every frame processed:
deterministic runs, tests, the demo).

A stream (an IP camera over RTSP/HTTP) that stops is not the end of the run: the reader marks the
camera down, reopens it with bounded exponential back-off (each attempt logged, reconnections and
seconds without frames counted) until it delivers again or the source is closed. Frames after a
reconnection carry the next `segment`, so the consumer ends the tracks of the previous one rather than
continuing them from stale positions. `status()` says whether the camera is up, since when, and the counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_uploader.exceptions import SourceError
from lfr_core.contracts import utcnow

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}
SourceKind = Literal["file", "stream", "webcam", "folder"]
STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 5000
# This many unusable frames in a row (zero-size, undecodable) means the source is broken, not glitching.
MAX_CONSECUTIVE_BAD = 25
DEFAULT_QUEUE_SIZE = 2
# Reconnection back-off of a dropped stream: first retry after RECONNECT_MIN_S, doubling up to RECONNECT_MAX_S.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
# RTSP over TCP (interleaved): no UDP loss or NAT trouble on a van's network; only when the operator set nothing.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source, counting frames dropped before processing
    t: float  # seconds since the source started: video time for files, wall time for live sources
    image: np.ndarray
    captured_at: datetime
    segment: int = 0  # a stream's connection this frame came through: 0, then +1 per reconnection


@dataclass
class SourceCounts:
    read: int = 0
    dropped: int = 0
    bad: int = 0  # zero-size or undecodable frames/images, skipped
    reconnects: int = 0  # a dropped stream delivering again
    reconnect_attempts: int = 0  # failed reopen attempts included
    gap_s: float = 0.0  # seconds a stream delivered no frame between dropping and delivering again


@dataclass(frozen=True)
class SourceStatus:
    """What a console shows of the camera: up or down, since when, and how often it dropped."""

    up: bool
    since: datetime
    reconnects: int
    gap_s: float  # seconds without frames so far (including a drop still under way)
    last_frame_at: datetime | None
    last_gap_s: float = 0.0  # the most recent completed drop's seconds without frames


def classify(spec: str) -> SourceKind:
    if spec.isdigit():
        return "webcam"
    if "://" in spec:
        return "stream"
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"source does not exist: {spec}")
    return "folder" if p.is_dir() else "file"


def list_images(folder: Path) -> list[Path]:
    if not folder.exists():
        raise SourceError(f"source folder does not exist: {folder}")
    if not folder.is_dir():
        raise SourceError(f"source is not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def read_still(path: Path) -> np.ndarray | None:
    """A still image as BGR, or None if it cannot be used (unreadable, corrupt, absurdly large).

    cv2.imread returns None for most bad files but RAISES cv2.error for some (a header claiming
    more pixels than OpenCV's limit): one such file must not end a run.
    """
    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def _open_stream(spec: str) -> cv2.VideoCapture:
    # Timeouts so a dead camera is noticed in seconds, not when TCP gives up.
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS,
    ])


def _usable(frame: np.ndarray | None) -> bool:
    return frame is not None and frame.ndim == 3 and frame.shape[0] > 0 and frame.shape[1] > 0


class FrameSource:
    """Opens a source (raising `SourceError` with the reason if it cannot) and yields `Frame`s."""

    def __init__(self, spec: str, *, realtime: bool = True, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.spec = spec
        self.kind: SourceKind = classify(spec)
        self.counts = SourceCounts()
        self._queue_size = queue_size
        self._cap: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._error: SourceError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self.fps = 1.0
        self.size: tuple[int, int] = (0, 0)
        self.n_frames: int | None = None
        self._up = True
        self._since = utcnow()
        self._down_mono: float | None = None
        self._last_frame_at: datetime | None = None
        self._segment = 0
        self._last_gap_s = 0.0
        if self.kind == "folder":
            self._files = list_images(Path(spec))
            self.n_frames = len(self._files)
            first_img = read_still(self._files[0])
            if _usable(first_img):
                assert first_img is not None
                self.size = (first_img.shape[1], first_img.shape[0])
            # Stills are not a live camera: every image is processed.
            self._drop = False
            self._realtime = False
            return
        if self.kind == "file" and Path(spec).stat().st_size == 0:
            raise SourceError(f"source file is empty (0 bytes): {spec}")
        if self.kind == "webcam":
            cap = cv2.VideoCapture(int(spec))
        elif self.kind == "stream":
            cap = _open_stream(spec)
        else:
            cap = cv2.VideoCapture(spec)
        if not cap.isOpened():
            cap.release()
            what = {"webcam": "webcam index", "stream": "stream", "file": "video file"}[self.kind]
            raise SourceError(f"cannot open {what} {spec} (unreachable, not a video, or no decoder)")
        ok, first = cap.read()
        if not ok or not _usable(first):
            cap.release()
            raise SourceError(f"source {spec} opened but gave no decodable frame")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 240 else 25.0
        self.size = (first.shape[1], first.shape[0])
        if self.kind == "file":
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.n_frames = n if n > 0 else None
        self._first = first
        # A live source runs at its own pace whatever we do: only dropping keeps us current.
        self._drop = self.kind != "file" or realtime
        self._realtime = self.kind == "file" and realtime

    def status(self) -> SourceStatus:
        with self._cond:
            gap = self.counts.gap_s
            if self._down_mono is not None:
                gap += time.monotonic() - self._down_mono
            return SourceStatus(self._up, self._since, self.counts.reconnects, gap, self._last_frame_at,
                                self._last_gap_s)

    # -- reader thread -------------------------------------------------------------------------

    def _reconnect(self) -> bool:
        """The stream stopped: mark it down, reopen with back-off; False if closed meanwhile."""
        assert self._cap is not None
        self._cap.release()
        with self._cond:
            self._up, self._since, self._down_mono = False, utcnow(), time.monotonic()
        log.warning("source %s: stream stopped delivering frames; reconnecting", self.spec)
        delay = RECONNECT_MIN_S
        while not self._stop.wait(delay):
            self.counts.reconnect_attempts += 1
            cap = _open_stream(self.spec)
            ok, first = cap.read() if cap.isOpened() else (False, None)
            if ok and _usable(first):
                with self._cond:
                    assert self._down_mono is not None
                    gap = time.monotonic() - self._down_mono
                    self.counts.gap_s += gap
                    self._last_gap_s = gap
                    self.counts.reconnects += 1
                    self._up, self._since, self._down_mono = True, utcnow(), None
                    self._segment += 1
                assert first is not None
                self._cap, self._first = cap, first
                log.warning("source %s: reconnected after %.1f s without frames (reconnection %d)",
                            self.spec, gap, self.counts.reconnects)
                return True
            cap.release()
            log.warning("source %s: reconnect attempt %d failed; next in %.1f s", self.spec,
                        self.counts.reconnect_attempts, min(delay * 2, RECONNECT_MAX_S))
            delay = min(delay * 2, RECONNECT_MAX_S)
        return False

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self._drop:
                while len(self._buf) >= self._queue_size:
                    self._buf.popleft()
                    self.counts.dropped += 1
            else:
                while len(self._buf) >= self._queue_size and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._buf.append(frame)
            self._cond.notify_all()

    def _read_video(self) -> None:
        assert self._cap is not None
        start_wall = time.monotonic()
        start_utc = utcnow()
        index = 0
        frame: np.ndarray | None = self._first
        bad_run = 0
        while not self._stop.is_set():
            if frame is None:
                ok, frame = self._cap.read()
                if not ok:
                    if self.kind == "file" or self._stop.is_set():
                        break
                    if self.kind == "webcam":
                        raise SourceError(f"webcam {self.spec} stopped delivering frames")
                    if not self._reconnect():
                        break
                    frame = self._first
            if not _usable(frame):
                self.counts.bad += 1
                bad_run += 1
                frame = None
                index += 1
                if bad_run >= MAX_CONSECUTIVE_BAD:
                    raise SourceError(f"source {self.spec} gave {bad_run} unusable (zero-size) frames in a row")
                continue
            bad_run = 0
            if self.kind == "file":
                t = index / self.fps
                if self._realtime:
                    delay = start_wall + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                # Read faster than real time, a file's own clock runs ahead of now: never stamp the future.
                captured_at = min(start_utc + timedelta(seconds=t), utcnow())
            else:
                t = time.monotonic() - start_wall
                captured_at = utcnow()
            self.counts.read += 1
            self._last_frame_at = captured_at
            assert frame is not None
            self._put(Frame(index, t, frame, captured_at, self._segment))
            index += 1
            frame = None

    def _read_folder(self) -> None:
        start_utc = utcnow()
        for index, path in enumerate(self._files):
            if self._stop.is_set():
                return
            image = read_still(path)
            if not _usable(image):
                self.counts.bad += 1
                continue
            assert image is not None
            self.counts.read += 1
            # Each still is its own moment; one second apart keeps per-track timing rules meaningful.
            # (Never stamped in the future: the contract refuses a capture time ahead of the clock.)
            self._put(Frame(index, float(index), image, min(start_utc + timedelta(seconds=index), utcnow())))
        if self.counts.read == 0:
            raise SourceError(f"no readable images under {self.spec} ({self.counts.bad} unreadable)")

    def _run(self) -> None:
        try:
            if self.kind == "folder":
                self._read_folder()
            else:
                self._read_video()
        except SourceError as exc:
            self._error = exc
        except Exception as exc:  # a decoder crash must end the run with a reason, not hang it
            self._error = SourceError(f"source {self.spec} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def frames(self) -> Iterator[Frame]:
        """Frames until the source ends; raises `SourceError` if it broke rather than ended."""
        for frame in self.frames_or_idle(None):
            if frame is not None:
                yield frame

    def frames_or_idle(self, idle_s: float | None) -> Iterator[Frame | None]:
        """As `frames`, and None after every `idle_s` seconds without a frame (a camera that is down),
        so the consumer can act on time passing (deadlines, ending tracks) while it waits."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lfr-edge-reader", daemon=True)
            self._thread.start()
        while True:
            waited_from = time.monotonic()
            idle = False
            with self._cond:
                while not self._buf and not self._ended:
                    self._cond.wait(0.2)
                    if idle_s is not None and time.monotonic() - waited_from >= idle_s:
                        idle = True
                        break
                if idle:
                    frame: Frame | None = None
                elif self._buf:
                    frame = self._buf.popleft()
                    self._cond.notify_all()
                else:
                    break
            yield frame
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._buf.clear()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
