"""Edge uploader: image-folder source, quality, contract, and delivery to a real (moto) SQS."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_uploader.cli import EXIT_SOURCE, EXIT_USAGE
from edge_uploader.cli import main as edge_main
from edge_uploader.pipeline import FaceCropper, GateCounts, SourceError, image_folder_messages, list_images
from edge_uploader.quality import assess, frontalness
from edge_uploader.sender import SqsSender
from lfr_cli.durations import parse_duration
from lfr_core.contracts import CropMessage
from lfr_core.face.image import decode_jpeg
from lfr_eval.datasets import read_lfw_manifest


@pytest.fixture(scope="module")
def lfw_sample() -> list[Path]:
    imgs = [i for i in read_lfw_manifest() if i.n_images >= 2]
    return [imgs[k].path for k in range(0, 60, 12)]


@pytest.fixture(scope="module")
def cropper() -> FaceCropper:
    return FaceCropper()


def test_list_images_rejects_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(SourceError, match="no images"):
        list_images(tmp_path)


def test_real_faces_become_valid_crop_messages(lfw_sample: list[Path], cropper: FaceCropper, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    counts = GateCounts()
    out = list(
        image_folder_messages(
            [*lfw_sample, broken], cropper, deployment_id="dep-1", camera_id="cam", counts=counts, faces="central"
        )
    )
    assert counts.unreadable == [str(broken)]  # counted, and the rest still flowed
    assert counts.frames == len(lfw_sample)
    assert len(out) == counts.passed >= len(lfw_sample) - 1
    for path, msg in out:
        assert path in lfw_sample
        again = CropMessage.model_validate_json(msg.model_dump_json())  # the wire contract round-trips
        crop = decode_jpeg(again.image.to_bytes(), expect_size=(112, 112))  # type: ignore[union-attr]
        assert crop.shape == (112, 112, 3)
        assert 0.0 < again.quality.score <= 1.0


def test_quality_prefers_sharp_frontal_faces(lfw_sample: list[Path], cropper: FaceCropper) -> None:
    frame = cv2.imread(str(lfw_sample[0]))
    assert frame is not None
    crop = cropper.crops(frame, faces="central")[0]
    blurred = cv2.GaussianBlur(crop.aligned_bgr, (0, 0), 3.0)
    q_blur = assess(crop.detection.landmarks, blurred, crop.detection.score)
    assert q_blur.sharpness < crop.quality.sharpness / 3
    assert q_blur.score < crop.quality.score
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float32)
    turned = frontal.copy()
    turned[2, 0] = 66  # nose far toward one eye: a head turned away
    assert frontalness(frontal) == pytest.approx(1.0)
    assert frontalness(turned) < 0.4


def test_sender_delivers_every_message_in_batches(sqs: tuple[Any, str], lfw_sample: list[Path],
                                                  cropper: FaceCropper) -> None:
    client, url = sqs
    msgs = [m for _, m in image_folder_messages(
        lfw_sample, cropper, deployment_id="dep-1", camera_id="cam", counts=GateCounts(), faces="central")]
    many = [m.model_copy(update={"message_id": f"{m.message_id[:24]}{i:04d}"}) for i in range(5) for m in msgs]
    report = SqsSender(client, url).send(many)
    assert (report.sent, report.failed) == (len(many), 0)
    received: dict[str, CropMessage] = {}
    for _ in range(20):
        for m in client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            cm = CropMessage.model_validate_json(m["Body"])
            received[cm.message_id] = cm
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if len(received) == len(many):
            break
    assert set(received) == {m.message_id for m in many}


def test_sender_retries_through_a_network_fault(sqs: tuple[Any, str], lfw_sample: list[Path],
                                                cropper: FaceCropper) -> None:
    client, url = sqs

    class FlakyNetwork:
        """The real client behind a link that drops the first two calls."""

        def __init__(self) -> None:
            self.calls = 0

        def send_message_batch(self, **kw: Any) -> Any:
            self.calls += 1
            if self.calls <= 2:
                raise ConnectionError("link down")
            return client.send_message_batch(**kw)

    msg = next(m for _, m in image_folder_messages(
        lfw_sample[:1], cropper, deployment_id="dep-1", camera_id="cam", counts=GateCounts(), faces="central"))
    flaky = FlakyNetwork()
    report = SqsSender(flaky, url, sleep=lambda s: None).send([msg])
    assert (report.sent, flaky.calls) == (1, 3)
    body = client.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"]
    assert CropMessage.model_validate_json(body).message_id == msg.message_id

    dead = FlakyNetwork()
    dead.calls = -100  # never recovers
    report = SqsSender(dead, url, max_attempts=3, sleep=lambda s: None).send([msg])
    assert report.failed == 1 and "gave up after 3 attempts" in report.failures[0]
    # The failure report names the message, never carries the crop.
    assert msg.image.jpeg_b64[:40] not in report.failures[0]  # type: ignore[union-attr]
    assert base64.b64decode(msg.image.jpeg_b64)  # type: ignore[union-attr]


def test_edge_cli_bad_source_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert edge_main(["run", "--deployment", "d1", "--source", str(tmp_path / "missing"),
                      "--queue-url", "http://127.0.0.1:1/q"]) == EXIT_SOURCE
    assert "does not exist" in capsys.readouterr().err
    assert edge_main(["run", "--deployment", "d1", "--source", str(tmp_path)]) == EXIT_USAGE
    assert "no queue URL" in capsys.readouterr().err
    bad = tmp_path / "van.toml"
    bad.write_text("camera_id = [")
    assert edge_main(["run", "--deployment", "d1", "--source", str(tmp_path), "--config", str(bad)]) == EXIT_USAGE
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "ten minutes", "5x", "-3m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_hostile_stills_in_a_folder_are_counted_and_the_run_goes_on(
    lfw_sample: list[Path], cropper: FaceCropper, tmp_path: Path
) -> None:
    """cv2.imread RAISES (not returns None) on a header claiming too many pixels: one file ended the run."""
    from edge_uploader.sources import FrameSource
    from lfr_core.contracts import utcnow
    from tests.unit import poison

    photo = lfw_sample[0].read_bytes()
    folder = tmp_path / "stills"
    folder.mkdir()
    for i, p in enumerate(lfw_sample):
        (folder / f"a{i}-{p.name}").symlink_to(p)
    bad = {"huge.jpg": poison.huge_dimensions(photo), "bomb.png": poison.png_bomb(40000, 40000),
           "dds.jpg": poison.dds_header(), "random.jpg": poison.random_bytes(b""), "empty.jpg": b""}
    for name, data in bad.items():
        (folder / f"z-{name}").write_bytes(data)

    counts = GateCounts()
    out = list(image_folder_messages(sorted(folder.iterdir()), cropper, deployment_id="dep-1", camera_id="cam",
                                     counts=counts, faces="central"))
    assert sorted(Path(u).name for u in counts.unreadable) == sorted(f"z-{n}" for n in bad)
    assert counts.frames == len(lfw_sample) and len(out) == counts.passed >= len(lfw_sample) - 1

    with FrameSource(str(folder)) as source:
        frames = list(source.frames())
    assert len(frames) == len(lfw_sample) and source.counts.bad == len(bad)
    assert all(f.captured_at <= utcnow() for f in frames)  # stills are never stamped in the future
