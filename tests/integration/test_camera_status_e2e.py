"""A live camera that drops, seen from the van's console: real RTSP -> the uploader (detector, tracker,
delivery to the crop queue, camera statuses) -> the match function on the embedded stack -> the
console's state API and page (headless Chromium) show the camera up, down (since when, the gap), up
again, then silent once the edge is gone. After the session: nothing of the camera's status is left,
a late status is refused, and the leak scan finds no face of the walkers anywhere.

The RTSP server is GStreamer's (Debian packages, `make rtsp-server`); the walk-by is made by
`lfr scenario make` from lfw-dev people who are not on the watchlist. Short status interval (1 s) so
the test takes seconds, not minutes, of camera time.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.delivery import Delivery
from edge_uploader.pipeline import FaceCropper
from edge_uploader.runner import RunStats, Uploader
from edge_uploader.sender import SqsSender
from edge_uploader.sources import Frame, FrameSource
from edge_uploader.spool import Spool
from edge_uploader.status import CameraHeartbeat
from functions.models.officers import ChannelKind
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import _wait_queue_drained
from lfr_cli.leakscan import needles_for, scan
from lfr_cli.local.stack import EmbeddedStack
from lfr_cli.main import main as lfr
from lfr_cli.officers import officer_admin
from lfr_core.contracts import CameraState, CameraStatus, CropMessage, DeploymentState, utcnow
from lfr_core.face.detect import Detection
from lfr_eval.datasets import LfwImage, read_lfw_manifest
from lfr_eval.scenario import make_scenario, people_from_lfw
from tests.integration.conftest import ARTIFACTS
from tests.unit.test_edge_rtsp import RtspServer, free_port, rtsp_server_present

pytestmark = pytest.mark.integration
SESSION_S = 10 * 60  # ended early by a stop once the camera has been seen down and up again
INTERVAL_S = 1.0  # the edge's status interval here (15 s in a van): silent after 3 s
CAMERA = "cam-van"
WALKERS_SEED = 4


@pytest.fixture(scope="module")
def walkby(tmp_path_factory: pytest.TempPathFactory, lfw_dir: Path) -> tuple[Path, set[str]]:
    if not rtsp_server_present():
        pytest.skip("GStreamer's RTSP server is not installed: run `make rtsp-server`")
    d = tmp_path_factory.mktemp("rtsp")
    walkers = people_from_lfw(5, seed=WALKERS_SEED)
    make_scenario(walkers, d / "walk.mp4", d / "walk.json", seed=WALKERS_SEED, fps=10.0)
    return d / "walk.mp4", {p.identity for p in walkers}


@pytest.fixture(scope="module")
def people(walkby: tuple[Path, set[str]]) -> dict[str, list[LfwImage]]:
    """A watchlist of three people none of whom walks past: no face of the walk-by is kept."""
    _, walkers = walkby
    chosen: dict[str, LfwImage] = {}
    for img in read_lfw_manifest():
        if img.identity not in walkers and img.identity not in chosen and img.n_images >= 2:
            chosen[img.identity] = img
        if len(chosen) == 3:
            break
    return {"watchlist": list(chosen.values())}


@pytest.fixture(scope="module")
def deployment(admin: Admin, watchlist_dir: Path) -> str:
    rec = admin.create_authorise_start("camstatus", watchlist_dir, duration_s=SESSION_S)
    admin.wait_for(rec.deployment_id, {DeploymentState.ACTIVE}, timeout_s=300)
    return rec.deployment_id


@pytest.fixture(scope="module")
def token(ctx: AwsContext, deployment: str) -> str:
    sqs = ctx.client("sqs")
    url = sqs.create_queue(QueueName="phone-operator")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    officer = officer_admin(ctx).add_officer(deployment, "Operator", [(ChannelKind.SQS, arn)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = lfr(["--endpoint-url", str(ctx.endpoint_url), "--region", ctx.region, "officers", "token",
                    "--deployment", deployment, "--officer", officer.officer_id, "--json"])
    assert code == 0
    return str(json.loads(out.getvalue())["token"])




class ConsoleApi:
    """The console's state route, as the page polls it (the operator's token)."""

    def __init__(self, stack: EmbeddedStack, deployment: str, token: str) -> None:
        self.url = f"{stack.api_url.rstrip('/')}/t/console/{deployment}"
        self.token = token

    def camera(self) -> dict[str, Any] | None:
        req = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        return next((c for c in doc["cameras"] if c["camera_id"] == CAMERA), None)

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float) -> tuple[float, dict[str, Any]]:
        """Polls (4 per second) until `pred` holds; returns when, and the camera row."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.camera()
            if last is not None and pred(last):
                return time.monotonic(), last
            time.sleep(0.25)
        raise AssertionError(f"console never showed it; last camera row: {last}")


def test_the_console_shows_a_dropped_camera_down_then_up_then_silent_and_nothing_outlives_the_session(
    stack: EmbeddedStack, ctx: AwsContext, admin: Admin, deployment: str, token: str, browser: Any,
    walkby: tuple[Path, set[str]], tmp_path: Path,
) -> None:
    video, _ = walkby
    rec = admin.get(deployment)
    assert rec.expires_at is not None
    api = ConsoleApi(stack, deployment, token)
    queue_url = ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]
    delivery = Delivery(ctx.client("sqs"), queue_url, Spool(tmp_path / "spool"), expires_at=rec.expires_at)
    heartbeat = CameraHeartbeat(delivery, deployment_id=deployment, camera_id=CAMERA, interval_s=INTERVAL_S)
    crops: list[CropMessage] = []

    def on_crop(msg: CropMessage, frame: Frame, det: Detection) -> None:
        crops.append(msg)

    uploader = Uploader(FaceCropper(), delivery, deployment_id=deployment, camera_id=CAMERA, on_crop=on_crop,
                        heartbeat=heartbeat)
    server = RtspServer(video, free_port())
    server.start()
    source = FrameSource(server.url)
    result: list[RunStats] = []
    runner = threading.Thread(target=lambda: result.append(uploader.run(source)), daemon=True)
    page = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True).new_page()
    row = f"#cam-{CAMERA}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        runner.start()
        started = time.monotonic()
        t_up, cam = api.wait(lambda c: c["state"] == "up" and c["status"] is not None, 60)
        assert cam["status"]["state"] == "streaming" and cam["status"]["reconnects"] == 0
        page.goto(f"{stack.api_url.rstrip('/')}/console/{deployment}#token={token}")
        page.wait_for_selector(f"{row}[data-state='up']", timeout=20_000)
        time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))  # walkers in view, crops on their way

        server.kill()  # the camera's stream stops (the RTSP server is gone: connection refused)
        t_cut = time.monotonic()
        t_down, cam = api.wait(lambda c: c["state"] == "down", 30)
        status = cam["status"]
        assert status["state"] == "reconnecting" and status["since"] and status["gap_s"] >= 0
        page.wait_for_selector(f"{row}[data-state='down']", timeout=20_000)
        text = page.inner_text(row)
        assert "down" in text and "stream lost since" in text and "reconnecting" in text  # words, not colour alone
        page.screenshot(path=str(ARTIFACTS / "console_camera_down.png"), full_page=True)

        server.start()  # it comes back
        t_restore = time.monotonic()
        t_back, cam = api.wait(lambda c: c["state"] == "up" and c["status"]["reconnects"] == 1, 60)
        gap_seen = cam["status"]["gap_s"]
        page.wait_for_selector(f"{row}[data-state='up']", timeout=20_000)
        assert "1 reconnection(s)" in page.inner_text(row)
        page.screenshot(path=str(ARTIFACTS / "console_camera_up_again.png"), full_page=True)

        source.close()  # the edge goes away altogether: no more statuses
        runner.join(30)
        t_gone = time.monotonic()
        t_silent, cam = api.wait(lambda c: c["state"] == "silent", 30)
        page.wait_for_selector(f"{row}[data-state='silent']", timeout=20_000)
        assert "no status from its edge" in page.inner_text(row)
        page.screenshot(path=str(ARTIFACTS / "console_camera_silent.png"), full_page=True)
    finally:
        page.context.close()
        source.close()
        server.kill()
        delivered = delivery.close(drain_timeout_s=5)
    (stats,) = result
    assert stats.reconnects == 1
    # The gap the console showed is the one the edge counted, within the time the stream was really down.
    assert 0 < gap_seen <= (t_back - t_cut) + 1.0 and abs(gap_seen - stats.gap_s) < 1.0
    assert delivered.status_sent >= 4 and delivered.status_failed == 0 and delivered.unaccounted == 0
    statuses = heartbeat.sent
    assert {s.state for s in statuses} == {CameraState.STREAMING, CameraState.RECONNECTING}
    print(f"\ncamera status e2e: up on the console {t_up - started:.1f} s after start; stream cut -> console "
          f"'down' in {t_down - t_cut:.1f} s; restored -> 'up' in {t_back - t_restore:.1f} s (cut to up "
          f"{t_back - t_cut:.1f} s); edge counted gap {stats.gap_s:.1f} s, console showed {gap_seen:.1f} s; edge "
          f"gone -> 'silent' in {t_silent - t_gone:.1f} s; {len(statuses)} statuses, {delivered.status_sent} sent, "
          f"{len(crops)} track messages")

    # The session ends: the camera's state goes with it, and a late status is refused, not stored.
    admin.stop(deployment, reason="camera status test done")
    closed = admin.wait_for(deployment, {DeploymentState.CLOSED}, timeout_s=300)
    assert closed.purge is not None and closed.purge.remaining == 0
    late = statuses[-1].model_copy(update={"message_id": "late-status-0001", "sent_at": utcnow()})
    assert SqsSender(ctx.client("sqs"), queue_url).send([late]).sent == 1
    _wait_queue_drained(ctx, timeout_s=120)
    ddb = ctx.client("dynamodb")
    items = [i for p in ddb.get_paginator("query").paginate(
        TableName=ctx.outputs[C.OUTPUT_ALERTS_TABLE], KeyConditionExpression="deployment_id = :d",
        ExpressionAttributeValues={":d": {"S": deployment}}) for i in p.get("Items", [])]
    assert [i["alert_id"]["S"] for i in items if i["alert_id"]["S"].startswith(("cam#", "enc#"))] == []
    # No face of the walk-by anywhere (crops of MATCHED faces may stay in the alerts bucket: none expected).
    assert crops, "the walk-by sent no track"
    jpegs = [b for m in crops for b in (m.image.to_bytes(), *(c.image.to_bytes() for c in m.more))]  # type: ignore[union-attr]
    needles = needles_for(jpegs)
    allow = ["s3://cdk-hnb659fds-assets-"] + [
        f"s3://{ctx.outputs[C.OUTPUT_ALERTS_BUCKET]}/{a.crop_key}" for a in admin.alerts_of(deployment)]
    assert scan(ctx.client, needles, [stack.log_dir], allow) == []
    # And the status path never carried one: every status is counts and times.
    for s in statuses:
        body = s.model_dump_json().encode()
        assert not any(n in body for n in needles) and set(CameraStatus.model_fields) >= set(json.loads(body))
