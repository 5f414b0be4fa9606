"""The whole path on the embedded stack: CDK template on moto, real handlers, real SFace, real faces.

One deployment is shared by the module (deploying the stack takes ~30 s): its tests run in
file order, the last ones after the session has expired.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from edge_uploader.pipeline import photo_message
from edge_uploader.sender import SqsSender
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn, _wait_queue_drained, plan_demo
from lfr_cli.local.stack import EmbeddedStack
from lfr_core.contracts import Alert, CropMessage, DeploymentState, InlineJpeg
from lfr_eval.datasets import LfwImage

pytestmark = pytest.mark.integration
SESSION_S = 45





@pytest.fixture(scope="module")
def people() -> dict[str, list[LfwImage]]:
    plan = plan_demo(seed=11, watchlist_size=6, shown=3, passers_by=4)
    return {"watchlist": plan.watchlist, "shown": plan.watchlisted_probes, "strangers": plan.passers_by}


@pytest.fixture(scope="module")
def deployment(ctx: AwsContext, people: dict[str, list[LfwImage]], tmp_path_factory: pytest.TempPathFactory) -> str:
    wl = tmp_path_factory.mktemp("watchlist")
    for img in people["watchlist"]:
        (wl / img.file).symlink_to(img.path)
    (wl / "no_face_here.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not an image")
    admin = Admin(ctx)
    rec = admin.create_authorise_start("e2e", wl, duration_s=SESSION_S)
    rec = admin.wait_for(rec.deployment_id, {DeploymentState.ACTIVE}, timeout_s=300)
    return rec.deployment_id


def crop_of(img: LfwImage, deployment_id: str) -> CropMessage:
    msg = photo_message(img.path, deployment_id=deployment_id, camera_id="cam-e2e")
    assert msg is not None, img.file
    return msg


def alerts_for(phone: PhoneStandIn, track_ids: set[str], settle_s: float = 3.0) -> list[Alert]:
    time.sleep(settle_s)
    return [a for a in phone.alerts if a.track_id in track_ids]


def test_enrolment_reports_the_file_without_a_face(ctx: AwsContext, deployment: str,
                                                  people: dict[str, list[LfwImage]]) -> None:
    rec = Admin(ctx).get(deployment)
    assert rec.watchlist_size == len(people["watchlist"])
    assert [r.file for r in rec.enrol_rejects] == ["no_face_here.jpg"]
    assert rec.enrol_rejects[0].reason


def test_watchlisted_face_yields_exactly_one_alert(ctx: AwsContext, deployment: str, phone: PhoneStandIn,
                                                   people: dict[str, list[LfwImage]]) -> None:
    probe = people["shown"][0]
    msg = crop_of(probe, deployment)
    assert SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send([msg]).sent == 1
    _wait_queue_drained(ctx, timeout_s=120)
    got = alerts_for(phone, {msg.track_id})
    assert len(got) == 1
    alert = got[0]
    assert alert.watchlist_label == probe.identity
    assert alert.deployment_id == deployment and alert.crop_message_id == msg.message_id
    assert alert.similarity >= alert.threshold
    assert alert.queue_to_publish_ms is not None and alert.queue_to_publish_ms >= 0
    stored = Admin(ctx).alerts_of(deployment)
    assert [a.alert_id for a in stored] == [alert.alert_id]


def test_stranger_yields_no_alert_and_leaves_nothing(ctx: AwsContext, deployment: str, phone: PhoneStandIn,
                                                     people: dict[str, list[LfwImage]], stack: EmbeddedStack) -> None:
    msgs = [crop_of(img, deployment) for img in people["strangers"]]
    SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send(msgs)
    _wait_queue_drained(ctx, timeout_s=120)
    assert alerts_for(phone, {m.track_id for m in msgs}) == []
    # Nothing of these faces anywhere: alerts bucket holds only the one matched crop, logs hold no crop.
    s3 = ctx.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ctx.outputs[C.OUTPUT_ALERTS_BUCKET]).get("Contents", [])]
    assert len(keys) == len(Admin(ctx).alerts_of(deployment))
    logs = "".join(p.read_text(errors="replace") for p in Path(stack.log_dir).glob("*.log"))
    for m in msgs:
        assert m.image.jpeg_b64[:64] not in logs  # type: ignore[union-attr]
        assert m.message_id not in logs


def test_bad_crops_fail_alone(ctx: AwsContext, deployment: str, phone: PhoneStandIn,
                              people: dict[str, list[LfwImage]], stack: EmbeddedStack) -> None:
    good = crop_of(people["shown"][1], deployment)
    corrupt = good.model_copy(update={"message_id": "corrupt-0001", "track_id": "t-corrupt",
                                      "image": InlineJpeg(jpeg_b64=base64.b64encode(b"\xff\xd8garbage").decode())})
    unknown = good.model_copy(update={"message_id": "unknown-0001", "track_id": "t-unknown",
                                      "deployment_id": "no-such-deployment"})
    sqs, url = ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]
    resp = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": m.message_id, "MessageBody": m.model_dump_json()} for m in (corrupt, unknown, good)])
    assert len(resp["Successful"]) == 3
    _wait_queue_drained(ctx, timeout_s=120)
    got = alerts_for(phone, {good.track_id, corrupt.track_id, unknown.track_id})
    assert [(a.track_id, a.watchlist_label) for a in got] == [(good.track_id, people["shown"][1].identity)]
    # Consumed, not retried: a retry cannot fix them and a DLQ copy would keep a face.
    dlq = sqs.receive_message(QueueUrl=ctx.outputs[C.OUTPUT_CROP_DLQ_URL], WaitTimeSeconds=1)
    assert dlq.get("Messages", []) == []
    log = stack.runtime.log_path(_match_function(stack)).read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(r.get("reason") in {"corrupt", "truncated"} for r in lines), "corrupt crop not reported"
    assert any("refused" in r.get("message", "") and r.get("deployment_id") == "no-such-deployment"
               for r in lines), "unknown deployment not reported as refused"


def _match_function(stack: EmbeddedStack) -> str:
    for name, fn in stack.runtime.discover().items():
        if fn.handler == "functions.handlers.match.handler":
            return name
    raise AssertionError("match function not deployed")


def test_after_expiry_everything_is_purged_and_late_crops_refused(
    ctx: AwsContext, deployment: str, phone: PhoneStandIn, people: dict[str, list[LfwImage]]
) -> None:
    admin = Admin(ctx)
    rec = admin.wait_for(deployment, {DeploymentState.CLOSED}, timeout_s=SESSION_S + 180)
    assert admin.objects_remaining(deployment) == 0
    assert rec.purge is not None and rec.purge.remaining == 0 and rec.purge.deleted >= len(people["watchlist"])
    before = rec.refused_crops
    late = crop_of(people["shown"][2], deployment)
    SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send([late])
    _wait_queue_drained(ctx, timeout_s=120)
    assert admin.get(deployment).refused_crops == before + 1
    assert alerts_for(phone, {late.track_id}) == []
