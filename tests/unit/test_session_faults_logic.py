"""Session tasks under faults: reasons always recorded, transitions audited at least once, purge
verification of the queues (SQS adapter against moto, real visibility timeouts), the error metric."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.dal.sqs import SqsCropQueues
from functions.exceptions import (
    DeploymentNotActiveError,
    PurgeIncompleteError,
    TransientStorageError,
    is_transient,
)
from functions.logic.audit_log import AuditLog, read_events
from functions.logic.session import STEP_ERRORS_METRIC, SessionRequest, SessionService, handle_with_metric
from functions.observability import METRIC_PURGE_INCOMPLETE
from lfr_core.contracts import DeploymentState as S
from lfr_core.layout import watchlist_images_prefix, watchlist_index_key
from lfr_core.lifecycle import SessionAction
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryCropQueues,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import Clock, RecordingMetrics, deployment
from tests.unit.test_session_logic import authorisation

DEP = "dep-faults"


class FlakyAudit(InMemoryAuditStore):
    """An audit store whose writes fail while `down` is set."""

    down = False

    def put_new(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise TransientStorageError("audit.put: ServiceUnavailable")
        return super().put_new(*args, **kwargs)


class FlakyRepo(InMemoryDeploymentRepository):
    """A deployments table whose writes fail while `down` is set."""

    down = False

    def update(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise TransientStorageError("deployments.update: ServiceUnavailable")
        return super().update(*args, **kwargs)


@pytest.fixture
def env() -> tuple[SessionService, FlakyRepo, InMemoryObjectStore, Clock, FlakyAudit, InMemoryCropQueues]:
    repo, store, clock, audit, queues = FlakyRepo(), InMemoryObjectStore("watchlist"), Clock(), FlakyAudit(), \
        InMemoryCropQueues()
    svc = SessionService(repo, store, clock=clock, audit=AuditLog(audit, clock=clock), queues=queues,
                         alerts=InMemoryAlertRepository())
    rec = deployment(DEP, S.BUILDING, duration_s=20, index_etag='"abc"', watchlist_size=1)
    repo.create(rec.model_copy(update={"authorisation": authorisation(Clock())}))
    store.objects[watchlist_images_prefix(DEP) + "A_0001.jpg"] = b"img"
    store.objects[watchlist_index_key(DEP)] = b"idx"
    return svc, repo, store, clock, audit, queues


def actions(audit: InMemoryAuditStore) -> list[str]:
    return [e.event["action"] for e in read_events(audit) if e.event["deployment_id"] == DEP]


def test_purge_is_unverified_while_crops_may_be_in_flight_and_close_refuses(env) -> None:
    svc, repo, _store, clock, audit, queues = env
    svc.activate(DEP)
    clock.advance(30)
    svc.check(DEP)
    queues.dlq[:] = [(DEP, "crop")]
    queues.in_flight[:] = [(DEP, "held by someone")]
    with pytest.raises(PurgeIncompleteError, match="in flight"):
        svc.purge(DEP)
    rec = repo.get(DEP)
    assert rec is not None and rec.purge is not None and rec.purge.verified_at is None and rec.purge.dlq_deleted == 1
    with pytest.raises(PurgeIncompleteError):
        svc.close(DEP)
    assert read_events(audit)[-1].event["details"]["queues_verified"] is False
    queues.in_flight.clear()  # back in the queue and deleted, or consumed by its holder
    assert svc.purge(DEP).verified_at is not None
    assert svc.close(DEP).state == S.CLOSED


def test_failure_purge_writes_the_reason_with_purging_when_mark_failed_could_not(env) -> None:
    svc, repo, *_ = env
    svc.activate(DEP)
    error = {"Error": "AuthorisationError", "Cause": '{"errorMessage": "refused: no authorisation"}'}
    svc.handle(SessionRequest(action=SessionAction.PURGE, deployment_id=DEP, error=error))
    rec = repo.get(DEP)
    assert rec is not None and rec.state == S.PURGING
    assert rec.failure_reason == "AuthorisationError: refused: no authorisation"


def test_purge_after_the_window_closed_during_a_fault_records_the_expiry(env) -> None:
    svc, repo, _store, clock, audit, _ = env
    svc.activate(DEP)
    clock.advance(25)  # CheckActive never saw the expiry: the machine's window check sent it here
    svc.purge(DEP)
    rec = repo.get(DEP)
    assert rec is not None and rec.state == S.PURGING and rec.failure_reason is None
    assert actions(audit)[-2:] == ["expire", "purge"]


def test_a_failure_whose_record_write_failed_is_recorded_and_audited_on_retry(env) -> None:
    svc, repo, _store, _clock, audit, _ = env
    svc.activate(DEP)
    repo.down = True
    with pytest.raises(TransientStorageError):
        svc.fail(DEP, "BuildError: x")
    repo.down = False
    assert svc.fail(DEP, "BuildError: x").failure_reason == "BuildError: x"
    assert actions(audit).count("fail") >= 1  # at least once: audited before the write


def test_close_retried_after_an_audit_outage_is_audited(env) -> None:
    svc, repo, _store, clock, audit, _ = env
    svc.activate(DEP)
    clock.advance(30)
    svc.check(DEP)
    svc.purge(DEP)
    audit.down = True
    with pytest.raises(TransientStorageError):
        svc.close(DEP)
    assert repo.get(DEP).state == S.PURGING
    audit.down = False
    svc.close(DEP)
    assert actions(audit)[-1] == "close"


def test_expiry_retried_after_an_audit_outage_is_audited(env) -> None:
    svc, repo, _store, clock, audit, _ = env
    svc.activate(DEP)
    clock.advance(30)
    audit.down = True
    with pytest.raises(TransientStorageError):
        svc.check(DEP)
    assert repo.get(DEP).state == S.ACTIVE
    audit.down = False
    assert svc.check(DEP).active is False
    assert actions(audit)[-1] == "expire"


def test_a_recovered_check_audits_the_fault_but_an_audit_outage_does_not_block_it(env) -> None:
    svc, _repo, _store, _clock, audit, _ = env
    svc.activate(DEP)
    fault = {"Error": "TransientStorageError", "Cause": '{"errorMessage": "deployments.get: ServiceUnavailable"}'}
    out = svc.handle(SessionRequest(action=SessionAction.CHECK, deployment_id=DEP, retry_count=0, fault=fault))
    assert out["active"] is True
    event = read_events(audit)[-1].event
    assert event["action"] == "fault"
    assert event["details"] == {"step": "check", "retries": 0, "recovered": True, "state": "ACTIVE",
                                "error": "TransientStorageError: deployments.get: ServiceUnavailable"}
    audit.down = True
    assert svc.handle(SessionRequest(action=SessionAction.CHECK, deployment_id=DEP, retry_count=2))["active"] is True


def test_failed_steps_are_counted_per_action_and_re_raised(env) -> None:
    svc, repo, *_ = env
    metrics = RecordingMetrics()
    repo.down = True
    with pytest.raises(TransientStorageError):
        handle_with_metric(svc, SessionRequest(action=SessionAction.ACTIVATE, deployment_id=DEP), metrics)
    repo.down = False
    handle_with_metric(svc, SessionRequest(action=SessionAction.ACTIVATE, deployment_id=DEP), metrics)
    repo.update(DEP, {"state": "CLOSED"})
    with pytest.raises(DeploymentNotActiveError):
        handle_with_metric(svc, SessionRequest(action=SessionAction.PURGE, deployment_id=DEP), metrics)
    assert metrics.counts == {(STEP_ERRORS_METRIC, (("Action", "activate"),)): 1.0,
                              (STEP_ERRORS_METRIC, (("Action", "purge"),)): 1.0,
                              (METRIC_PURGE_INCOMPLETE, (("error", "DeploymentNotActiveError"),)): 1.0}
    assert is_transient(TransientStorageError("x")) and not is_transient(DeploymentNotActiveError("x"))


# -- the SQS adapter: drain until the queue's own counts say nothing of the deployment is left ----


@pytest.fixture
def sqs() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("sqs", region_name="eu-west-2")
        url = client.create_queue(QueueName="crops-dlq")["QueueUrl"]
        yield client, url


def _send(client: Any, url: str, dep: str, n: int) -> None:
    for i in range(n):
        client.send_message(QueueUrl=url, MessageBody=f'{{"deployment_id": "{dep}", "n": {i}}}',
                            MessageAttributes={"deployment_id": {"DataType": "String", "StringValue": dep}})


def _bodies(client: Any, url: str) -> list[str]:
    msgs = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return [m["Body"] for m in msgs]


def test_sqs_purge_waits_for_its_crops_in_flight_and_keeps_the_others(sqs) -> None:
    client, url = sqs
    _send(client, url, DEP, 12)
    _send(client, url, "other", 2)
    # 3 of ours in flight with someone else for 2 s (the old purge stopped at the first empty reply).
    held = 0
    while held < 3:
        for m in client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=2,
                                        MessageAttributeNames=["deployment_id"]).get("Messages", []):
            if m["MessageAttributes"]["deployment_id"]["StringValue"] == DEP:
                held += 1
            else:
                client.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    t0 = time.monotonic()
    result = SqsCropQueues(None, url, client=client, budget_s=10).purge_deployment(DEP)
    assert result.verified and result.dlq_deleted == 12
    assert time.monotonic() - t0 >= 1.5  # it waited for the held ones to come back
    assert sorted(_bodies(client, url)) == [f'{{"deployment_id": "other", "n": {i}}}' for i in range(2)]


def test_sqs_purge_reports_unverified_when_in_flight_messages_outlast_its_budget(sqs) -> None:
    client, url = sqs
    _send(client, url, "other", 1)
    _send(client, url, DEP, 1)
    client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)  # both held elsewhere
    result = SqsCropQueues(None, url, client=client, budget_s=2).purge_deployment(DEP)
    assert not result.verified and "2 in flight elsewhere" in result.detail
    assert result.dlq_deleted == 0


def test_an_sqs_error_during_the_purge_is_transient(sqs) -> None:
    client, url = sqs
    queues = SqsCropQueues(None, url + "-missing", client=client, budget_s=1)
    with pytest.raises(TransientStorageError):
        queues.purge_deployment(DEP)


def test_leak_scan_waits_for_messages_in_flight_and_reports_those_it_never_sees(sqs) -> None:
    from lfr_cli.leakscan import needles_for, scan

    client, url = sqs

    def clients(service: str) -> Any:
        return client if service == "sqs" else boto3.client(service, region_name="eu-west-2")  # type: ignore[call-overload]

    crop = bytes(range(256)) * 8  # stands in for a crop's bytes
    client.send_message(QueueUrl=url, MessageBody=base64.b64encode(crop).decode())
    client.receive_message(QueueUrl=url, VisibilityTimeout=2)  # in flight elsewhere for 2 s
    found = scan(clients, needles_for([crop]), in_flight_wait_s=10)
    assert "crop0:base64" in [f.kind for f in found]  # read once it came back, not missed
    client.receive_message(QueueUrl=url, VisibilityTimeout=60)  # now held for longer than the scan waits
    found = scan(clients, needles_for([crop]), in_flight_wait_s=1)
    assert [f.kind for f in found] == ["unscanned:1 message(s) in flight or delayed"]


def test_an_outage_of_the_encounter_table_during_the_purge_loses_no_deletion_from_the_audit(env) -> None:
    from tests.fakes import InMemoryAlertRepository

    svc, _repo, store, clock, audit, queues = env
    alerts = InMemoryAlertRepository()
    svc.alerts = alerts
    svc.activate(DEP)
    queues.dlq += [(DEP, f"crop{i}") for i in range(3)]
    clock.advance(30)
    alerts.fail("purge_state", TransientStorageError("alerts.purge_state: ServiceUnavailable"))
    with pytest.raises(TransientStorageError):
        svc.purge(DEP)
    svc.purge(DEP)  # the machine's retry
    purges = [e.event["details"] for e in read_events(audit) if e.event["action"] == "purge"]
    # The audit log adds up to everything deleted, whichever attempt deleted it.
    assert sum(p["dlq_messages_deleted"] for p in purges) == 3
    assert sum(p["objects_deleted"] for p in purges) == 2
    assert not store.objects and not queues.dlq


def test_a_queue_outage_after_the_watchlist_was_deleted_still_audits_the_deletion(env) -> None:
    svc, _repo, store, clock, audit, queues = env
    svc.activate(DEP)
    clock.advance(30)
    queues.fail("purge_deployment", TransientStorageError("sqs: ServiceUnavailable"))
    with pytest.raises(TransientStorageError):
        svc.purge(DEP)
    assert not store.objects  # deleted by the failed attempt
    svc.purge(DEP)
    purges = [e.event["details"] for e in read_events(audit) if e.event["action"] == "purge"]
    assert sum(p["objects_deleted"] for p in purges) == 2
    assert [p["verified"] for p in purges] == [False, True]
