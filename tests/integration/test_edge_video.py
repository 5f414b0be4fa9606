"""The uploader on a generated walk-by video of known lfw-dev people, against a real moto SQS.

Tolerance for the track count: |tracks - people| <= 1 for 5 people (a face half-hidden at the frame
edge or behind another walker may split a track once; more than that is a tracker regression).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_uploader.cli import EXIT_OK
from edge_uploader.cli import main as edge_main
from edge_uploader.delivery import Delivery
from edge_uploader.pipeline import FaceCropper
from edge_uploader.runner import RunStats, Uploader
from edge_uploader.sampler import SamplingPolicy
from edge_uploader.sources import Frame, FrameSource
from edge_uploader.spool import Spool
from lfr_cli.local.server import MotoServer
from lfr_core.contracts import CropMessage, new_id
from lfr_core.face.detect import Detection
from lfr_core.face.image import decode_jpeg
from lfr_eval.scenario import make_scenario, people_from_lfw, track_identity
from tests.integration.sqs_support import drain

pytestmark = pytest.mark.integration
N_PEOPLE = 5
K = 3


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("walkby")
    truth = make_scenario(people_from_lfw(N_PEOPLE, seed=3), d / "walk.mp4", d / "truth.json", seed=3, fps=8.0)
    assert json.loads((d / "truth.json").read_text()) == truth
    return d / "walk.mp4", truth


@pytest.fixture(scope="module")
def sqs() -> Iterator[tuple[MotoServer, Any, str]]:
    with MotoServer() as server:
        client = server.client("sqs")
        # moto's backends are per process: a queue of its own keeps other modules' leftovers out.
        yield server, client, client.create_queue(QueueName=f"crops-{new_id()}")["QueueUrl"]




def test_every_walker_sends_gated_crops_one_track_each_at_most_k(
    scenario: tuple[Path, dict[str, Any]], sqs: tuple[MotoServer, Any, str], tmp_path: Path
) -> None:
    video, truth = scenario
    _, client, url = sqs
    who: dict[str, str | None] = {}  # message id -> ground-truth identity at the crop's frame and box
    frame_of: dict[str, int] = {}

    def on_crop(msg: CropMessage, frame: Frame, det: Detection) -> None:
        who[msg.message_id] = track_identity(truth, frame.index, det.box)
        frame_of[msg.message_id] = frame.index

    cropper = FaceCropper()
    delivery = Delivery(client, url, Spool(tmp_path / "spool"))
    uploader = Uploader(cropper, delivery, deployment_id="dep-walk", camera_id="cam-1",
                        policy=SamplingPolicy(best_k=K, min_interval_s=1.0), on_crop=on_crop)
    with FrameSource(str(video), realtime=False) as source:
        stats: RunStats = uploader.run(source)
    assert delivery.wait_idle(30)
    final = delivery.close()
    got = drain(client, url)

    assert stats.frames_processed == truth["n_frames"] and stats.frames_dropped == 0
    assert final.sent == len(got) == stats.messages_sent and final.in_spool == 0
    assert sum(m.n_crops for m in got) == stats.crops_selected
    people = {p["identity"] for p in truth["people"]}
    # Every person who crossed produced at least one crop, and it passed the gate.
    by_person = collections.defaultdict(list)
    for m in got:
        by_person[who[m.message_id]].append(m)
        assert cropper.passes_quality(m.quality)
        assert decode_jpeg(m.image.to_bytes(), expect_size=(112, 112)).shape == (112, 112, 3)  # type: ignore[union-attr]
        for more in m.more:  # the track's other crops: gated too, and never better than its own
            assert cropper.passes_quality(more.quality) and more.quality.score <= m.quality.score
            assert decode_jpeg(more.image.to_bytes(), expect_size=(112, 112)).shape == (112, 112, 3)
    assert people <= set(by_person)
    # Tracks: one per person within the stated tolerance, and never more than K crops each.
    assert abs(stats.tracks - N_PEOPLE) <= 1, stats.tracks
    per_track = collections.Counter(m.track_id for m in got)
    assert max(per_track.values()) == 1  # one message, so one decision, per track
    assert max(m.n_crops for m in got) <= K
    # Most walks give the cloud more than one crop to decide on.
    assert sum(m.n_crops >= 2 for m in got) >= len(got) / 2, [m.n_crops for m in got]
    # A message's best crop comes from inside its person's walk.
    for p in truth["people"]:
        for m in by_person[p["identity"]]:
            assert p["first_frame"] <= frame_of[m.message_id] <= p["last_frame"], p


def test_cli_preview_video_opens_with_one_frame_per_processed_frame(
    scenario: tuple[Path, dict[str, Any]], sqs: tuple[MotoServer, Any, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    video, truth = scenario
    server, client, url = sqs
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    preview = tmp_path / "preview.mp4"
    code = edge_main(["run", "--deployment", "dep-walk", "--source", str(video), "--queue-url", url,
                      "--endpoint-url", server.endpoint, "--all-frames", "--preview", str(preview),
                      "--spool-dir", str(tmp_path / "spool")])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert f"processed={truth['n_frames']}" in out
    cap = cv2.VideoCapture(str(preview))
    assert cap.isOpened()
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (truth["height"], truth["width"], 3)
        n += 1
    cap.release()
    assert n == truth["n_frames"]
    assert len(drain(client, url)) >= N_PEOPLE
