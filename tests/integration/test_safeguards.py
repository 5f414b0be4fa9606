"""The safeguards on the embedded stack (CDK template on moto, real handlers, real SFace, real faces):
refusals by the session machine, purge after an early stop and after expiry (queues too), the
audit chain and the auditors' CLI, and a leak scan of everything the stack stores.

One stack for the module (~30 s to deploy); tests run in file order and share deployments.
"""

from __future__ import annotations

import json
import time
from contextlib import redirect_stdout
from datetime import timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from edge_uploader.pipeline import photo_message
from edge_uploader.sender import SqsSender
from functions.dal.audit_store import entry_key
from functions.logic.audit_log import AuditEntry
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn, _wait_queue_drained, plan_demo
from lfr_cli.leakscan import needles_for, scan
from lfr_cli.local.stack import EmbeddedStack
from lfr_cli.main import main
from lfr_core.contracts import CropMessage, DeploymentState
from lfr_eval.datasets import LfwImage

pytestmark = pytest.mark.integration
S = DeploymentState
EXPIRY_S = 20


@pytest.fixture(scope="module")
def people() -> dict[str, list[LfwImage]]:
    plan = plan_demo(seed=23, watchlist_size=4, shown=2, passers_by=4)
    return {"watchlist": plan.watchlist, "shown": plan.watchlisted_probes, "strangers": plan.passers_by}


@pytest.fixture(scope="module")
def strangers_sent() -> list[CropMessage]:
    return []  # every non-matched crop sent in this module: the leak scan's needles


def crop_of(img: LfwImage, deployment_id: str) -> CropMessage:
    msg = photo_message(img.path, deployment_id=deployment_id, camera_id="cam-safeguards")
    assert msg is not None, img.file
    return msg


def authorise(admin: Admin, dep: str, *, max_size: int, hours: float = 1.0) -> None:
    admin.authorise(
        dep, officer="Supt. Test", legitimate_aim="prevention of serious crime", necessity="wanted offenders",
        proportionality="small watchlist, short session", location="Test Square", watchlist_criteria="warrants",
        max_watchlist_size=max_size, end=None if hours == 1.0 else admin.get(dep).created_at + timedelta(hours=hours),
    )


def events(admin: Admin, dep: str) -> list[dict]:
    from functions.logic.audit_log import read_events

    return [e.event for e in read_events(admin.audit_store) if e.event["deployment_id"] == dep]


def cli(stack: EmbeddedStack, *argv: str) -> tuple[int, str]:
    out = StringIO()
    with redirect_stdout(out):
        code = main(["--endpoint-url", stack.endpoint, "--region", stack.region, *argv])
    return code, out.getvalue()


# -- 1. the machine refuses: no authorisation, too large a watchlist, too long ------------------


def test_unauthorised_oversized_and_overlong_deployments_do_not_start(admin: Admin, watchlist_dir: Path) -> None:
    n = len(list(watchlist_dir.iterdir()))
    unauthorised = admin.create_deployment("no-auth", watchlist_dir, duration_s=600).deployment_id
    oversized = admin.create_deployment("too-big", watchlist_dir, duration_s=600).deployment_id
    authorise(admin, oversized, max_size=n - 1)
    overlong = admin.create_deployment("too-long", watchlist_dir, duration_s=13 * 3600).deployment_id
    authorise(admin, overlong, max_size=n, hours=14)
    for dep in (unauthorised, oversized, overlong):
        admin.start(dep)  # the client does not check: the state machine must
    expected = {
        unauthorised: "no authorisation recorded",
        oversized: f"watchlist of {n} images exceeds the authorised maximum {n - 1}",
        overlong: "duration 46800s exceeds the maximum 43200s",
    }
    for dep, reason in expected.items():
        rec = admin.wait_for(dep, {S.FAILED}, timeout_s=120)
        assert rec.failure_reason is not None and reason in rec.failure_reason
        assert rec.started_at is None and rec.watchlist_size == 0  # never built, never active
        deadline = time.monotonic() + 60  # the fail path purges the uploaded watchlist, then audits it
        while "purge" not in [e["action"] for e in events(admin, dep)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert admin.objects_remaining(dep) == 0
        actions = [e["action"] for e in events(admin, dep)]
        assert actions[-3:] == ["refused", "fail", "purge"], actions
        assert reason in events(admin, dep)[-3]["details"]["reason"]


# -- 2. early stop: purge of prefix, index, queue and DLQ; audit; late crop refused ------------


@pytest.fixture(scope="module")
def stopped(admin: Admin, ctx: AwsContext, watchlist_dir: Path, people: dict[str, list[LfwImage]],
            phone: PhoneStandIn, strangers_sent: list[CropMessage]) -> dict:
    rec = admin.create_authorise_start("early-stop", watchlist_dir, duration_s=3600)
    dep = rec.deployment_id
    rec = admin.wait_for(dep, {S.ACTIVE}, timeout_s=300)
    sender = SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL])
    shown = crop_of(people["shown"][0], dep)
    strangers = [crop_of(img, dep) for img in people["strangers"]]
    strangers_sent.extend(strangers)
    assert sender.send([shown, *strangers]).sent == 1 + len(strangers)
    _wait_queue_drained(ctx, timeout_s=120)
    # A copy of a crop of this deployment stranded in the DLQ (as after 3 failed deliveries),
    # and one of another deployment, which purge must leave alone.
    sqs, dlq = ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_DLQ_URL]
    stranded = crop_of(people["strangers"][0], dep).model_copy(update={"message_id": "stranded-0001"})
    strangers_sent.append(stranded)
    other = stranded.model_copy(update={"deployment_id": "other-deployment", "message_id": "other-0001"})
    for m in (stranded, other):
        sqs.send_message(QueueUrl=dlq, MessageBody=m.model_dump_json(), MessageAttributes={
            "deployment_id": {"DataType": "String", "StringValue": m.deployment_id}})
    admin.stop(dep, reason="test: early stop")
    rec = admin.wait_for(dep, {S.CLOSED}, timeout_s=180)
    return {"dep": dep, "rec": rec, "other_body": other.model_dump_json()}


def test_early_stop_purges_everything_of_the_deployment(admin: Admin, ctx: AwsContext, stopped: dict) -> None:
    dep, rec = stopped["dep"], stopped["rec"]
    assert admin.objects_remaining(dep) == 0  # images, index: every version under the prefix
    assert rec.purge is not None and rec.purge.remaining == 0 and rec.purge.verified_at is not None
    assert rec.purge.dlq_deleted == 1
    assert rec.purge.verified_at - rec.stopped_at < timedelta(seconds=C.PURGE_TARGET_S)
    # The DLQ still holds the other deployment's message, and nothing of this one.
    sqs, dlq = ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_DLQ_URL]
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10,
                                                       VisibilityTimeout=0).get("Messages", [])]
    assert bodies == [stopped["other_body"]]
    sqs.purge_queue(QueueUrl=dlq)  # it is a crop too: do not leave it to the leak scan
    assert rec.faces_seen >= 4  # the watchlisted face and the strangers were compared (a count only)
    ev = events(admin, dep)
    actions = [e["action"] for e in ev]
    for a in ("create", "watchlist_change", "authorise", "start", "alert", "stop", "purge", "close"):
        assert a in actions, a
    purge = [e for e in ev if e["action"] == "purge"][-1]["details"]
    assert purge["verified"] is True and purge["objects_remaining"] == 0
    assert purge["objects_deleted"] >= rec.watchlist_size + 1 and purge["dlq_messages_deleted"] == 1
    assert [e["actor"] for e in ev if e["action"] == "authorise"] == ["cli:test-admin"]


def test_late_crop_after_stop_is_refused_and_counted(admin: Admin, ctx: AwsContext, stopped: dict,
                                                     people: dict[str, list[LfwImage]], phone: PhoneStandIn,
                                                     strangers_sent: list[CropMessage]) -> None:
    dep = stopped["dep"]
    before = admin.get(dep)
    late = crop_of(people["shown"][1], dep)
    strangers_sent.append(late)  # refused, so never matched: it must not be kept either
    SqsSender(ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]).send([late])
    _wait_queue_drained(ctx, timeout_s=60)
    after = admin.get(dep)
    assert after.refused_crops == before.refused_crops + 1
    assert after.faces_seen == before.faces_seen  # refused before any embedding
    assert [a for a in phone.alerts if a.track_id == late.track_id] == []


# -- 3. expiry: purged within the target ---------------------------------------------------------


def test_after_expiry_purged_within_target_and_audited(admin: Admin, watchlist_dir: Path) -> None:
    rec = admin.create_authorise_start("expiry", watchlist_dir, duration_s=EXPIRY_S)
    dep = rec.deployment_id
    rec = admin.wait_for(dep, {S.CLOSED}, timeout_s=EXPIRY_S + 300)
    assert admin.objects_remaining(dep) == 0
    assert rec.purge is not None and rec.purge.verified_at is not None and rec.expires_at is not None
    lag = (rec.purge.verified_at - rec.expires_at).total_seconds()
    assert 0 <= lag < C.PURGE_TARGET_S, lag
    actions = [e["action"] for e in events(admin, dep)]
    assert actions[-3:] == ["expire", "purge", "close"]


def test_stated_target_fpir_sets_the_calibrated_threshold_and_is_audited(
    admin: Admin, watchlist_dir: Path, stack: EmbeddedStack
) -> None:
    from lfr_core.calibration import shipped_table, threshold_for

    rec = admin.create_deployment("calibrated", watchlist_dir, duration_s=600, target_fpir=2e-4)
    n = len(list(watchlist_dir.iterdir()))
    assert rec.target_fpir == 2e-4 and rec.threshold == pytest.approx(threshold_for(2e-4, n))
    created = next(e for e in events(admin, rec.deployment_id) if e["action"] == "create")
    assert created["details"]["threshold"] == pytest.approx(rec.threshold)
    assert str(created["details"]["threshold_source"]).startswith("calibrated:")
    assert created["details"]["target_fpir"] == 2e-4
    # Tracks of 2 and 3 crops get the thresholds calibrated for them, recorded and audited too.
    assert rec.track_thresholds == pytest.approx([threshold_for(2e-4, n, 2), threshold_for(2e-4, n, 3)], abs=1e-6)
    assert created["details"]["track_thresholds"] == ",".join(
        f"{k}:{t}" for k, t in enumerate(rec.track_thresholds, start=2))
    assert created["details"]["fusion_mode"] == rec.fusion_mode == shipped_table().fusion_mode
    # Both at once is ambiguous: refused with a clear message, and nothing is created.
    with pytest.raises(SystemExit) as refused:
        cli(stack, "deployment", "create", "--name", "both", "--watchlist", str(watchlist_dir),
            "--duration", "10m", "--threshold", "0.6", "--target-fpir", "1e-3")
    assert refused.value.code == 2
    assert not [d for d in admin.list_deployments() if d.name == "both"]


# -- 4. leak scan: real, both ways ---------------------------------------------------------------


def test_leak_scan_finds_nothing_of_unmatched_faces_and_finds_a_plant(
    stack: EmbeddedStack, ctx: AwsContext, strangers_sent: list[CropMessage]
) -> None:
    assert len(strangers_sent) >= 5
    needles = needles_for(m.image.to_bytes() for m in strangers_sent)  # type: ignore[union-attr]
    dirs = [stack.log_dir]
    # The alerts bucket legitimately holds crops of MATCHED faces (none of the needles); the CDK
    # bootstrap bucket holds the code asset and the layer, whose model weights are float arrays.
    allow = ["s3://cdk-hnb659fds-assets-"]
    assert scan(ctx.client, needles, dirs, allow) == []
    # Plant: a stranger's crop in the alerts bucket, an embedding-like array in a table, a log line.
    jpeg = strangers_sent[0].image.to_bytes()  # type: ignore[union-attr]
    s3, ddb = ctx.client("s3"), ctx.client("dynamodb")
    bucket = ctx.outputs[C.OUTPUT_ALERTS_BUCKET]
    s3.put_object(Bucket=bucket, Key="alerts/planted/leak.jpg", Body=jpeg)
    ddb.put_item(TableName=ctx.outputs[C.OUTPUT_ALERTS_TABLE], Item={
        "deployment_id": {"S": "planted"}, "alert_id": {"S": "leak"},
        "note": {"S": json.dumps([float(x) for x in np.random.default_rng(0).normal(0, 0.09, 128)])}})
    log = stack.log_dir / "planted.log"
    log.write_text("debug " + strangers_sent[1].model_dump_json() + "\n")
    try:
        found = {(f.location, f.kind) for f in scan(ctx.client, needles, dirs, allow)}
        # (crop 0 may be reported under another index: the stranded DLQ copy is the same crop)
        assert any(loc == f"s3://{bucket}/alerts/planted/leak.jpg" and kind.endswith(":jpeg") for loc, kind in found)
        assert any(loc.startswith("dynamodb://") and kind == "float-array" for loc, kind in found)
        assert (f"file://{log}", "crop1:base64") in found
    finally:
        s3.delete_object(Bucket=bucket, Key="alerts/planted/leak.jpg")
        ddb.delete_item(TableName=ctx.outputs[C.OUTPUT_ALERTS_TABLE],
                        Key={"deployment_id": {"S": "planted"}, "alert_id": {"S": "leak"}})
        log.unlink()


# -- 5. auditors' command line; tampering detected (last: it breaks the chain) ----------------


def test_auditor_cli_events_retention_report(stack: EmbeddedStack, stopped: dict) -> None:
    code, out = cli(stack, "audit", "verify")
    assert code == 0, out
    assert "chain intact" in out
    code, out = cli(stack, "audit", "retention")
    assert code == 0 and out.strip().endswith("0 item(s) held past retention"), out
    code, out = cli(stack, "audit", "events", "--deployment", stopped["dep"])
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and {x["event"]["deployment_id"] for x in lines} == {stopped["dep"]}
    code, out = cli(stack, "audit", "report", "--format", "json")
    rows = {r["deployment_id"]: r for r in json.loads(out)}
    row = rows[stopped["dep"]]
    assert row["location"] == "local demo" and row["watchlist_size"] == stopped["rec"].watchlist_size
    assert row["faces_seen"] >= 4 and row["alerts"] >= 1
    # No officer has adjudicated: alerts are unresolved, never counted as true.
    assert row["true_alerts"] == 0 and row["unresolved_alerts"] == row["alerts"]
    code, csv_out = cli(stack, "audit", "report", "--format", "csv")
    assert csv_out.splitlines()[0].startswith("deployment_id,date,location,duration_minutes,watchlist_size")
    # The exports themselves are audited.
    code, out = cli(stack, "audit", "events", "--since", "2000-01-01")
    assert sum(1 for x in out.splitlines() if json.loads(x)["event"]["action"] == "export") >= 2


def test_tampering_is_detected_by_audit_verify(stack: EmbeddedStack, ctx: AwsContext) -> None:
    s3, bucket = ctx.client("s3"), ctx.outputs[C.OUTPUT_AUDIT_BUCKET]
    entry = AuditEntry.model_validate_json(s3.get_object(Bucket=bucket, Key=entry_key(3))["Body"].read())
    forged = entry.model_dump(mode="json")
    forged["event"]["actor"] = "someone-else"
    s3.put_object(Bucket=bucket, Key=entry_key(3), Body=json.dumps(forged).encode())
    code, out = cli(stack, "audit", "verify")
    assert code == 1
    assert "TAMPERED: entry 3: content does not match its hash (altered)" in out
    assert f"TAMPERED: {entry_key(3)}: 2 versions" in out
