"""The watchlist index deleted mid-session, on the embedded stack (CDK template on moto, real
handlers, real SFace, real faces): the crops are held (never consumed as healthy), the fault is
visible in `lfr deployment status`, counted as a metric in CloudWatch and audited once; restoring
the index lets the held crops match (the listed person alerts once), stopping instead leaves
nothing of any face behind.

Fault injection is the S3 object's deletion before the deployment's first crop, i.e. what a cold
match worker meets (a warm one keeps matching from its cached copy). Test-side accommodation, said
plainly: the crop queue's visibility timeout is lowered to RETRY_S so a held crop is retried within
the test's time (the template's value is 6x the match timeout); moto stores the alarms but does not
evaluate them, so alarm states are not asserted: the metric data moto's CloudWatch received is,
together with each alarm's definition, and the test evaluates the alarm's rule on that data itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from edge_uploader.pipeline import photo_message
from edge_uploader.sender import SqsSender
from functions.logic.audit_log import read_events
from functions.observability import METRIC_INDEX_MISSING, METRICS_NAMESPACE, SERVICE_DIMENSION, SERVICE_NAME
from infra import constants as C
from infra.constructs.alarms import ALARM_DLQ_DEPTH, ALARM_INDEX_MISSING, alarm_name_prefix
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn, plan_demo
from lfr_cli.leakscan import needles_for, scan
from lfr_cli.local.stack import EmbeddedStack
from lfr_cli.main import main
from lfr_core.contracts import CropMessage, DeploymentState, utcnow
from lfr_core.layout import watchlist_index_key
from lfr_eval.datasets import LfwImage

pytestmark = pytest.mark.integration
S = DeploymentState
RETRY_S = 8  # the crop queue's visibility timeout in this module (see the docstring)


@pytest.fixture(scope="module")
def people() -> dict[str, list[LfwImage]]:
    plan = plan_demo(seed=31, watchlist_size=4, shown=2, passers_by=4)
    return {"watchlist": plan.watchlist, "shown": plan.watchlisted_probes, "strangers": plan.passers_by}


@pytest.fixture(scope="module", autouse=True)
def quick_retries(ctx: AwsContext) -> Iterator[None]:
    ctx.client("sqs").set_queue_attributes(
        QueueUrl=ctx.outputs[C.OUTPUT_CROP_QUEUE_URL], Attributes={"VisibilityTimeout": str(RETRY_S)}
    )
    yield


@pytest.fixture(scope="module")
def unmatched_sent() -> list[CropMessage]:
    return []  # every crop that must not outlive its session: the leak scan's needles


def crop_of(img: LfwImage, deployment_id: str, track: str) -> CropMessage:
    msg = photo_message(img.path, deployment_id=deployment_id, camera_id="cam-index")
    assert msg is not None, img.file
    return msg.model_copy(update={"track_id": track})


def cli(stack: EmbeddedStack, *argv: str) -> tuple[int, str]:
    out = StringIO()
    with redirect_stdout(out):
        code = main(["--endpoint-url", stack.endpoint, "--region", stack.region, *argv])
    return code, out.getvalue()


def fault_events(admin: Admin, dep: str) -> list[dict[str, Any]]:
    return [e.event["details"] for e in read_events(admin.audit_store)
            if e.event["deployment_id"] == dep and e.event["action"] == "fault"]


def wait_until(what: str, check: Any, timeout_s: float, poll_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}")


def active_without_index(ctx: AwsContext, admin: Admin, watchlist_dir: Path, name: str) -> tuple[str, bytes]:
    dep = admin.create_authorise_start(name, watchlist_dir, duration_s=1800).deployment_id
    admin.wait_for(dep, {S.ACTIVE}, timeout_s=300)
    key = watchlist_index_key(dep)
    index = admin.watchlist.get_object(key)
    ctx.client("s3").delete_object(Bucket=admin.watchlist.bucket, Key=key)  # the injected fault
    assert admin.objects_remaining(dep) > 0 and admin.watchlist.count_prefix(key) == 0
    return dep, index


def test_deleted_index_holds_crops_shows_the_fault_and_a_restored_index_alerts_once(
    stack: EmbeddedStack, ctx: AwsContext, admin: Admin, watchlist_dir: Path, people: dict[str, list[LfwImage]],
    phone: PhoneStandIn, unmatched_sent: list[CropMessage],
) -> None:
    dep, index = active_without_index(ctx, admin, watchlist_dir, "index-restored")
    # Visible before any crop needs it: the status reads the object directly.
    code, out = cli(stack, "deployment", "status", dep)
    assert code == 0 and json.loads(out)["health"]["index"]["object_present"] is False

    started = utcnow()
    listed = crop_of(people["shown"][0], dep, "trk-listed")
    strangers = [crop_of(img, dep, f"trk-stranger-{i}") for i, img in enumerate(people["strangers"][:2])]
    unmatched_sent.extend(strangers)
    assert SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send([listed, *strangers]).sent == 3

    rec = wait_until("index fault on the record", lambda: admin.get(dep).index_fault, timeout_s=120)
    assert rec.reason == "missing"
    assert admin.get(dep).state == S.ACTIVE and admin.get(dep).faces_seen == 0  # held, not compared
    # Not consumed: the three crops are still in the queue (in flight, waiting for their retry).
    attrs = ctx.client("sqs").get_queue_attributes(
        QueueUrl=ctx.outputs[C.OUTPUT_CROP_QUEUE_URL],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 3

    # lfr deployment status: the fault, the ops alarms (their definitions; states are moto's) and the numbers.
    code, out = cli(stack, "deployment", "status", dep)
    assert code == 0, out
    health = json.loads(out)["health"]
    assert health["index"]["status"].startswith("missing since ") and health["index"]["object_present"] is False
    names = {a["name"] for a in health["alarms"]}
    prefix = alarm_name_prefix(stack.stack_name)
    assert prefix + ALARM_INDEX_MISSING in names and len(names) >= 8  # 7 in Alarms + the session's
    # The record's fault is written mid-invocation, the metric when the invocation's metrics flush
    # (as in CloudWatch, a moment later): wait for it rather than race it.
    wait_until("IndexMissing in the status", lambda: json.loads(cli(stack, "deployment", "status", dep)[1])
               ["health"]["metrics_in_window"][METRIC_INDEX_MISSING] >= 3, timeout_s=60)
    assert health["queues"]["crop_queue"]["waiting"] + health["queues"]["crop_queue"]["in_flight"] == 3

    # Every template alarm exists locally, watching this stack's resources and notifying the ops topic.
    cw = ctx.client("cloudwatch")
    for a in cw.describe_alarms(AlarmNames=sorted(names))["MetricAlarms"]:
        assert a["AlarmActions"] == [ctx.outputs[C.OUTPUT_ALARM_TOPIC_ARN]], a["AlarmName"]
        assert a["Dimensions"] and all(d["Value"] and "Ref" not in d["Value"] for d in a["Dimensions"]), a
    queue_name = ctx.outputs[C.OUTPUT_CROP_DLQ_URL].rsplit("/", 1)[-1]
    (dlq_alarm,) = cw.describe_alarms(AlarmNames=[prefix + ALARM_DLQ_DEPTH])["MetricAlarms"]
    assert dlq_alarm["Dimensions"] == [{"Name": "QueueName", "Value": queue_name}]

    # The metric as CloudWatch received it, and the alarm's own rule applied to it.
    (alarm,) = cw.describe_alarms(AlarmNames=[prefix + ALARM_INDEX_MISSING])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (METRICS_NAMESPACE, METRIC_INDEX_MISSING)
    assert alarm["Dimensions"] == [{"Name": SERVICE_DIMENSION, "Value": SERVICE_NAME}]
    assert alarm["AlarmActions"] == [ctx.outputs[C.OUTPUT_ALARM_TOPIC_ARN]]
    points = cw.get_metric_statistics(
        Namespace=alarm["Namespace"], MetricName=alarm["MetricName"], Dimensions=alarm["Dimensions"],
        StartTime=started - timedelta(minutes=1), EndTime=utcnow() + timedelta(minutes=1),
        Period=alarm["Period"], Statistics=[alarm["Statistic"]],
    )["Datapoints"]
    assert max(p[alarm["Statistic"]] for p in points) >= alarm["Threshold"]  # would fire
    by_reason = cw.list_metrics(Namespace=METRICS_NAMESPACE, MetricName=METRIC_INDEX_MISSING)["Metrics"]
    assert {"Name": "reason", "Value": "missing"} in [d for m in by_reason for d in m["Dimensions"]]
    (raised,) = fault_events(admin, dep)
    assert raised["fault"] == "index_missing" and raised["status"] == "raised"

    # Restored: the held crops are retried and matched; the listed person alerts exactly once.
    admin.watchlist.put_object(watchlist_index_key(dep), index)
    wait_until("the listed track's alert", lambda: [a for a in phone.alerts if a.track_id == "trk-listed"],
               timeout_s=10 * RETRY_S + 120)
    wait_until("every held crop decided", lambda: admin.get(dep).faces_seen == 3, timeout_s=4 * RETRY_S + 60)
    time.sleep(2)  # a duplicate publish would arrive by now
    assert [a.track_id for a in phone.alerts if a.deployment_id == dep] == ["trk-listed"]
    assert len(admin.alerts_of(dep)) == 1
    rec2 = admin.get(dep)
    assert rec2.index_fault is None
    assert [(e["fault"], e["status"]) for e in fault_events(admin, dep)] == [
        ("index_missing", "raised"), ("index_missing", "cleared")]
    code, out = cli(stack, "deployment", "status", dep)
    assert json.loads(out)["health"]["index"] == {"status": "ok", "fault": None, "object_present": True}
    admin.stop(dep, reason="test done")
    admin.wait_for(dep, {S.CLOSED}, timeout_s=180)


def test_deleted_index_then_stop_leaves_nothing_of_the_held_faces(
    stack: EmbeddedStack, ctx: AwsContext, admin: Admin, watchlist_dir: Path, people: dict[str, list[LfwImage]],
    unmatched_sent: list[CropMessage],
) -> None:
    dep, _ = active_without_index(ctx, admin, watchlist_dir, "index-stopped")
    held = [crop_of(people["shown"][1], dep, "trk-held-listed"),
            *(crop_of(img, dep, f"trk-held-{i}") for i, img in enumerate(people["strangers"][2:]))]
    unmatched_sent.extend(held)  # never matched (no index), so nothing of them may remain
    assert SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send(held).sent == len(held)
    wait_until("index fault on the record", lambda: admin.get(dep).index_fault, timeout_s=120)
    admin.stop(dep, reason="index lost: stop rather than repair")
    rec = admin.wait_for(dep, {S.CLOSED}, timeout_s=180)
    assert rec.index_fault is not None  # the record keeps what happened
    # Held crops come back after their visibility timeout and are refused (consumed): none is matched,
    # none waits in either queue.
    sqs = ctx.client("sqs")

    def queues_empty() -> bool:
        total = 0
        for key in (C.OUTPUT_CROP_QUEUE_URL, C.OUTPUT_CROP_DLQ_URL):
            a = sqs.get_queue_attributes(QueueUrl=ctx.outputs[key], AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            total += int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
        return total == 0

    wait_until("crop queue and DLQ empty", queues_empty, timeout_s=4 * RETRY_S + 60)
    assert admin.alerts_of(dep) == [] and admin.objects_remaining(dep) == 0
    needles = needles_for(m.image.to_bytes() for m in unmatched_sent)  # type: ignore[union-attr]
    found = scan(ctx.client, needles, [stack.log_dir], ["s3://cdk-hnb659fds-assets-"])
    assert found == []
