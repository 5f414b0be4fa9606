"""Faults a 12-hour deployment meets, injected into the embedded stack: the session survives them.

The Lambda workers reach the moto server through `FaultProxy` (their AWS_ENDPOINT_URL), which the
tests cut and restore; the tests themselves talk to moto directly, so they see the truth.
1. a live deployment survives a SIGKILLed session worker during CheckActive, DynamoDB unavailable
   for 30 s and the whole endpoint unavailable for 20 s, and then expires, is purged and closes;
2. a stop with crops in the DLQ (some in flight there) and in flight in the crop queue, with
   DynamoDB unavailable for 30 s during the purge: nothing of the deployment remains after CLOSED.
Throughout, a sampler reads the record every 0.25 s: it never is FAILED, and every state it is in
has its reason (ACTIVE before expiry, PURGING after an expiry, a stop or with a failure reason).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from edge_uploader.pipeline import photo_message
from infra import constants as C
from lfr_cli.admin import Admin
from lfr_cli.aws import AwsContext
from lfr_cli.demo import plan_demo
from lfr_cli.leakscan import needles_for, scan
from lfr_cli.local.faultproxy import FaultProxy
from lfr_cli.local.stack import EmbeddedStack
from lfr_core.contracts import CropMessage, DeploymentState, utcnow
from lfr_eval.datasets import LfwImage

pytestmark = pytest.mark.integration
S = DeploymentState
LIVE_S = 120  # the live deployment's duration: covers its three faults and their recoveries
SESSION_HANDLER = "functions.handlers.session.handler"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, proxy: FaultProxy) -> Iterator[EmbeddedStack]:
    port = _free_port()
    proxy.target = f"http://127.0.0.1:{port}"
    # Only the functions go through the proxy; the executor, pollers and this test reach moto directly.
    with EmbeddedStack(
        run_dir=tmp_path_factory.mktemp("faults"), port=port, extra_env={"AWS_ENDPOINT_URL": proxy.url}
    ) as s:
        yield s


@pytest.fixture(scope="module")
def admin(ctx: AwsContext) -> Admin:
    return Admin(ctx, actor="cli:fault-tests")


@pytest.fixture(scope="module")
def people() -> dict[str, list[LfwImage]]:
    plan = plan_demo(seed=31, watchlist_size=2, shown=0, passers_by=6)
    return {"watchlist": plan.watchlist, "strangers": plan.passers_by}


@pytest.fixture(scope="module")
def crops_sent() -> list[CropMessage]:
    return []  # every (unmatched) crop these tests put anywhere: the leak scan's needles


@dataclass
class Sampler:
    """Reads one deployment's record every 0.25 s (directly, not through the proxy)."""

    admin: Admin
    deployment_id: str
    samples: list[tuple[datetime, S, str | None, datetime | None, datetime | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            rec = self.admin.get(self.deployment_id)
            self.samples.append((utcnow(), rec.state, rec.failure_reason, rec.stopped_at, rec.expires_at))
            if rec.state == S.CLOSED:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def until_closed(self, timeout_s: float = 10) -> None:
        """Let the sampler see CLOSED itself (it ends there), so its record is complete."""
        self._thread.join(timeout_s)
        self.stop()

    def states(self) -> list[S]:
        out: list[S] = []
        for _, state, *_ in self.samples:
            if not out or out[-1] != state:
                out.append(state)
        return out

    def without_reason(self) -> list[str]:
        """Samples whose state has no reason on the record."""
        bad = []
        for at, state, reason, stopped_at, expires_at in self.samples:
            if state == S.FAILED and not reason:
                bad.append(f"{at}: FAILED without a reason")
            if state == S.PURGING and not (reason or stopped_at or (expires_at and expires_at <= at)):
                bad.append(f"{at}: PURGING with no failure reason, stop or expiry")
            if state == S.ACTIVE and expires_at is None:
                bad.append(f"{at}: ACTIVE without an expiry")
        return bad


def audit_events(admin: Admin, dep: str) -> list[dict]:
    from functions.logic.audit_log import read_events

    return [e.event for e in read_events(admin.audit_store) if e.event["deployment_id"] == dep]


def session_worker_pid(stack: EmbeddedStack) -> int | None:
    (fn,) = [f for f in stack.runtime.functions.values() if f.handler == SESSION_HANDLER]
    # A live "container" of the session function (the runtime may keep several).
    return next((w.pid for w in stack.runtime.workers(fn.name) if w.pid is not None), None)


def session_log(stack: EmbeddedStack) -> str:
    (fn,) = [f for f in stack.runtime.functions.values() if f.handler == SESSION_HANDLER]
    path = stack.runtime.log_path(fn.name)
    return path.read_text(errors="replace") if path.exists() else ""


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def fault_events(admin: Admin, dep: str, step: str) -> list[dict]:
    return [e for e in audit_events(admin, dep) if e["action"] == "fault" and e["details"].get("step") == step]


def assert_survives(admin: Admin, dep: str, objects: int, fault_s: float) -> None:
    """During the fault (and after it) the deployment stays ACTIVE with its watchlist intact."""
    end = time.monotonic() + fault_s
    while time.monotonic() < end:
        rec = admin.get(dep)
        assert rec.state == S.ACTIVE, f"{rec.state}: {rec.failure_reason}"
        assert admin.objects_remaining(dep) == objects
        time.sleep(1.0)


# -- 1. a live deployment survives three transient faults, then expires normally ----------------


@pytest.fixture(scope="module")
def live(admin: Admin, watchlist_dir: Path, stack: EmbeddedStack) -> Iterator[dict]:
    rec = admin.create_authorise_start("live-faults", watchlist_dir, duration_s=LIVE_S)
    dep = rec.deployment_id
    rec = admin.wait_for(dep, {S.ACTIVE}, timeout_s=300)
    sampler = Sampler(admin, dep)
    yield {"dep": dep, "objects": admin.objects_remaining(dep), "sampler": sampler}
    sampler.stop()


def test_a_session_worker_killed_during_check_active_is_retried(
    live: dict, admin: Admin, stack: EmbeddedStack, proxy: FaultProxy
) -> None:
    dep = live["dep"]
    # Hold CheckActive's DynamoDB read so the worker is surely inside the check when it is killed.
    proxy.fail("dynamodb", "delay", delay_s=3.0)
    try:
        wait_until(lambda: proxy.in_flight > 0, 30, "a CheckActive call in flight")
        pid = wait_until(lambda: session_worker_pid(stack), 5, "the session worker")
        os.killpg(pid, signal.SIGKILL)
    finally:
        proxy.restore()
    assert_survives(admin, dep, live["objects"], 10)
    wait_until(lambda: fault_events(admin, dep, "check"), 30, "the check to recover and audit the fault")
    fault = fault_events(admin, dep, "check")[-1]["details"]
    assert fault["retries"] >= 1 and fault["recovered"] is True


@pytest.mark.parametrize(("service", "mode", "seconds"), [("dynamodb", "503", 30), (None, "drop", 20)])
def test_b_c_dynamodb_or_endpoint_unavailable_during_check_active(
    live: dict, admin: Admin, stack: EmbeddedStack, proxy: FaultProxy, service: str | None, mode: str, seconds: int
) -> None:
    dep = live["dep"]
    before = len(fault_events(admin, dep, "check"))
    key = f"{service or '*'}:{mode}"
    hits = proxy.counts[key]
    proxy.fail(service, mode, for_s=seconds)  # type: ignore[arg-type]
    assert_survives(admin, dep, live["objects"], seconds)
    assert proxy.counts[key] > hits  # the session function did meet the fault
    wait_until(lambda: len(fault_events(admin, dep, "check")) > before, 60, "the check to recover")
    assert_survives(admin, dep, live["objects"], 2)
    fault = fault_events(admin, dep, "check")[-1]["details"]
    # Recovered in CheckAfterFault, which carries the error that outlasted CheckActive's quick retries.
    assert "TransientStorageError" in str(fault["error"]), fault
    # Visible while it lasted: the session function's error metric (EMF in its log).
    assert '"SessionStepErrors"' in session_log(stack)


def test_live_deployment_then_expires_purges_and_closes_with_a_reason_throughout(
    live: dict, admin: Admin
) -> None:
    dep, sampler = live["dep"], live["sampler"]
    rec = admin.wait_for(dep, {S.CLOSED}, timeout_s=LIVE_S + 240)
    sampler.until_closed()
    assert rec.expires_at is not None and rec.started_at is not None and rec.authorisation is not None
    # It ran its full authorised time: the end it was given at activation, not cut short by the faults.
    assert rec.expires_at == min(rec.started_at + timedelta(seconds=LIVE_S), rec.authorisation.end)
    assert rec.purge is not None and rec.purge.verified_at is not None and rec.purge.remaining == 0
    assert rec.purge.verified_at >= rec.expires_at
    assert admin.objects_remaining(dep) == 0
    assert rec.failure_reason is None
    assert S.FAILED not in sampler.states()
    states = sampler.states()
    assert states[0] == S.ACTIVE and states[-1] == S.CLOSED and set(states) <= {S.ACTIVE, S.EXPIRED, S.PURGING,
                                                                                S.CLOSED}, states
    assert sampler.without_reason() == []
    actions = [e["action"] for e in audit_events(admin, dep)]
    assert actions[-3:] == ["expire", "purge", "close"]


# -- 2. stop with crops in the DLQ and in flight; DynamoDB out during the purge -----------------


def crop(img: LfwImage, dep: str, n: int) -> CropMessage:
    msg = photo_message(img.path, deployment_id=dep, camera_id="cam-faults")
    assert msg is not None, img.file
    return msg.model_copy(update={"message_id": f"fault-{n:04d}", "track_id": f"track-{n:04d}"})


def send(sqs, url: str, m: CropMessage) -> None:
    sqs.send_message(QueueUrl=url, MessageBody=m.model_dump_json(), MessageAttributes={
        "deployment_id": {"DataType": "String", "StringValue": m.deployment_id}})


def receivable(sqs, url: str) -> list[str]:
    """Bodies receivable now (each hidden for 1 s only, so the caller's view is not disturbed much)."""
    bodies = []
    for _ in range(10):
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1,
                                   WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            break
        bodies += [m["Body"] for m in msgs]
    return bodies


@pytest.fixture(scope="module")
def stopped(admin: Admin, ctx: AwsContext, watchlist_dir: Path, people: dict[str, list[LfwImage]],
            proxy: FaultProxy, crops_sent: list[CropMessage], live: dict) -> dict:
    # One fault at a time: the live deployment has ended (closed, or failed if it did not survive).
    wait_until(lambda: admin.get(live["dep"]).state in (S.CLOSED, S.FAILED), LIVE_S + 240, "the live one to end")
    rec = admin.create_authorise_start("stop-faults", watchlist_dir, duration_s=3600)
    dep = rec.deployment_id
    admin.wait_for(dep, {S.ACTIVE}, timeout_s=300)
    sampler = Sampler(admin, dep)
    sqs = ctx.client("sqs")
    queue, dlq = ctx.outputs[C.OUTPUT_CROP_QUEUE_URL], ctx.outputs[C.OUTPUT_CROP_DLQ_URL]
    strangers = people["strangers"]
    # 20 crops of this deployment stranded in the DLQ (as after 3 failed deliveries each), 5 of
    # them in flight there (someone inspecting the DLQ) when the purge runs; one of another
    # deployment, which the purge must leave alone.
    dlq_crops = [crop(strangers[i % 5], dep, i) for i in range(20)]
    crops_sent.extend(dlq_crops)
    for m in dlq_crops:
        send(sqs, dlq, m)
    other = crop(strangers[5], "other-deployment", 99)
    send(sqs, dlq, other)
    held: list[dict] = []
    while len(held) < 5:
        for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=5 - len(held), VisibilityTimeout=15,
                                     WaitTimeSeconds=0).get("Messages", []):
            if m["Body"] == other.model_dump_json():
                sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            else:
                held.append(m)
    # 3 crops in flight in the crop queue, as if a match worker held them at the stop.
    queue_crops = [crop(strangers[i % 5], dep, 100 + i) for i in range(3)]
    crops_sent.extend(queue_crops)
    admin.stop(dep, reason="test: stop with crops left in the queues")
    for m in queue_crops:
        send(sqs, queue, m)  # refused by the match function if it sees them: the deployment is stopped
    # The purge is running: DynamoDB goes away for 30 s.
    wait_until(lambda: admin.get(dep).state == S.PURGING, 120, "the purge to start")
    hits = proxy.counts["dynamodb:503"]
    proxy.fail("dynamodb", "503", for_s=30)
    rec = admin.wait_for(dep, {S.CLOSED}, timeout_s=240)
    sampler.until_closed()
    return {"dep": dep, "rec": rec, "sampler": sampler, "other": other.model_dump_json(),
            "dynamodb_hits": proxy.counts["dynamodb:503"] - hits}


def test_d_stop_with_crops_in_dlq_and_in_flight_leaves_none_after_closed(
    stopped: dict, admin: Admin, ctx: AwsContext
) -> None:
    dep, rec = stopped["dep"], stopped["rec"]
    sqs = ctx.client("sqs")
    queue, dlq = ctx.outputs[C.OUTPUT_CROP_QUEUE_URL], ctx.outputs[C.OUTPUT_CROP_DLQ_URL]
    assert rec.purge is not None and rec.purge.verified_at is not None and rec.purge.remaining == 0
    # Per attempt in the audit log (an attempt whose record write met the outage still counts there).
    purges = [e["details"] for e in audit_events(admin, dep) if e["action"] == "purge"]
    assert sum(p["dlq_messages_deleted"] for p in purges) == 20, purges
    assert purges[-1]["verified"] is True and purges[-1]["queues_verified"] is True
    assert admin.objects_remaining(dep) == 0
    # Nothing of the deployment is receivable from either queue, now or once every hidden message
    # is visible again (the test's 15 s hold has lapsed by the time CLOSED was written).
    time.sleep(1.5)
    assert [b for b in receivable(sqs, queue) + receivable(sqs, dlq) if dep in b] == []
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessagesNotVisible"]) <= 1  # at most our own receive above
    # The other deployment's crop is still there, untouched.
    time.sleep(1.5)
    assert receivable(sqs, dlq) == [stopped["other"]]
    sqs.purge_queue(QueueUrl=dlq)  # a crop too: do not leave it to the leak scan


def test_b_dynamodb_unavailable_during_purge_is_retried_visible_and_never_reasonless(
    stopped: dict, admin: Admin, stack: EmbeddedStack
) -> None:
    dep, sampler = stopped["dep"], stopped["sampler"]
    assert stopped["dynamodb_hits"] > 0  # the purge did meet the outage
    assert S.FAILED not in sampler.states() and sampler.states()[-1] == S.CLOSED
    assert sampler.without_reason() == []
    actions = [e["action"] for e in audit_events(admin, dep)]
    assert actions[-2:] == ["purge", "close"] and "stop" in actions
    assert '"Action": "purge"' in session_log(stack) or '"Action":"purge"' in session_log(stack)


def test_nothing_of_a_face_remains_after_closed(
    stopped: dict, stack: EmbeddedStack, ctx: AwsContext, crops_sent: list[CropMessage]
) -> None:
    assert len(crops_sent) >= 20
    needles = needles_for(m.image.to_bytes() for m in crops_sent)  # type: ignore[union-attr]
    assert scan(ctx.client, needles, [stack.log_dir],
                ["s3://cdk-hnb659fds-assets-"]) == []
