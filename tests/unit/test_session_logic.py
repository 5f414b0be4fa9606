"""Session tasks over in-memory adapters: authorisation, transitions, expiry, purge verification, audit."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from functions.exceptions import (
    AuthorisationError,
    DeploymentNotFoundError,
    PurgeIncompleteError,
    UnknownActionError,
    WatchlistNotBuiltError,
)
from functions.handlers import session as session_handler
from functions.logic.audit_log import AuditLog, read_events, verify_chain
from functions.logic.session import SessionRequest, SessionService
from functions.models.records import Authorisation
from lfr_core.contracts import DeploymentState as S
from lfr_core.layout import deployment_prefix, watchlist_images_prefix, watchlist_index_key
from lfr_core.lifecycle import SessionAction
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryCropQueues,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import Clock, deployment, lambda_context

DEP = "dep-session"


AUDIT = InMemoryAuditStore()
QUEUES = InMemoryCropQueues()


@pytest.fixture
def env() -> tuple[SessionService, InMemoryDeploymentRepository, InMemoryObjectStore, Clock]:
    global AUDIT, QUEUES
    repo = InMemoryDeploymentRepository()
    store = InMemoryObjectStore("watchlist")
    clock = Clock()
    AUDIT, QUEUES = InMemoryAuditStore(), InMemoryCropQueues()
    svc = SessionService(repo, store, clock=clock, audit=AuditLog(AUDIT, clock=clock), queues=QUEUES,
                         alerts=InMemoryAlertRepository())
    return svc, repo, store, clock


def authorisation(clock: Clock, max_size: int = 5, hours: float = 4) -> Authorisation:
    return Authorisation(
        authorising_officer="Supt A. Example",
        legitimate_aim="prevention of serious crime",
        necessity="wanted offenders believed to frequent the area",
        proportionality="bounded watchlist, 4 h, signed cameras",
        location="Oxford Circus, W1",
        start=clock.now,
        end=clock.now + timedelta(hours=hours),
        watchlist_criteria="wanted for serious violence, warrant issued",
        max_watchlist_size=max_size,
        authorised_at=clock.now,
    )


def _built(repo: InMemoryDeploymentRepository, store: InMemoryObjectStore, duration_s: int = 20) -> None:
    rec = deployment(DEP, S.BUILDING, duration_s=duration_s, index_etag='"abc"', watchlist_size=2)
    repo.create(rec.model_copy(update={"authorisation": authorisation(Clock())}))
    store.objects[watchlist_images_prefix(DEP) + "A_0001.jpg"] = b"img"
    store.objects[watchlist_index_key(DEP)] = b"idx"


def test_activate_sets_active_and_expiry(env) -> None:
    svc, repo, store, clock = env
    _built(repo, store, duration_s=20)
    rec = svc.activate(DEP)
    assert rec.state == S.ACTIVE
    assert rec.started_at == clock.now
    assert rec.expires_at == clock.now + timedelta(seconds=20)
    assert svc.activate(DEP).started_at == rec.started_at  # a retry changes nothing


def test_activate_refuses_unbuilt(env) -> None:
    svc, repo, _, _ = env
    repo.create(deployment(DEP, S.PENDING))
    with pytest.raises(WatchlistNotBuiltError):
        svc.activate(DEP)
    assert repo.get(DEP).state == S.PENDING


def test_check_counts_down_then_expires(env) -> None:
    svc, repo, store, clock = env
    _built(repo, store, duration_s=12)
    svc.activate(DEP)
    r = svc.check(DEP)
    assert (r.active, r.wait_s) == (True, 5)
    clock.advance(10)
    r = svc.check(DEP)
    assert (r.active, r.wait_s) == (True, 2)
    clock.advance(1.9)
    assert svc.check(DEP).wait_s == 1  # never 0: a Wait of 0 s would spin
    clock.advance(0.1)
    r = svc.check(DEP)
    assert r.active is False
    assert repo.get(DEP).state == S.EXPIRED


def test_check_stopped_is_inactive(env) -> None:
    svc, repo, store, _ = env
    _built(repo, store)
    svc.activate(DEP)
    repo.update(DEP, {"state": "STOPPED"})
    r = svc.check(DEP)
    assert r.active is False and r.wait_s >= 1
    assert repo.get(DEP).state == S.STOPPED


def test_purge_deletes_verifies_and_close(env) -> None:
    svc, repo, store, clock = env
    _built(repo, store)
    store.objects["deployments/other-dep/watchlist/index.npz"] = b"keep"
    repo.update(DEP, {"state": "EXPIRED"})
    result = svc.purge(DEP)
    assert result.deleted == 2 and result.remaining == 0 and result.verified_at == clock.now
    assert store.count_prefix(deployment_prefix(DEP)) == 0
    assert "deployments/other-dep/watchlist/index.npz" in store.objects  # only this deployment's prefix
    rec = repo.get(DEP)
    assert rec is not None and rec.state == S.PURGING and rec.purge == result
    closed = svc.close(DEP)
    assert closed.state == S.CLOSED and closed.closed_at == clock.now
    assert svc.purge(DEP) == result  # idempotent after close


def test_purge_raises_when_objects_remain(env) -> None:
    svc, repo, store, _ = env
    _built(repo, store)
    stuck = watchlist_images_prefix(DEP) + "late_upload.jpg"
    store.objects[stuck] = b"x"
    store.undeletable.add(stuck)
    with pytest.raises(PurgeIncompleteError):
        svc.purge(DEP)
    rec = repo.get(DEP)
    assert rec is not None and rec.purge is not None
    assert rec.purge.remaining == 1 and rec.purge.verified_at is None
    with pytest.raises(PurgeIncompleteError):
        svc.close(DEP)  # never CLOSED without a verified purge
    store.undeletable.clear()
    result = svc.purge(DEP)  # the state machine's retry
    assert result.remaining == 0 and result.deleted == 3
    assert type(PurgeIncompleteError("x")).__name__ == "PurgeIncompleteError"  # ASL Retry matches the name


def test_fail_records_reason_and_purge_keeps_failed(env) -> None:
    svc, repo, store, _ = env
    _built(repo, store)
    out = svc.handle(
        SessionRequest(
            action=SessionAction.FAIL, deployment_id=DEP, error={"Error": "NoUsableFacesError", "Cause": "..."}
        )
    )
    assert out["state"] == "FAILED" and out["failure_reason"] == "NoUsableFacesError"
    svc.purge(DEP)
    assert repo.get(DEP).state == S.FAILED


def test_unknown_action_and_deployment(env) -> None:
    svc, _, _, _ = env
    with pytest.raises(UnknownActionError, match="expected one of validate, activate, check, purge, close, fail"):
        svc.handle(SessionRequest.model_validate({"action": "explode", "deployment_id": DEP}))
    with pytest.raises(DeploymentNotFoundError):
        svc.handle(SessionRequest(action=SessionAction.CHECK, deployment_id="nope-dep"))


def test_handler_parses_payload(env) -> None:
    svc, repo, store, _ = env
    _built(repo, store)
    session_handler.set_service(svc)
    try:
        out = session_handler.handler({"action": "activate", "deployment_id": DEP}, lambda_context())
        assert out["state"] == "ACTIVE"
        out = session_handler.handler({"action": "check", "deployment_id": DEP}, lambda_context())
        assert out["active"] is True and 1 <= out["wait_s"] <= 5
        with pytest.raises(ValidationError):
            session_handler.handler({"action": "check"}, lambda_context())
        # An unknown action is the terminal UnknownActionError the machine's Catch names, not a parse error.
        with pytest.raises(UnknownActionError, match="unknown action 'explode'"):
            session_handler.handler({"action": "explode", "deployment_id": DEP}, lambda_context())
    finally:
        session_handler.set_service(None)


# -- authorisation before start, purge of queues, audit of every transition ----------


def _pending(repo: InMemoryDeploymentRepository, store: InMemoryObjectStore, *, images: int = 3,
             auth: Authorisation | None = None, duration_s: int = 3600) -> None:
    state = S.AUTHORISED if auth else S.PENDING
    repo.create(deployment(DEP, state, duration_s=duration_s).model_copy(update={"authorisation": auth}))
    for i in range(images):
        store.objects[watchlist_images_prefix(DEP) + f"P_{i:04d}.jpg"] = b"img"


def _actions() -> list[tuple[str, str | None, dict]]:
    return [(e.event["action"], e.event["deployment_id"], e.event["details"]) for e in read_events(AUDIT)]


def test_validate_refuses_without_authorisation(env) -> None:
    svc, repo, store, _ = env
    _pending(repo, store)
    with pytest.raises(AuthorisationError, match="no authorisation"):
        svc.handle(SessionRequest(action=SessionAction.VALIDATE, deployment_id=DEP))
    assert _actions()[-1][0] == "refused" and "no authorisation" in _actions()[-1][2]["reason"]


def test_validate_refuses_a_watchlist_larger_than_authorised(env) -> None:
    svc, repo, store, clock = env
    _pending(repo, store, images=6, auth=authorisation(clock, max_size=5))
    with pytest.raises(AuthorisationError, match="6 images exceeds the authorised maximum 5"):
        svc.validate(DEP)
    assert _actions()[-1][2]["watchlist_images"] == 6


def test_validate_refuses_longer_than_maximum_or_outside_the_window(env) -> None:
    svc, repo, store, clock = env
    _pending(repo, store, auth=authorisation(clock, hours=24), duration_s=12 * 3600 + 1)
    with pytest.raises(AuthorisationError, match="exceeds the maximum 43200s"):
        svc.validate(DEP)
    repo.update(DEP, {"duration_s": 3600})
    clock.advance(25 * 3600)  # the authorised period is over
    with pytest.raises(AuthorisationError, match="authorisation ended"):
        svc.validate(DEP)


def test_validate_passes_and_activation_never_outlives_the_authorisation(env) -> None:
    svc, repo, store, clock = env
    _pending(repo, store, images=3, auth=authorisation(clock, max_size=3, hours=0.5), duration_s=3600)
    # 1 h asked, 30 min authorised: refused (duration longer than the authorised period).
    with pytest.raises(AuthorisationError, match="longer than the authorised period"):
        svc.validate(DEP)
    repo.update(DEP, {"duration_s": 1800})
    assert svc.validate(DEP) == {"valid": True, "watchlist_images": 3}
    repo.update(DEP, {"state": "BUILDING", "index_etag": '"e"', "watchlist_size": 3})
    clock.advance(600)
    rec = svc.activate(DEP)
    assert rec.expires_at == rec.authorisation.end  # clipped to the authorised end, not now + 30 min
    assert [a for a, _, _ in _actions()] == ["refused", "start", "start"]


def test_purge_removes_queue_and_dlq_messages_and_audits_counts(env) -> None:
    svc, repo, store, clock = env
    _built(repo, store)
    svc.activate(DEP)
    QUEUES.queue[:] = [(DEP, "crop1"), ("other-dep", "keep")]
    QUEUES.dlq[:] = [(DEP, "crop2"), (DEP, "crop3")]
    clock.advance(30)
    assert svc.check(DEP).active is False
    result = svc.purge(DEP)
    assert (result.queue_deleted, result.dlq_deleted, result.remaining) == (1, 2, 0)
    assert QUEUES.queue == [("other-dep", "keep")] and QUEUES.dlq == []
    svc.close(DEP)
    actions = _actions()
    assert [a for a, _, _ in actions] == ["start", "expire", "purge", "close"]
    purge = actions[2][2]
    assert purge == {
        "prefix": deployment_prefix(DEP), "objects_deleted": 2, "objects_remaining": 0,
        "queue_messages_deleted": 1, "dlq_messages_deleted": 2, "queues_verified": True, "verified": True,
        "encounter_state_deleted": 0, "seconds_after_end": 10.0,
    }
    assert verify_chain(AUDIT.entries()).ok


def test_failed_purge_is_audited_unverified(env) -> None:
    svc, repo, store, _ = env
    _built(repo, store)
    stuck = watchlist_images_prefix(DEP) + "late.jpg"
    store.objects[stuck] = b"x"
    store.undeletable.add(stuck)
    with pytest.raises(PurgeIncompleteError):
        svc.purge(DEP)
    assert _actions()[-1][2]["verified"] is False and _actions()[-1][2]["objects_remaining"] == 1


def test_fail_is_audited_with_the_error_message(env) -> None:
    svc, repo, store, _ = env
    _pending(repo, store)
    cause = json.dumps({"errorMessage": "deployment dep-session refused: no authorisation recorded",
                        "errorType": "AuthorisationError"})
    rec = svc.handle(
        SessionRequest(
            action=SessionAction.FAIL, deployment_id=DEP, error={"Error": "AuthorisationError", "Cause": cause}
        )
    )
    assert rec["failure_reason"] == "AuthorisationError: deployment dep-session refused: no authorisation recorded"
    assert _actions()[-1] == ("fail", DEP, {"reason": rec["failure_reason"]})


def test_the_start_is_audited_with_how_many_pairs_of_entries_the_admin_was_warned_about(env) -> None:
    svc, repo, store, clock = env
    _pending(repo, store, images=3, auth=authorisation(clock, max_size=3, hours=1), duration_s=1800)
    svc.validate(DEP)
    repo.update(DEP, {"state": "BUILDING", "index_etag": '"e"', "watchlist_size": 3, "confusable_count": 2})
    svc.activate(DEP)
    (start,) = [d for a, _, d in _actions() if a == "start" and d.get("stage") == "active"]
    assert start["confusable_pairs"] == 2
