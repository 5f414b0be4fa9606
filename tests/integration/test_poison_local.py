"""Poison crops of every kind mixed with listed people's crops, through the embedded stack.

The real queue, event-source mapping, match function (real SFace) and DLQ: every listed track
alerts exactly once, every poison record is consumed with its reason (nothing reaches the DLQ),
and the alerts bucket holds only the listed crops.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import PhoneStandIn, _wait_queue_drained, plan_demo
from lfr_cli.local.stack import EmbeddedStack
from lfr_core.contracts import CropMessage, DeploymentState
from tests.integration.test_pipeline_e2e import alerts_for, crop_of
from tests.unit import poison

pytestmark = pytest.mark.integration
SESSION_S = 240


@pytest.fixture(scope="module")
def setup(ctx: AwsContext, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[CropMessage]]:
    plan = plan_demo(seed=11, watchlist_size=6, shown=3, passers_by=0)
    wl = tmp_path_factory.mktemp("watchlist")
    for img in plan.watchlist:
        (wl / img.file).symlink_to(img.path)
    admin = Admin(ctx)
    rec = admin.create_authorise_start("poison", wl, duration_s=SESSION_S)
    rec = admin.wait_for(rec.deployment_id, {DeploymentState.ACTIVE}, timeout_s=300)
    return rec.deployment_id, [crop_of(img, rec.deployment_id) for img in plan.watchlisted_probes]


def _log_lines(stack: EmbeddedStack) -> list[dict[str, object]]:
    for name, fn in stack.runtime.discover().items():
        if fn.handler == "functions.handlers.match.handler":
            text = Path(stack.runtime.log_path(name)).read_text()
            return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    raise AssertionError("match function not deployed")


def test_poison_never_costs_a_listed_alert_on_the_stack(
    ctx: AwsContext, setup: tuple[str, list[CropMessage]], phone: PhoneStandIn, stack: EmbeddedStack
) -> None:
    dep, listed = setup
    bodies: list[tuple[str, str]] = []
    expected: dict[str, str] = {}
    for i, (kind, (make, reason)) in enumerate(sorted(poison.POISON.items())):
        src = listed[i % len(listed)]
        doc = json.loads(src.model_dump_json())
        doc.update(message_id=f"poison{i:04d}{kind.replace('_', '')[:20]}", track_id=f"p-{kind}")
        doc["image"]["jpeg_b64"] = base64.b64encode(make(src.image.to_bytes())).decode()  # type: ignore[union-attr]
        bodies.append((doc["message_id"], json.dumps(doc)))
        expected[doc["message_id"]] = reason
    # Implausible values on a listed person's real crop (the contract's bounds).
    implausible = [("captured_at", "2999-01-01T00:00:00Z", "invalid_captured_at"),
                   ("landmarks", [["NaN", 1.0]] + [[1.0, 1.0]] * 4, "invalid_landmarks")]
    for j, (field, value, reason) in enumerate(implausible):
        doc = json.loads(listed[0].model_dump_json())
        doc.update(message_id=f"implausible{j:04d}", track_id=f"p-implausible-{j}")
        doc[field] = value
        bodies.append((doc["message_id"], json.dumps(doc).replace('"NaN"', "NaN")))
        expected[doc["message_id"]] = reason
    bodies += [(m.message_id, m.model_dump_json()) for m in listed]
    random.Random(3).shuffle(bodies)
    sqs, url = ctx.client("sqs"), ctx.outputs[C.OUTPUT_CROP_QUEUE_URL]
    for k in range(0, len(bodies), 10):
        resp = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": mid, "MessageBody": body} for mid, body in bodies[k : k + 10]])
        assert len(resp["Successful"]) == len(bodies[k : k + 10])
    _wait_queue_drained(ctx, timeout_s=180)

    tracks = {m.track_id for m in listed} | {f"p-{k}" for k in poison.POISON} | {"p-implausible-0", "p-implausible-1"}
    got = alerts_for(phone, tracks)
    assert sorted(a.track_id for a in got) == sorted(m.track_id for m in listed)  # each listed track, once
    dlq = sqs.receive_message(QueueUrl=ctx.outputs[C.OUTPUT_CROP_DLQ_URL], WaitTimeSeconds=1)
    assert dlq.get("Messages", []) == []
    s3 = ctx.client("s3")
    stored = s3.list_objects_v2(Bucket=ctx.outputs[C.OUTPUT_ALERTS_BUCKET], Prefix=f"alerts/{dep}/").get("Contents", [])
    assert len(stored) == len(listed)
    rejected_by_id = {str(r.get("sqs_message_id")): r for r in _log_lines(stack) if r.get("message") == "crop rejected"}
    reasons = sorted(str(r.get("reason")) for r in rejected_by_id.values())
    assert reasons == sorted(expected.values())
    print(f"\nstack poison: records={len(bodies)} rejected={len(reasons)} {sorted(set(reasons))} "
          f"listed={len(listed)} alerted={len(got)} dlq=0 stored={len(stored)}")
