"""The edge uploader with the network down AND its spool's disk full (a real tmpfs), against real moto SQS.

The finding reproduced: a full disk raised a raw OSError out of `submit()`, left 0-byte `.tmp`
files and 18 of 40 crops vanished uncounted. Now the run goes on to the end of its source, every
track message is sent, spooled, held, or dropped with a reason (the counters add up to what was
produced), and once the disk frees and the link returns the rest is delivered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.delivery import Delivery, DeliveryStats
from edge_uploader.pipeline import FaceCropper
from edge_uploader.runner import Uploader
from edge_uploader.sources import FrameSource
from edge_uploader.spool import Spool
from lfr_cli.local.server import make_client
from lfr_core.contracts import new_id
from lfr_eval.datasets import read_lfw_manifest
from tests.fullfs import fill, tiny_tmpfs
from tests.integration.sqs_support import drain
from tests.integration.test_edge_delivery import Link, link  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

MAX_QUEUE = 8
IMAGES = 40


def settle(delivery: Delivery, cond: Any, timeout_s: float = 30.0) -> DeliveryStats:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = delivery.stats()
        if st.in_flight == 0 and cond(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"not reached: {delivery.stats()}")


def test_network_down_and_disk_full_every_crop_accounted_and_the_run_goes_on(
    link: Link, tmp_path: Path  # noqa: F811
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for img in read_lfw_manifest()[:IMAGES]:  # symlinks: no face image is copied anywhere
        os.symlink(img.path, frames / img.path.name)
    client = make_client("sqs", link.endpoint, connect_timeout=1, read_timeout=3)
    url = client.create_queue(QueueName=f"crops-{new_id()}")["QueueUrl"]

    with tiny_tmpfs(tmp_path / "fs", size_kib=128) as fs:
        spool = Spool(fs / "spool")
        filler = fill(fs)
        os.truncate(filler, filler.stat().st_size - 20 * 1024)  # room for about three spool entries
        delivery = Delivery(client, url, spool, probe_interval_s=0.3, base_delay_s=0.05, max_queue=MAX_QUEUE)
        link.down()
        uploader = Uploader(FaceCropper(), delivery, deployment_id="dep-full", camera_id="cam-1")
        with FrameSource(str(frames)) as source:
            stats = uploader.run(source)  # returns: neither the network nor the disk stopped it
        produced = stats.messages_sent
        assert produced >= 25 and stats.frames_processed + stats.frames_dropped == IMAGES

        down = settle(delivery, lambda st: st.queued + st.in_spool + sum(st.dropped.values()) == produced)
        assert (down.submitted, down.sent, down.link_up, down.unaccounted) == (produced, 0, False, 0)
        assert 1 <= down.in_spool <= 4 and down.queued == MAX_QUEUE
        assert down.dropped == {"disk_full": produced - down.in_spool - MAX_QUEUE}
        assert [p.name for p in (fs / "spool").iterdir() if not p.name.endswith(".crop")] == []  # no .tmp

        filler.unlink()  # the disk frees ...
        link.up()  # ... and the network returns
        assert delivery.wait_idle(30)
        final = delivery.close()
        got = drain(client, url)

    assert final.unaccounted == 0 and final.submitted == produced
    assert final.sent == len(got) == down.in_spool + MAX_QUEUE
    assert len({m.message_id for m in got}) == len(got)
    assert final.sent + sum(final.dropped.values()) + final.expired == produced
    print(f"\nfull disk + network down: produced={produced} sent={final.sent} (spooled {down.in_spool}, "
          f"held in memory {MAX_QUEUE}) dropped={final.dropped} expired={final.expired} unaccounted=0")
