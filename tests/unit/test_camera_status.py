"""Camera status: the edge's heartbeat through the contract, the match function's routing, the store,
and the van's console states (up / down / silent, crop activity for cameras without one), on a fake
clock. The real handler runs the records; the model is never needed (a status reaching it fails)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge_uploader.delivery import DeliveryStats
from edge_uploader.sources import SourceStatus
from edge_uploader.status import CameraHeartbeat
from functions.handlers import match as match_handler
from functions.logic.console import CAMERA_DOWN_AFTER_S, camera_view
from functions.logic.encounters import record_camera_activity
from functions.logic.match import MatchService
from functions.models.records import CameraActivity, LastCameraStatus
from functions.observability import METRIC_CROPS_REFUSED, METRIC_CROPS_REJECTED
from lfr_core.contracts import (
    CAMERA_STATUS_KIND,
    MAX_STATUS_AGE,
    CameraState,
    CameraStatus,
    DeploymentState,
    rejection_reason,
    validation_context,
)
from tests.fakes import (
    InMemoryAlertPublisher,
    InMemoryAlertRepository,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    RecordingMetrics,
    audit_log,
    create_alerts_table,
    crop_message,
    deployment,
    lambda_context,
    page_link,
    sqs_record,
)

DEP, ENDED = "dep-live", "dep-ended"
EXPIRY = int(NOW.timestamp()) + 31 * 86400  # what the match function would pass for a 31-day item
TABLE = "alerts-camera-status-test"


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    """A moto server (over HTTP) with an alerts table shaped like the stack's."""
    from lfr_cli.local.server import MotoServer

    with MotoServer() as server:
        create_alerts_table(server.client("dynamodb"), TABLE)
        yield server


def status(**kw: Any) -> CameraStatus:
    base: dict[str, Any] = dict(deployment_id=DEP, camera_id="cam-1", sent_at=NOW, state=CameraState.STREAMING,
                                since=NOW - timedelta(minutes=5), interval_s=15.0, frames=150, gap_s=0.0,
                                reconnects=0, spool_depth=0)
    return CameraStatus(**{**base, **kw})


# -- the contract -------------------------------------------------------------------------------------


def test_the_contract_round_trips_and_holds_nothing_but_counts_and_times() -> None:
    st = status(state=CameraState.RECONNECTING, since=NOW - timedelta(seconds=4), gap_s=4.0, reconnects=2)
    again = CameraStatus.model_validate_json(st.model_dump_json(), context=validation_context(NOW))
    assert again == st and json.loads(st.model_dump_json())["kind"] == CAMERA_STATUS_KIND
    # No field could carry an image or an embedding: ids, times, an enum, bounded numbers.
    assert set(CameraStatus.model_fields) == {
        "schema_version", "kind", "message_id", "deployment_id", "camera_id", "sent_at", "state", "since",
        "interval_s", "frames", "gap_s", "reconnects", "spool_depth"}


@pytest.mark.parametrize(("change", "reason"), [
    ({"image": "/9j/4AAQ"}, "invalid_message"),  # no field for a crop: refused, not ignored
    ({"embedding": [0.1] * 128}, "invalid_message"),
    ({"frames": -1}, "invalid_frames"),
    ({"frames": 10**12}, "invalid_frames"),
    ({"gap_s": "NaN"}, "invalid_gap_s"),
    ({"interval_s": 0.01}, "invalid_interval_s"),
    ({"interval_s": 3600}, "invalid_interval_s"),
    ({"state": "on_fire"}, "invalid_state"),
    ({"sent_at": (NOW + timedelta(minutes=10)).isoformat()}, "invalid_sent_at"),
    ({"sent_at": (NOW - MAX_STATUS_AGE - timedelta(seconds=1)).isoformat()}, "invalid_sent_at"),
    ({"since": (NOW + timedelta(seconds=1)).isoformat()}, "invalid_since"),
    ({"camera_id": "cam/../../x"}, "invalid_camera_id"),
    ({"kind": "crop"}, "invalid_kind"),
])
def test_the_contract_rejects_with_a_reason_tag(change: dict[str, Any], reason: str) -> None:
    doc = {**json.loads(status().model_dump_json()), **change}
    with pytest.raises(ValidationError) as exc:
        CameraStatus.model_validate_json(json.dumps(doc), context=validation_context(NOW))
    assert rejection_reason(exc.value, CameraStatus) == reason


# -- the match function routes it ---------------------------------------------------------------------


class NoModel:
    """A status must never reach the model."""

    def embed(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        raise AssertionError("a camera status reached the embedder")


class World:
    def __init__(self) -> None:
        self.clock = Clock(NOW)
        self.deployments = InMemoryDeploymentRepository()
        self.deployments.create(deployment(DEP))
        self.deployments.create(deployment(ENDED, state=DeploymentState.CLOSED))
        self.alerts = InMemoryAlertRepository()
        self.metrics = RecordingMetrics()
        self.service = MatchService(
            deployments=self.deployments, alerts=self.alerts, watchlists=InMemoryObjectStore("watchlist"),
            crops=InMemoryObjectStore("alerts"), publisher=InMemoryAlertPublisher(), embedder=NoModel(),
            metrics=self.metrics, clock=self.clock, audit=audit_log(self.clock), page_links=page_link,
        )

    def send(self, *bodies: tuple[str, str, bool]) -> list[str]:
        """(sqs id, body, marked as a status); returns the batch item failures."""
        records = []
        for sqs_id, body, marked in bodies:
            rec = sqs_record(sqs_id, body, self.clock())
            if marked:
                rec["messageAttributes"] = {"kind": {"stringValue": CAMERA_STATUS_KIND, "dataType": "String"}}
            records.append(rec)
        resp = match_handler.handler({"Records": records}, lambda_context())
        return [f["itemIdentifier"] for f in resp["batchItemFailures"]]

    def camera(self, camera_id: str = "cam-1") -> CameraActivity:
        return next(c for c in self.alerts.camera_activity(DEP) if c.camera_id == camera_id)


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    match_handler.set_service(w.service)
    yield w
    match_handler.set_service(None)


def test_a_status_is_stored_as_the_cameras_last_and_an_older_one_never_overwrites_it(world: World) -> None:
    first = status(sent_at=NOW - timedelta(seconds=2))
    down = status(sent_at=NOW - timedelta(seconds=1), state=CameraState.RECONNECTING, since=NOW - timedelta(seconds=1),
                  gap_s=1.0, spool_depth=3)
    assert world.send(("s1", down.model_dump_json(), True), ("s2", first.model_dump_json(), True)) == []
    cam = world.camera()
    assert cam.status is not None and cam.status.state == CameraState.RECONNECTING
    assert (cam.status.sent_at, cam.status.received_at, cam.status.spool_depth) == (down.sent_at, NOW, 3)
    assert cam.last_seen is None and cam.messages == 0  # a status is not a crop message
    # Its item expires an hour after the session, not with the 31-day alert retention.
    dep = world.deployments.get(DEP)
    assert dep is not None and dep.expires_at is not None
    expiry = world.alerts.activity[(DEP, "cam#cam-1")]["expires_at_epoch"]
    assert expiry == int(dep.expires_at.timestamp()) + 3600
    assert world.metrics.total("CropsReceived") == 0 and world.metrics.total(METRIC_CROPS_REJECTED) == 0


def test_a_crop_messages_camera_counts_also_expire_an_hour_after_the_session(world: World) -> None:
    """The camera item a crop message updates (counts, last seen, queue lag) holds no face, but it is
    the session's: should it be written just after the purge, it must not outlive the session by
    the 31-day alert retention."""
    msg = crop_message(DEP, b"\xff\xd8 not a real jpeg \xff\xd9")
    world.send(("c1", msg.model_dump_json(), False))  # the crop itself is rejected: that is not the point
    cam = world.camera()
    assert cam.messages == 1
    dep = world.deployments.get(DEP)
    assert dep is not None and dep.expires_at is not None
    assert world.alerts.activity[(DEP, "cam#cam-1")]["expires_at_epoch"] == int(dep.expires_at.timestamp()) + 3600


def test_malformed_misrouted_and_late_statuses_are_consumed_with_a_reason(world: World) -> None:
    bad = json.loads(status().model_dump_json()) | {"frames": -5}
    late = status(deployment_id=ENDED)
    unknown = status(deployment_id="no-such-dep")
    failures = world.send(
        ("bad", json.dumps(bad), True),
        ("unmarked", status().model_dump_json(), False),  # a status body without the attribute: not a crop either
        ("late", late.model_dump_json(), True),
        ("unknown", unknown.model_dump_json(), True),
        ("not-json", "{", True),
    )
    assert failures == []  # consumed: retrying cannot make them valid
    rejected = {dict(k[1]).get("reason"): v for k, v in world.metrics.counts.items() if k[0] == METRIC_CROPS_REJECTED}
    assert rejected == {"status_invalid_frames": 1, "invalid_message": 1, "status_invalid_message": 1}
    assert world.metrics.total("CameraStatusRefused") == 2
    # Refused like a late crop, but not counted as a refused crop: a status holds no face.
    assert world.metrics.total(METRIC_CROPS_REFUSED) == 0
    ended = world.deployments.get(ENDED)
    assert ended is not None and ended.refused_crops == 0
    assert world.alerts.activity == {}  # nothing stored for any of them


def test_a_transient_store_error_retries_only_the_status(world: World) -> None:
    from functions.exceptions import TransientStorageError

    world.alerts.fail("record_camera_status", TransientStorageError("ddb down"))
    assert world.send(("s1", status().model_dump_json(), True)) == ["s1"]
    assert world.send(("s1", status().model_dump_json(), True)) == []
    assert world.camera().status is not None


def test_the_session_purge_deletes_the_status_with_the_cameras_activity(world: World) -> None:
    world.send(("s1", status().model_dump_json(), True))
    record_camera_activity(world.alerts, [(DEP, "cam-2", None)], NOW, lambda _: EXPIRY)
    assert world.alerts.purge_state(DEP) == 2
    assert world.alerts.camera_activity(DEP) == []


# -- the console's view of it ---------------------------------------------------------------------------


def _cam(st: LastCameraStatus | None, last_seen: datetime | None = None) -> CameraActivity:
    return CameraActivity(camera_id="cam-1", last_seen=last_seen, status=st)


def _last(state: CameraState, sent: datetime, since: datetime, gap_s: float = 0.0, reconnects: int = 0,
          interval_s: float = 15.0) -> LastCameraStatus:
    return LastCameraStatus(state=state, since=since, sent_at=sent, received_at=sent, interval_s=interval_s,
                            gap_s=gap_s, reconnects=reconnects)


def test_console_states_follow_the_last_status_on_a_fake_clock() -> None:
    clock = Clock(NOW)
    streaming = _last(CameraState.STREAMING, NOW, NOW - timedelta(minutes=10))
    view = camera_view(_cam(streaming), clock())
    assert (view["state"], view["up"], view["last_seen"]) == ("up", True, None)  # streams, no face yet: up
    clock.advance(3 * 15)  # three intervals: still within
    assert camera_view(_cam(streaming), clock())["state"] == "up"
    clock.advance(1)
    silent = camera_view(_cam(streaming), clock())
    assert (silent["state"], silent["up"], silent["status"]["seconds_since_status"]) == ("silent", False, 46.0)

    lost_at = NOW + timedelta(seconds=100)
    down = _last(CameraState.RECONNECTING, lost_at + timedelta(seconds=1), lost_at, gap_s=1.0)
    clock.now = lost_at + timedelta(seconds=11)
    view = camera_view(_cam(down), clock())
    assert view["state"] == "down" and not view["up"]
    # Since when, and the gap as it grows between statuses (1 s when sent, 10 s later now).
    assert view["status"]["since"] == lost_at.isoformat() and view["status"]["gap_s"] == 11.0
    clock.advance(50)  # no status for > 3 intervals while down: the edge itself is gone now
    assert camera_view(_cam(down), clock())["state"] == "silent"

    back = _last(CameraState.STREAMING, clock(), clock() - timedelta(seconds=1), gap_s=12.5, reconnects=1)
    view = camera_view(_cam(back), clock())
    assert view["state"] == "up" and view["status"]["reconnects"] == 1 and view["status"]["gap_s"] == 12.5


def test_console_falls_back_to_crop_activity_without_a_status() -> None:
    seen = NOW - timedelta(seconds=10)
    assert camera_view(_cam(None, seen), NOW)["state"] == "up"
    quiet = camera_view(_cam(None, seen), seen + timedelta(seconds=CAMERA_DOWN_AFTER_S))
    assert (quiet["state"], quiet["up"], quiet["status"]) == ("quiet", False, None)


# -- the edge's heartbeat ---------------------------------------------------------------------------------


class StatusList:
    def __init__(self) -> None:
        self.statuses: list[CameraStatus] = []

    def submit_status(self, st: CameraStatus) -> None:
        self.statuses.append(st)

    def stats(self) -> DeliveryStats | None:
        return DeliveryStats(sent=0, queued=0, spooled=4, in_spool=4, expired=0, refused_after_expiry=0, failed=0,
                             link_up=False)


def test_heartbeat_on_every_state_change_and_every_interval() -> None:
    from lfr_core.contracts import utcnow

    t = [0.0]
    sink = StatusList()
    hb = CameraHeartbeat(sink, deployment_id=DEP, camera_id="cam-1", interval_s=2.0, monotonic=lambda: t[0])
    start = utcnow() - timedelta(seconds=30)
    up = SourceStatus(up=True, since=start, reconnects=0, gap_s=0.0, last_frame_at=None)
    assert hb.tick(up, 10) is not None  # the first pass: the console learns the camera is up at once
    t[0] = 1.9
    assert hb.tick(up, 25) is None  # not due, nothing changed
    t[0] = 2.0
    due = hb.tick(up, 30)
    assert due is not None and due.frames == 20 and due.state == CameraState.STREAMING and due.spool_depth == 4
    t[0] = 2.5  # the stream drops: sent at once, not at the next interval
    lost = utcnow() - timedelta(seconds=1)
    down = hb.tick(SourceStatus(up=False, since=lost, reconnects=0, gap_s=1.0, last_frame_at=None), 30)
    assert down is not None and down.state == CameraState.RECONNECTING and down.since == lost
    assert 1.0 <= down.gap_s < 5.0 and down.frames == 0
    t[0] = 3.0  # and back: at once again, with the gap it had
    back = hb.tick(SourceStatus(up=True, since=utcnow(), reconnects=1, gap_s=3.0, last_frame_at=None,
                                last_gap_s=3.0), 31)
    assert back is not None and back.state == CameraState.STREAMING and (back.reconnects, back.gap_s) == (1, 3.0)
    assert [s.state for s in sink.statuses] == ["streaming", "streaming", "reconnecting", "streaming"]


# -- the store on real DynamoDB conditional writes (moto server) ------------------------------------------


def test_dynamodb_keeps_the_newest_status_beside_the_activity_and_purges_both(ddb: Any) -> None:
    from functions.dal.dynamodb import DynamoAlertRepository

    repo = DynamoAlertRepository(TABLE, ddb.client("dynamodb"))
    newer = _last(CameraState.RECONNECTING, NOW, NOW - timedelta(seconds=3), gap_s=3.0, reconnects=1)
    older = _last(CameraState.STREAMING, NOW - timedelta(seconds=5), NOW - timedelta(minutes=1))
    record_camera_activity(repo, [(DEP, "cam-1", None)], NOW - timedelta(seconds=30), lambda _: EXPIRY)
    assert repo.record_camera_status(DEP, "cam-1", newer, 2_000_000_000)
    assert not repo.record_camera_status(DEP, "cam-1", older, 2_000_000_000)  # delivered late: not stored
    assert not repo.record_camera_status(DEP, "cam-1", newer, 2_000_000_000)  # a redelivery: no change
    assert repo.record_camera_status(DEP, "cam-2", older, 2_000_000_000)  # a camera with a status only
    one, two = repo.camera_activity(DEP)
    assert (one.camera_id, one.messages, one.status) == ("cam-1", 1, newer)
    assert (two.camera_id, two.last_seen, two.messages, two.status) == ("cam-2", None, 0, older)
    assert repo.list_for_deployment(DEP) == []  # not alerts
    assert repo.purge_state(DEP) == 2 and repo.camera_activity(DEP) == []


# -- the edge's delivery: the same queue and sender, the newest status only, never the spool ---------------


def _settle(cond: Any, timeout_s: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_delivery_sends_a_status_with_its_kind_on_the_crop_queue(ddb: Any, tmp_path: Any) -> None:
    from edge_uploader.delivery import Delivery
    from edge_uploader.spool import Spool
    from lfr_core.contracts import utcnow

    sqs = ddb.client("sqs")
    url = sqs.create_queue(QueueName="crops-status")["QueueUrl"]
    delivery = Delivery(sqs, url, Spool(tmp_path / "spool"))
    st = status(sent_at=utcnow(), since=utcnow() - timedelta(seconds=5))
    delivery.submit_status(st)
    _settle(lambda: delivery.stats().status_sent == 1)
    final = delivery.close(drain_timeout_s=0.5)
    assert (final.status_sent, final.submitted, final.sent, final.unaccounted) == (1, 0, 0, 0)  # not a crop
    (msg,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"]).get("Messages", [])
    assert msg["MessageAttributes"]["kind"]["StringValue"] == CAMERA_STATUS_KIND
    assert msg["MessageAttributes"]["deployment_id"]["StringValue"] == DEP
    assert CameraStatus.model_validate_json(msg["Body"]) == st


def test_with_the_link_down_only_the_newest_status_waits_in_memory_and_an_old_one_is_dropped(tmp_path: Any) -> None:
    """A real refused connection (nothing listens on port 9)."""
    from edge_uploader.delivery import Delivery
    from edge_uploader.spool import Spool
    from lfr_cli.local.server import make_client
    from lfr_core.contracts import utcnow

    client = make_client("sqs", "http://127.0.0.1:9", connect_timeout=1, read_timeout=1)
    delivery = Delivery(client, "http://127.0.0.1:9/123456789012/crops", Spool(tmp_path / "spool"),
                        probe_interval_s=0.2, max_attempts=1, base_delay_s=0.01)
    for n in range(3):
        delivery.submit_status(status(sent_at=utcnow(), since=utcnow() - timedelta(seconds=5), frames=n))
    _settle(lambda: not delivery.stats().link_up)
    st = delivery.stats()
    assert st.status_pending and st.status_superseded >= 2 and st.status_sent == 0 and st.in_spool == 0
    assert list((tmp_path / "spool").iterdir()) == []  # a status is never written to disk
    # Older than 3 of its intervals: the console already shows the edge silent; dropped, not replayed.
    delivery.submit_status(status(sent_at=utcnow() - timedelta(seconds=2), since=utcnow() - timedelta(seconds=9),
                                  interval_s=0.5))
    _settle(lambda: delivery.stats().status_expired == 1)
    st = delivery.stats()
    assert (st.status_expired, st.status_pending, st.status_sent) == (1, False, 0)
    delivery.close(drain_timeout_s=0.2)


def test_the_status_interval_is_a_bounded_setting_of_the_van(tmp_path: Any) -> None:
    from edge_uploader.cli import _config, _parser
    from edge_uploader.config import EdgeConfig
    from edge_uploader.status import STATUS_INTERVAL_S

    base = ["run", "--deployment", DEP, "--source", "rtsp://127.0.0.1/x", "--queue-url", "http://q"]
    assert _config(_parser().parse_args(base)).status_interval_s == STATUS_INTERVAL_S == 15.0
    assert _config(_parser().parse_args([*base, "--status-every", "2"])).status_interval_s == 2.0
    toml = tmp_path / "van.toml"
    toml.write_text("status_interval_s = 30.0\n")
    assert EdgeConfig.load(toml, {}).status_interval_s == 30.0
    for bad in ("0.1", "3600"):
        with pytest.raises(ValidationError):
            _config(_parser().parse_args([*base, "--status-every", bad]))
