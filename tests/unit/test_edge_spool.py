"""The spool: encrypted with a per-run key, entries expire, a crashed run's spool is deleted, destroy empties it."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_uploader.pipeline import FaceCropper
from edge_uploader.spool import Spool
from lfr_core.contracts import CropMessage, utcnow
from lfr_eval.datasets import read_lfw_manifest


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


# -- a full disk ----------------------------------------------------------------------------------


def test_full_disk_raises_a_typed_error_and_leaves_no_partial_file(tmp_path: Path, message: CropMessage) -> None:
    from edge_uploader.exceptions import SpoolWriteError
    from tests.fullfs import fill, tiny_tmpfs

    with tiny_tmpfs(tmp_path / "fs", size_kib=64) as fs:
        spool = Spool(fs / "spool")
        spool.put(message, expires_at=utcnow().timestamp() + 60)  # room for one
        fill(fs)
        for _ in range(3):
            with pytest.raises(SpoolWriteError) as ei:
                spool.put(message, expires_at=utcnow().timestamp() + 60)
            assert ei.value.reason == "disk_full"
        assert [p.name for p in files(fs / "spool") if not p.name.endswith(".crop")] == []  # no .tmp left
        assert len(spool) == 1 and len(spool.oldest(10)) == 1
        (fs / "filler").unlink()  # the disk frees: the spool writes again
        spool.put(message, expires_at=utcnow().timestamp() + 60)
        assert len(spool) == 2 and len(files(fs / "spool")) == 2


def test_write_failing_midway_removes_the_partial_file(
    tmp_path: Path, message: CropMessage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from edge_uploader import spool as spool_mod
    from edge_uploader.exceptions import SpoolWriteError

    spool = Spool(tmp_path)
    calls = {"n": 0}

    def short_then_enospc(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return os.write(fd, bytes(data[:100]))  # a short write, as a nearly full disk gives
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_mod, "_write_chunk", short_then_enospc)
    with pytest.raises(SpoolWriteError) as ei:
        spool.put(message, expires_at=utcnow().timestamp() + 60)
    assert ei.value.reason == "disk_full" and calls["n"] == 2
    assert files(tmp_path) == [] and len(spool) == 0
    monkeypatch.setattr(spool_mod, "_write_chunk", lambda fd, data: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    with pytest.raises(SpoolWriteError) as ei:
        spool.put(message, expires_at=utcnow().timestamp() + 60)
    assert ei.value.reason == "io_error" and files(tmp_path) == []


def test_unreadable_entries_are_counted_not_silently_lost(tmp_path: Path, message: CropMessage) -> None:
    spool = Spool(tmp_path)
    for _ in range(3):
        spool.put(message, expires_at=utcnow().timestamp() + 60)
    f = files(tmp_path)
    f[0].write_bytes(b"")  # emptied on disk
    f[1].unlink()  # gone from disk
    assert len(spool.oldest(10)) == 1
    assert spool.unreadable == 2 and len(spool) == 1 and len(files(tmp_path)) == 1


def test_delivery_with_the_network_down_and_the_disk_full_counts_every_crop(
    tmp_path: Path, message: CropMessage
) -> None:
    """Real connection refused (nothing listens on the port) and a real full tmpfs."""
    from edge_uploader.delivery import Delivery
    from lfr_cli.local.server import make_client
    from lfr_core.contracts import new_id
    from tests.fullfs import fill, tiny_tmpfs

    client = make_client("sqs", "http://127.0.0.1:9", connect_timeout=1, read_timeout=1)
    with tiny_tmpfs(tmp_path / "fs", size_kib=64) as fs:
        delivery = Delivery(client, "http://127.0.0.1:9/123456789012/crops", Spool(fs / "spool"),
                            probe_interval_s=0.2, max_attempts=1, base_delay_s=0.01, max_queue=5)
        produced, first = 40, 3

        def crop() -> CropMessage:
            return message.model_copy(update={"message_id": new_id(), "captured_at": utcnow()})

        def settle(cond: Any) -> None:
            deadline = time.monotonic() + 20
            while not cond(delivery.stats()) and time.monotonic() < deadline:
                time.sleep(0.05)

        for _ in range(first):
            delivery.submit(crop())
        settle(lambda st: not st.link_up and st.in_spool == first)  # the link is down: spooled
        fill(fs)  # ... and now the disk is full
        for _ in range(produced - first):
            delivery.submit(crop())  # never raises
        settle(lambda st: st.in_flight == 0 and st.queued + st.in_spool + sum(st.dropped.values()) == produced)
        st = delivery.stats()
        assert (st.sent, st.link_up, st.submitted, st.unaccounted) == (0, False, produced, 0)
        # Memory holds the newest max_queue crops; the oldest beyond that are dropped, with the reason.
        assert (st.in_spool, st.queued, st.dropped) == (first, 5, {"disk_full": produced - first - 5})
        assert [p for p in (fs / "spool").iterdir() if p.suffix == ".tmp"] == []
        # The disk frees; the link stays down: held crops go to the spool again.
        (fs / "filler").unlink()
        settle(lambda st: st.in_flight == 0 and st.queued == 0)
        st2 = delivery.stats()
        assert (st2.queued, st2.in_spool, st2.unaccounted) == (0, first + 5, 0), st2
        final = delivery.close(drain_timeout_s=0.5)
        assert final.unaccounted == 0 and final.spool_destroyed == st2.in_spool
        assert list((fs / "spool").iterdir()) == []
