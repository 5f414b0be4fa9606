"""Sources: a slow consumer never builds a backlog (oldest frames dropped, counted); bad sources fail clearly."""

from __future__ import annotations

import itertools
import re
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_uploader.cli import EXIT_SOURCE
from edge_uploader.cli import main as edge_main
from edge_uploader.exceptions import SourceError
from edge_uploader.sources import FrameSource


def write_video(path: Path, n: int = 30, fps: float = 30.0, size: tuple[int, int] = (320, 240)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.putText(frame, str(i), (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        w.write(frame)
    w.release()
    return path


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now
    return port


def test_slow_processing_drops_old_frames_instead_of_queueing_them(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=30, fps=30.0)
    with FrameSource(str(video), realtime=True, queue_size=1) as src:
        seen = []
        for frame in src.frames():
            seen.append(frame.index)
            time.sleep(0.1)  # a consumer at ~10 fps behind a 30 fps camera
    c = src.counts
    assert c.read == 30 and c.dropped > 10
    assert len(seen) + c.dropped == c.read  # every frame is either processed or counted as dropped
    assert seen == sorted(seen) and seen[-1] == 29  # always the freshest, ending with the last
    assert max(b - a for a, b in itertools.pairwise(seen)) >= 2


def test_all_frames_mode_processes_every_frame_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=20, fps=30.0)
    with FrameSource(str(video), realtime=False) as src:
        frames = list(src.frames())
    assert [f.index for f in frames] == list(range(20)) and src.counts.dropped == 0
    assert frames[10].t == pytest.approx(10 / 30.0)
    assert (src.size, src.n_frames) == ((320, 240), 20)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.mp4", None, "does not exist"),
        ("empty.mp4", b"", "is empty (0 bytes)"),
        ("text.mp4", b"not a video", "cannot open video file"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, name: str, content: bytes | None,
                                               message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=re.escape(message)):
        FrameSource(str(path))


def test_unreachable_streams_are_refused(tmp_path: Path) -> None:
    port = closed_port()
    for url in (f"http://127.0.0.1:{port}/cam.mjpg", f"rtsp://127.0.0.1:{port}/cam"):
        t0 = time.monotonic()
        with pytest.raises(SourceError, match="cannot open stream"):
            FrameSource(url)
        assert time.monotonic() - t0 < 15  # bounded by the open timeout, never a hang


def test_cli_exit_codes_for_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = ["--queue-url", "http://127.0.0.1:1/q", "--spool-dir", str(tmp_path / "spool")]
    (tmp_path / "empty.mp4").write_bytes(b"")
    stills = tmp_path / "stills"
    stills.mkdir()
    for i in range(3):
        (stills / f"{i}.jpg").write_bytes(b"")  # zero-size frames
    cases = [
        (str(tmp_path / "missing.mp4"), "does not exist"),
        (str(tmp_path / "empty.mp4"), "empty (0 bytes)"),
        (f"http://127.0.0.1:{closed_port()}/stream", "cannot open stream"),
        (str(stills), "no readable images"),
    ]
    for source, message in cases:
        assert edge_main(["run", "--deployment", "dep-1", "--source", source, *q]) == EXIT_SOURCE, source
        assert message in capsys.readouterr().err
