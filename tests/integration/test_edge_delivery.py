"""Delivery through network loss against a real moto SQS whose server is stopped and restarted.

While the endpoint is down crops are spooled encrypted (no JPEG, base64 or ids in clear on disk), they
are sent when it returns, and entries past their TTL are deleted, not sent. After the deployment's
expiry nothing is sent; at exit the spool is empty or destroyed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_uploader.delivery import Delivery
from edge_uploader.pipeline import FaceCropper
from edge_uploader.spool import Spool
from lfr_cli.local.server import MotoServer, make_client
from lfr_core.contracts import CropMessage, new_id, utcnow
from lfr_eval.datasets import read_lfw_manifest
from tests.integration.sqs_support import drain

pytestmark = pytest.mark.integration


class Link:
    """A moto server we can take down and bring back on the same port (its queues survive in-process)."""

    def __init__(self) -> None:
        self.server = MotoServer()
        self.endpoint = self.server.start()
        self.port = int(self.endpoint.rsplit(":", 1)[1])

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = MotoServer(port=self.port)
        self.server.start()


@pytest.fixture
def link() -> Iterator[Link]:
    lk = Link()
    try:
        yield lk
    finally:
        lk.server.stop()


@pytest.fixture(scope="module")
def crops() -> list[CropMessage]:
    cropper = FaceCropper()
    out: list[CropMessage] = []
    for img in read_lfw_manifest()[:40:8]:
        frame = cv2.imread(str(img.path))
        assert frame is not None
        c = cropper.crops(frame, faces="central")[0]
        out.append(c.to_message(deployment_id="dep-net", camera_id="cam", track_id=f"t{len(out)}",
                                captured_at=utcnow()))
    return out


def fresh(msgs: list[CropMessage]) -> list[CropMessage]:
    """The same crops captured now, with new ids (each test sends its own)."""
    return [m.model_copy(update={"captured_at": utcnow(), "message_id": new_id()}) for m in msgs]




def wait_for(cond: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def setup(link: Link, tmp_path: Path, **kw: Any) -> tuple[Any, str, Delivery]:
    client = make_client("sqs", link.endpoint, connect_timeout=1, read_timeout=3)
    url = client.create_queue(QueueName=f"crops-{new_id()}")["QueueUrl"]
    delivery = Delivery(client, url, Spool(tmp_path / "spool"), probe_interval_s=0.3, base_delay_s=0.05, **kw)
    return client, url, delivery


def test_outage_spools_encrypted_then_sends_when_the_endpoint_returns(
    link: Link, tmp_path: Path, crops: list[CropMessage]
) -> None:
    client, url, delivery = setup(link, tmp_path)
    link.down()
    msgs = fresh(crops)
    for m in msgs:
        delivery.submit(m)
    wait_for(lambda: delivery.stats().in_spool == len(msgs))
    assert not delivery.stats().link_up and delivery.stats().sent == 0
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "spool").iterdir())
    assert len(list((tmp_path / "spool").iterdir())) == len(msgs)
    for m in msgs:
        jpeg = m.image.to_bytes()  # type: ignore[union-attr]
        for clear in (jpeg[:32], jpeg[200:232], jpeg[-32:], base64.b64encode(jpeg)[:32], m.message_id.encode()):
            assert clear not in on_disk
    link.up()
    assert delivery.wait_idle(20)
    stats = delivery.close()
    assert (stats.sent, stats.expired, stats.in_spool) == (len(msgs), 0, 0)
    assert {m.message_id for m in drain(client, url)} == {m.message_id for m in msgs}
    assert list((tmp_path / "spool").iterdir()) == []


def test_entries_past_their_ttl_are_deleted_not_sent(link: Link, tmp_path: Path, crops: list[CropMessage]) -> None:
    client, url, delivery = setup(link, tmp_path, ttl_s=1.5)
    link.down()
    msgs = fresh(crops)
    for m in msgs:
        delivery.submit(m)
    wait_for(lambda: delivery.stats().spooled == len(msgs))
    wait_for(lambda: delivery.stats().in_spool == 0, timeout_s=10)  # the TTL passes while the link is down
    assert list((tmp_path / "spool").iterdir()) == []
    link.up()
    late = fresh(crops[:1])
    delivery.submit(late[0])  # a fresh crop still goes through
    assert delivery.wait_idle(20)
    stats = delivery.close()
    assert (stats.expired, stats.sent) == (len(msgs), 1)
    assert [m.message_id for m in drain(client, url)] == [late[0].message_id]


def test_nothing_is_sent_after_the_deployment_expires_and_exit_destroys_the_spool(
    link: Link, tmp_path: Path, crops: list[CropMessage]
) -> None:
    client, url, delivery = setup(link, tmp_path, expires_at=utcnow() + timedelta(seconds=2))
    link.down()
    for m in fresh(crops):
        delivery.submit(m)
    wait_for(lambda: delivery.stats().in_spool == len(crops))
    time.sleep(2.2)  # the deployment ends while the crops wait for the network
    link.up()
    delivery.submit(fresh(crops[:1])[0])
    stats = delivery.close(drain_timeout_s=2)
    assert stats.sent == 0 and stats.refused_after_expiry == len(crops) + 1
    assert drain(client, url) == [] and list((tmp_path / "spool").iterdir()) == []


def test_exit_with_the_link_still_down_destroys_the_spool(
    link: Link, tmp_path: Path, crops: list[CropMessage]
) -> None:
    _, _, delivery = setup(link, tmp_path)
    link.down()
    for m in fresh(crops):
        delivery.submit(m)
    wait_for(lambda: delivery.stats().in_spool == len(crops))
    stats = delivery.close(drain_timeout_s=1)
    assert stats.spool_destroyed == len(crops) and list((tmp_path / "spool").iterdir()) == []
