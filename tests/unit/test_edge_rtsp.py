"""A live camera over real RTSP that drops and comes back: the uploader reconnects, counts the gap, ends the
tracks that were open at the drop (their crops leave, nothing resumes from a stale position) and runs on
until its deadline.

The server is GStreamer's RTSP server on 127.0.0.1 (Debian packages, `make rtsp-server`), serving a walk-by
made by `lfr scenario make`; the uploader runs the real detector on what it receives.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.delivery import Delivery, DeliveryStats
from edge_uploader.pipeline import FaceCropper
from edge_uploader.runner import Uploader
from edge_uploader.sources import FrameSource, SourceStatus
from edge_uploader.spool import Spool
from lfr_core.contracts import CropMessage
from lfr_eval.scenario import make_scenario, people_from_lfw

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parents[1] / "support" / "rtsp_serve.py"


def rtsp_server_present() -> bool:
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('qtdemux') and Gst.ElementFactory.find('rtpmp4vpay')")
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class RtspServer:
    def __init__(self, video: Path, port: int) -> None:
        self.video, self.port = video, port
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/walk"

    def start(self) -> None:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.video), str(self.port), "walk"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        err = self.proc.stderr.read() if line.strip() != "ready" and self.proc.stderr else ""
        assert line.strip() == "ready", f"RTSP server did not start: {line!r} {err}"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class ListSink:
    """Stands in for the SQS delivery (exercised in test_edge_spool); keeps when each message was submitted."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.messages: list[tuple[float, CropMessage]] = []

    def deployment_expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def submit(self, msg: CropMessage) -> None:
        self.messages.append((time.monotonic(), msg))

    def stats(self) -> DeliveryStats | None:
        return None


class RecordingDelivery(Delivery):
    """The van's delivery (SQS + encrypted spool), noting when each message was handed to it."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.submitted: list[tuple[float, CropMessage]] = []

    def submit(self, msg: CropMessage) -> None:
        self.submitted.append((time.monotonic(), msg))
        super().submit(msg)


@pytest.fixture(scope="module")
def walkby(tmp_path_factory: pytest.TempPathFactory, lfw_dir: Path) -> Path:
    if not rtsp_server_present():
        pytest.skip("GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good) "
                    "is not installed: run `make rtsp-server`")
    d = tmp_path_factory.mktemp("rtsp")
    make_scenario(people_from_lfw(5, seed=4), d / "walk.mp4", d / "walk.json", seed=4, fps=10.0)
    return d / "walk.mp4"


def test_a_camera_that_drops_is_reconnected_and_its_open_tracks_end_at_the_drop(
    walkby: Path, sqs: tuple[Any, str], tmp_path: Path,
) -> None:
    server = RtspServer(walkby, free_port())
    server.start()
    events: list[tuple[float, SourceStatus]] = []
    started = time.monotonic()
    client, url = sqs
    sink = RecordingDelivery(client, url, Spool(tmp_path / "spool"),
                             expires_at=datetime.now(UTC) + timedelta(seconds=16.0))
    uploader = Uploader(FaceCropper(), sink, deployment_id="dep", camera_id="cam-rtsp",
                        on_camera=lambda cam, st: events.append((time.monotonic(), st)))
    cut_at: list[float] = []

    def cut_and_restore() -> None:
        time.sleep(3.5)  # walkers are in view by now
        cut_at.append(time.monotonic())
        server.kill()
        time.sleep(3.0)
        server.start()

    outage = threading.Thread(target=cut_and_restore, daemon=True)
    try:
        with FrameSource(server.url) as source:
            outage.start()
            stats = uploader.run(source)
            status = source.status()
    finally:
        outage.join(15)
        server.kill()
        delivered = sink.close()
    ran = time.monotonic() - started
    # It ran to its deadline (the stream was still playing), not to the drop.
    assert stats.stopped_by_expiry and 15.5 <= ran <= 25.0
    assert stats.reconnects == 1 and status.up and status.reconnects == 1
    assert 2.5 <= stats.gap_s <= 9.0  # 3 s down plus detection and back-off
    # The console sees the camera go down, then up, with the times of each.
    (down_t, down), (up_t, up) = events
    assert (down.up, up.up) == (False, True) and down_t < up_t
    assert isinstance(down.since, datetime) and up.since > down.since
    # Tracks open at the drop were ended and their crops left while the camera was down.
    assert stats.tracks_cut >= 1
    during = [m for t, m in sink.submitted if down_t <= t < up_t]
    assert len(during) >= 1
    # No track spans the gap: each message's crops were all captured before the drop or all after it.
    for _, msg in sink.submitted:
        times = [msg.captured_at, *(c.captured_at for c in msg.more)]
        assert all(t < up.since for t in times) or all(t >= up.since for t in times), msg.track_id
    # Frames came through both connections and were processed.
    after = [m for t, m in sink.submitted if t >= up_t]
    assert len(after) >= 1 and stats.frames_processed > 30
    assert len({m.track_id for _, m in sink.submitted}) == len(sink.submitted)  # one message per track
    # The spool and the queue agree with what was submitted: every message before the deadline is on the
    # queue (tracks flushed at the deadline are refused, as always), none left in the spool.
    assert delivered.sent + delivered.refused_after_expiry == len(sink.submitted)
    assert delivered.in_spool == 0 and delivered.spool_destroyed == 0 and delivered.failed == 0
    on_queue: set[str] = set()
    while batch := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        on_queue |= {json.loads(m["Body"])["track_id"] for m in batch}
        client.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    assert len(on_queue) == delivered.sent >= len(during) + len(after) - delivered.refused_after_expiry >= 1
    assert on_queue <= {m.track_id for _, m in sink.submitted}


def test_a_camera_that_stays_down_is_retried_with_bounded_back_off_until_the_deadline(
    walkby: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = RtspServer(walkby, free_port())
    server.start()
    events: list[tuple[float, SourceStatus]] = []
    started = time.monotonic()
    sink = ListSink(deadline=started + 9.0)
    uploader = Uploader(FaceCropper(), sink, deployment_id="dep", camera_id="cam-rtsp",
                        on_camera=lambda cam, st: events.append((time.monotonic(), st)))
    killer = threading.Timer(2.5, server.kill)
    try:
        with caplog.at_level("WARNING", logger="edge_uploader.sources"), FrameSource(server.url) as source:
            killer.start()
            stats = uploader.run(source)
            status = source.status()
            attempts = source.counts.reconnect_attempts
    finally:
        killer.cancel()
        server.kill()
    ran = time.monotonic() - started
    # The run neither ended at the drop nor hung: it stopped at its deadline with the camera still down.
    assert stats.stopped_by_expiry and 8.5 <= ran <= 14.0
    assert not stats.camera_up and not status.up and stats.reconnects == 0
    assert [st.up for _, st in events] == [False]
    assert stats.gap_s >= 4.0  # down from ~2.5 s to the 9 s deadline, counted while still down
    # Back-off: attempts after 0.5, 1, 2, 4 s... so a handful in ~6 s, each one logged.
    assert 2 <= attempts <= 5
    assert sum("reconnect attempt" in r.getMessage() for r in caplog.records) == attempts
    # The tracks open at the drop were ended and sent while the camera was down.
    after_drop = [m for t, m in sink.messages if t >= events[0][0]]
    assert 1 <= len(after_drop) <= stats.tracks_cut
    assert "camera DOWN" in stats.line() and "reconnects=0" in stats.line()
