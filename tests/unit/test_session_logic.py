"""Session tasks over in-memory adapters: transitions, expiry, purge verification."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from functions.dal.memory import InMemoryDeploymentRepository, InMemoryObjectStore
from functions.exceptions import (
    DeploymentNotFoundError,
    PurgeIncompleteError,
    UnknownActionError,
    WatchlistNotBuiltError,
)
from functions.handlers import session as session_handler
from functions.logic.session import SessionRequest, SessionService
from lfr_core.contracts import DeploymentState as S
from lfr_core.layout import deployment_prefix, watchlist_images_prefix, watchlist_index_key
from tests.unit.functions_support import Clock, deployment, lambda_context

DEP = "dep-session"


@pytest.fixture
def env() -> tuple[SessionService, InMemoryDeploymentRepository, InMemoryObjectStore, Clock]:
    repo = InMemoryDeploymentRepository()
    store = InMemoryObjectStore("watchlist")
    clock = Clock()
    return SessionService(repo, store, clock=clock), repo, store, clock


def _built(repo: InMemoryDeploymentRepository, store: InMemoryObjectStore, duration_s: int = 20) -> None:
    repo.create(deployment(DEP, S.BUILDING, duration_s=duration_s, index_etag='"abc"', watchlist_size=2))
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
        SessionRequest(action="fail", deployment_id=DEP, error={"Error": "NoUsableFacesError", "Cause": "..."})
    )
    assert out["state"] == "FAILED" and out["failure_reason"] == "NoUsableFacesError"
    svc.purge(DEP)
    assert repo.get(DEP).state == S.FAILED


def test_unknown_action_and_deployment(env) -> None:
    svc, _, _, _ = env
    with pytest.raises(UnknownActionError, match="expected one of activate, check, purge, close, fail"):
        svc.handle(SessionRequest(action="explode", deployment_id=DEP))
    with pytest.raises(DeploymentNotFoundError):
        svc.handle(SessionRequest(action="check", deployment_id="nope-dep"))


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
    finally:
        session_handler.set_service(None)
