"""The spool: encrypted with a per-run key, entries expire, a crashed run's spool is deleted, destroy empties it."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import pytest

from edge_uploader.pipeline import FaceCropper
from edge_uploader.spool import Spool
from lfr_core.contracts import CropMessage, utcnow
from lfr_core.datasets import read_lfw_manifest


@pytest.fixture(scope="module")
def message() -> CropMessage:
    img = read_lfw_manifest()[0]
    frame = cv2.imread(str(img.path))
    assert frame is not None
    crop = FaceCropper().crops(frame, faces="central")[0]
    return crop.to_message(deployment_id="dep-1", camera_id="cam", track_id="t1", captured_at=utcnow())


def files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file())


def test_entries_are_encrypted_and_round_trip(tmp_path: Path, message: CropMessage) -> None:
    spool = Spool(tmp_path)
    spool.put(message, expires_at=utcnow().timestamp() + 60)
    (f,) = files(tmp_path)
    blob = f.read_bytes()
    jpeg = message.image.to_bytes()  # type: ignore[union-attr]
    for clear in (jpeg[:64], jpeg[-64:], base64.b64encode(jpeg)[:64], b"dep-1", message.message_id.encode()):
        assert clear not in blob
    assert f.stat().st_mode & 0o077 == 0  # owner-only
    ((_, back),) = spool.oldest(10)
    assert back == message
    # Another run (another key) cannot read it: it deletes it at start instead.
    again = Spool(tmp_path)
    assert again.stale_deleted == 1 and files(tmp_path) == [] and len(again) == 0


def test_expired_entries_are_deleted_not_returned(tmp_path: Path, message: CropMessage) -> None:
    now = [1000.0]
    spool = Spool(tmp_path, clock=lambda: now[0])
    spool.put(message, expires_at=1005.0)
    spool.put(message, expires_at=1100.0)
    now[0] = 1010.0
    assert len(spool.oldest(10)) == 1 and spool.expired == 1 and len(files(tmp_path)) == 1


def test_tampered_entries_are_dropped_and_destroy_empties(tmp_path: Path, message: CropMessage) -> None:
    spool = Spool(tmp_path)
    spool.put(message, expires_at=utcnow().timestamp() + 60)
    spool.put(message, expires_at=utcnow().timestamp() + 60)
    first = files(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-1] + b"\x00")
    assert len(spool.oldest(10)) == 1 and len(files(tmp_path)) == 1
    assert spool.destroy() == 1 and files(tmp_path) == []
