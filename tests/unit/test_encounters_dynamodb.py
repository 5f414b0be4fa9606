"""Encounters on real DynamoDB conditional writes (moto server over HTTP): concurrent tracks of one
person race to ONE encounter, the window, and the state items staying out of alert listings."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from functions.dal.dynamodb import DynamoAlertRepository
from functions.logic.audit_log import AuditLog
from functions.logic.encounters import ALERTED, DUPLICATE, Encounters, encounter_alert_id, record_camera_activity
from functions.logic.match import PendingAlert
from lfr_cli.local.server import MotoServer
from lfr_core.contracts import Alert
from tests.fakes import (
    InMemoryAlertPublisher,
    InMemoryCropQueues,
    InMemoryObjectStore,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    RecordingMetrics,
    audit_log,
    create_alerts_table,
    crop_message,
    page_link,
)

EXPIRY = int(NOW.timestamp()) + 31 * 86400  # what the match function would pass for a 31-day item
DEP = "dep-enc"
ENTRY = "Jane_Doe_0001"
TABLE = "alerts-encounters-test"


@pytest.fixture(scope="module")
def ddb() -> Iterator[Any]:
    with MotoServer() as server:
        client = server.client("dynamodb")
        create_alerts_table(client, TABLE)
        yield server


@pytest.fixture
def repo(ddb: Any) -> Iterator[DynamoAlertRepository]:
    client = ddb.client("dynamodb")
    yield DynamoAlertRepository(TABLE, client)
    for page in client.get_paginator("scan").paginate(TableName=TABLE):
        for item in page.get("Items", []):
            client.delete_item(TableName=TABLE, Key={"deployment_id": item["deployment_id"],
                                                     "alert_id": item["alert_id"]})


def pending(track: str, similarity: float = 0.6, camera: str = "cam-1") -> PendingAlert:
    msg = crop_message(DEP, f"jpeg-of-{track}".encode(), track_id=track).model_copy(update={"camera_id": camera})
    return PendingAlert(message=msg, jpeg=f"jpeg-of-{track}".encode(), entry_id=ENTRY, label="Jane Doe",
                        similarity=similarity, threshold=0.5, sent_timestamp_ms=None)


def service(repo: DynamoAlertRepository, clock: Clock) -> tuple[Encounters, InMemoryAlertPublisher]:
    pub = InMemoryAlertPublisher()
    return Encounters(alerts=repo, crops=InMemoryObjectStore("alerts"), publisher=pub,
                      metrics=RecordingMetrics(), clock=clock, audit=audit_log(clock), page_link=page_link), pub


def test_concurrent_tracks_of_one_person_race_to_one_encounter(repo: DynamoAlertRepository) -> None:
    clock = Clock(NOW)
    workers = 8
    enc, pub = service(repo, clock)
    barrier = threading.Barrier(workers)
    results: list[str] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        # Each worker its own client, as separate Lambda invocations would have.
        mine = Encounters(alerts=DynamoAlertRepository(TABLE, repo._ddb.client), crops=enc.crops,
                          publisher=pub, metrics=enc.metrics, clock=clock, audit=AuditLog(enc.audit.store, clock=clock),
                          page_link=page_link)
        barrier.wait()
        try:
            results.append(mine.raise_alert(pending(f"t{i}", similarity=0.6), 120))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    (rec,) = repo.list_for_deployment(DEP)
    assert rec.alert_id == encounter_alert_id(DEP, ENTRY, NOW)
    assert rec.sightings == workers and len(rec.tracks) == workers
    pushes = [p for p, _ in pub.published if '"revision":1,' in p]
    assert len(pushes) == 1 and results.count(ALERTED) >= 1


class _OpenRace:
    """Wraps the DynamoDB client: the first time worker A is about to OPEN an encounter (its
    extend just failed: none yet), worker B's whole sighting runs first, as a concurrent
    invocation on another machine could."""

    def __init__(self, client: Any, other: Any) -> None:
        self._client, self._other, self.fired = client, other, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kw: Any) -> Any:
        if not self.fired and str(kw.get("ConditionExpression", "")).startswith("attribute_not_exists(alert_id) OR"):
            self.fired = True
            self._other()
        return self._client.update_item(**kw)


def test_the_loser_of_the_open_race_joins_the_winners_encounter(repo: DynamoAlertRepository) -> None:
    clock = Clock(NOW)
    b_enc, pub = service(repo, clock)
    b_result: list[str] = []
    raw = repo._ddb.client
    a_repo = DynamoAlertRepository(TABLE, _OpenRace(raw, lambda: b_result.append(b_enc.raise_alert(pending("b"), 120))))
    a_enc = Encounters(alerts=a_repo, crops=b_enc.crops, publisher=pub, metrics=b_enc.metrics,
                       clock=lambda: NOW + timedelta(milliseconds=5), audit=b_enc.audit, page_link=page_link)
    assert a_enc.raise_alert(pending("a", similarity=0.55), 120) == DUPLICATE  # joined, nothing new to push
    assert b_result == [ALERTED]
    (rec,) = repo.list_for_deployment(DEP)
    assert set(rec.tracks) == {"cam-1/a", "cam-1/b"} and rec.alert_id == encounter_alert_id(DEP, ENTRY, NOW)
    assert len(pub.published) == 1


class _PublishRace(InMemoryAlertPublisher):
    """The first publish runs another worker's whole sighting before it returns: a concurrent
    invocation holding another track of the person while the first is still pushing."""

    def __init__(self) -> None:
        super().__init__()
        self.during_first: Callable[[], None] | None = None

    def publish(self, alert: Alert) -> str:
        hook, self.during_first = self.during_first, None
        if hook is not None:
            hook()
        return super().publish(alert)


@pytest.mark.parametrize("camera", ["cam-1", "cam-2"])
def test_a_sighting_while_the_first_push_is_in_flight_does_not_push_it_again(
    repo: DynamoAlertRepository, camera: str,
) -> None:
    clock = Clock(NOW)
    pub = _PublishRace()
    a = Encounters(alerts=repo, crops=InMemoryObjectStore("alerts"), publisher=pub, metrics=RecordingMetrics(),
                   clock=clock, audit=audit_log(clock), page_link=page_link)
    b = Encounters(alerts=DynamoAlertRepository(TABLE, repo._ddb.client), crops=a.crops, publisher=pub,
                   metrics=a.metrics, clock=clock, audit=a.audit, page_link=page_link)
    b_result: list[str] = []
    pub.during_first = lambda: b_result.append(b.raise_alert(pending("b", camera=camera), 120))
    assert a.raise_alert(pending("a"), 120) == ALERTED
    revisions = [json.loads(p)["revision"] for p, _ in pub.published]
    (rec,) = repo.list_for_deployment(DEP)
    if camera == "cam-1":  # nothing new for the officer: the push in flight is the only one
        assert b_result == [DUPLICATE] and revisions == [1]
    else:  # another camera: one silent update (revision 2), and the first push not repeated
        assert b_result == [ALERTED] and sorted(revisions) == [1, 2]
    assert rec.published_at is not None and rec.revision == max(revisions) and rec.sightings == 2


def test_a_revision_published_late_does_not_mark_a_newer_one_published(repo: DynamoAlertRepository) -> None:
    enc, _ = service(repo, Clock(NOW))
    enc.raise_alert(pending("t1"), 120)
    alert_id = encounter_alert_id(DEP, ENTRY, NOW)
    assert repo.bump_revision(DEP, alert_id, 1)  # another camera's sighting: revision 2 to push
    repo.mark_published(DEP, alert_id, 1, NOW, None)  # the revision-1 push's late bookkeeping
    rec = repo.get(DEP, alert_id)
    assert rec is not None and rec.revision == 2 and rec.published_at is None


def test_window_runs_from_the_last_sighting_and_then_a_new_encounter(repo: DynamoAlertRepository) -> None:
    e1 = repo.sight_encounter(DEP, ENTRY, NOW, 120, 0)
    e2 = repo.sight_encounter(DEP, ENTRY, NOW + timedelta(seconds=119), 120, 0)
    e3 = repo.sight_encounter(DEP, ENTRY, NOW + timedelta(seconds=238), 120, 0)
    e4 = repo.sight_encounter(DEP, ENTRY, NOW + timedelta(seconds=359), 120, 0)
    assert e1.opened and not e2.opened and not e3.opened and e4.opened
    assert e1.opened_at == e2.opened_at == e3.opened_at == NOW and e4.opened_at == NOW + timedelta(seconds=359)
    other = repo.sight_encounter(DEP, "Someone_Else_0001", NOW + timedelta(seconds=1), 120, 0)
    assert other.opened


def test_sighting_is_idempotent_and_decided_encounters_stay_put(repo: DynamoAlertRepository) -> None:
    clock = Clock(NOW)
    enc, pub = service(repo, clock)
    first = pending("t1", similarity=0.6, camera="cam-a")
    assert enc.raise_alert(first, 120) == ALERTED
    alert_id = encounter_alert_id(DEP, ENTRY, NOW)
    for _ in range(2):  # redelivery: the set add changes nothing
        repo.add_sighting(DEP, alert_id, "cam-b", "cam-b/t2", NOW)
    (rec,) = repo.list_for_deployment(DEP)
    assert rec.sightings == 2 and rec.cameras == ("cam-a", "cam-b")
    assert repo.set_decision(DEP, alert_id, "not_a_match", "officer:x", NOW)
    assert not repo.improve(DEP, alert_id, {"track_id": "t9"}, 0.99)
    assert not repo.bump_revision(DEP, alert_id, rec.revision)
    clock.advance(10)
    assert enc.raise_alert(pending("t3", similarity=0.9, camera="cam-c"), 120) == DUPLICATE
    (after,) = repo.list_for_deployment(DEP)
    assert after.revision == 1 and after.similarity == 0.6 and after.sightings == 3 and len(pub.published) == 1


def test_camera_activity_is_one_counter_update_per_camera(repo: DynamoAlertRepository) -> None:
    sent = int(NOW.timestamp() * 1000) - 1500
    record_camera_activity(repo, [(DEP, "cam-a", sent), (DEP, "cam-a", sent + 1000), (DEP, "cam-b", None)],
                           NOW, lambda _: EXPIRY)
    record_camera_activity(repo, [(DEP, "cam-a", None)], NOW + timedelta(seconds=61), lambda _: EXPIRY)
    a, b = repo.camera_activity(DEP)
    assert (a.camera_id, a.messages, b.camera_id, b.messages) == ("cam-a", 3, "cam-b", 1)
    minute = int(NOW.timestamp()) // 60
    assert a.per_minute == {minute: 2, minute + 1: 1} and a.queue_lag_ms == 1500.0
    assert a.last_seen == NOW + timedelta(seconds=61)
    assert repo.list_for_deployment(DEP) == []  # state items are not alerts


def test_purge_of_the_deployment_deletes_its_encounter_state_not_its_alerts(repo: DynamoAlertRepository) -> None:
    from functions.logic.audit_log import read_events
    from functions.logic.session import SessionService
    from lfr_core.contracts import AuditAction, DeploymentState
    from tests.fakes import InMemoryAuditStore, InMemoryDeploymentRepository
    from tests.unit.functions_support import deployment

    enc, _ = service(repo, Clock(NOW))
    enc.raise_alert(pending("t1"), 120)
    repo.sight_encounter("dep-other", ENTRY, NOW, 120, 0)
    record_camera_activity(repo, [(DEP, "cam-1", None)], NOW, lambda _: EXPIRY)
    deps = InMemoryDeploymentRepository()
    deps.create(deployment(DEP, DeploymentState.EXPIRED))
    audit = InMemoryAuditStore()
    svc = SessionService(deps, InMemoryObjectStore("watchlist"), clock=Clock(NOW), audit=AuditLog(audit), alerts=repo,
                         queues=InMemoryCropQueues())
    svc.purge(DEP)
    client = repo._ddb.client
    keys = {(i["deployment_id"]["S"], i["alert_id"]["S"]) for i in client.scan(TableName=TABLE)["Items"]}
    assert keys == {(DEP, encounter_alert_id(DEP, ENTRY, NOW)), ("dep-other", f"enc#{ENTRY}")}
    (purge,) = [e.parsed_event() for e in read_events(audit) if e.parsed_event().action == AuditAction.PURGE]
    assert purge.details["encounter_state_deleted"] == 2
