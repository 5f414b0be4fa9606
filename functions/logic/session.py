"""Session state machine tasks: activate, check, purge, close, fail.

Every transition is a conditional update on the expected state(s), so a Step Functions
retry or a concurrent admin STOP cannot move a deployment backwards. Each action is
idempotent: repeating it after success returns the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.dal.ports import DeploymentRepository, WatchlistStore
from functions.exceptions import (
    DeploymentNotActiveError,
    DeploymentNotFoundError,
    PurgeIncompleteError,
    StateConflictError,
    UnknownActionError,
    WatchlistNotBuiltError,
)
from functions.models.records import DeploymentRecord, PurgeResult
from functions.observability import logger
from lfr_core.contracts import DeploymentId, DeploymentState, utcnow
from lfr_core.layout import deployment_prefix

S = DeploymentState
ACTIONS = ("activate", "check", "purge", "close", "fail")
MAX_WAIT_S = 5
MAX_REASON_CHARS = 1000

ACTIVATABLE = (S.PENDING, S.AUTHORISED, S.BUILDING)
# Purge is reachable from every non-terminal state: the fail path purges a deployment
# that never went live, and a retry finds it already PURGING.
PURGEABLE = (S.PENDING, S.AUTHORISED, S.BUILDING, S.ACTIVE, S.EXPIRED, S.STOPPED, S.PURGING, S.FAILED)
FAILABLE = (S.PENDING, S.AUTHORISED, S.BUILDING, S.ACTIVE, S.EXPIRED, S.STOPPED, S.PURGING)


class SessionRequest(BaseModel):
    # The state machine may pass more (e.g. Catch's error/cause); only these are used.
    model_config = ConfigDict(extra="ignore")

    action: str
    deployment_id: DeploymentId
    reason: str | None = Field(default=None, description="for action fail: why")
    error: Any = None  # Step Functions Catch output {"Error", "Cause"}, for action fail


class CheckResult(BaseModel):
    active: bool
    wait_s: int
    state: DeploymentState


class SessionService:
    def __init__(
        self,
        deployments: DeploymentRepository,
        watchlists: WatchlistStore,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.deployments = deployments
        self.watchlists = watchlists
        self.clock = clock

    def handle(self, request: SessionRequest) -> dict[str, Any]:
        actions: dict[str, Callable[[SessionRequest], dict[str, Any]]] = {
            "activate": lambda r: self.activate(r.deployment_id).model_dump(mode="json"),
            "check": lambda r: self.check(r.deployment_id).model_dump(mode="json"),
            "purge": lambda r: self.purge(r.deployment_id).model_dump(mode="json"),
            "close": lambda r: self.close(r.deployment_id).model_dump(mode="json"),
            "fail": lambda r: self.fail(r.deployment_id, _failure_reason(r)).model_dump(mode="json"),
        }
        action = actions.get(request.action)
        if action is None:
            raise UnknownActionError(
                f"unknown action {request.action!r}; expected one of {', '.join(ACTIONS)}"
            )
        return action(request)

    def _get(self, deployment_id: str) -> DeploymentRecord:
        rec = self.deployments.get(deployment_id)
        if rec is None:
            raise DeploymentNotFoundError(deployment_id)
        return rec

    def activate(self, deployment_id: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state == S.ACTIVE:
            return rec  # a Step Functions retry after a lost response
        if rec.state not in ACTIVATABLE:
            raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot activate")
        if rec.watchlist_size <= 0 or not rec.index_etag:
            raise WatchlistNotBuiltError(f"deployment {deployment_id} has no built watchlist")
        now = self.clock()
        rec = self.deployments.update(
            deployment_id,
            {
                "state": str(S.ACTIVE),
                "started_at": now.isoformat(),
                "expires_at": (now + timedelta(seconds=rec.duration_s)).isoformat(),
            },
            expect_states=ACTIVATABLE,
        )
        logger.info(
            "deployment active", extra={"deployment_id": deployment_id, "expires_at": str(rec.expires_at)}
        )
        return rec

    def check(self, deployment_id: str) -> CheckResult:
        rec = self._get(deployment_id)
        now = self.clock()
        if rec.state != S.ACTIVE:
            return CheckResult(active=False, wait_s=1, state=rec.state)
        if rec.expires_at is None or now >= rec.expires_at:
            try:
                rec = self.deployments.update(
                    deployment_id, {"state": str(S.EXPIRED)}, expect_states=(S.ACTIVE,)
                )
                logger.info("deployment expired", extra={"deployment_id": deployment_id})
            except StateConflictError:
                rec = self._get(deployment_id)  # stopped meanwhile: inactive either way
            return CheckResult(active=False, wait_s=1, state=rec.state)
        remaining = (rec.expires_at - now).total_seconds()
        return CheckResult(active=True, wait_s=max(1, min(MAX_WAIT_S, math.ceil(remaining))), state=rec.state)

    def purge(self, deployment_id: str) -> PurgeResult:
        rec = self._get(deployment_id)
        if rec.state == S.CLOSED and rec.purge is not None:
            return rec.purge
        if rec.state not in PURGEABLE:
            raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot purge")
        if rec.state != S.FAILED:
            # A FAILED deployment keeps its state (and reason) while being purged.
            rec = self.deployments.update(deployment_id, {"state": str(S.PURGING)}, expect_states=PURGEABLE)
        prefix = deployment_prefix(deployment_id)
        deleted = self.watchlists.delete_prefix(prefix)
        remaining = self.watchlists.count_prefix(prefix)  # verify by listing, not by trusting the delete
        total_deleted = deleted + (rec.purge.deleted if rec.purge else 0)
        result = PurgeResult(
            deleted=total_deleted, remaining=remaining, verified_at=self.clock() if remaining == 0 else None
        )
        self.deployments.update(deployment_id, {"purge": result.model_dump(mode="json", exclude_none=True)})
        logger.info(
            "purge", extra={"deployment_id": deployment_id, "deleted": total_deleted, "remaining": remaining}
        )
        if remaining:
            raise PurgeIncompleteError(f"{remaining} object(s) remain under {prefix}")
        return result

    def close(self, deployment_id: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state == S.CLOSED:
            return rec
        if rec.purge is None or rec.purge.remaining != 0 or rec.purge.verified_at is None:
            raise PurgeIncompleteError(f"deployment {deployment_id} has no verified purge; cannot close")
        rec = self.deployments.update(
            deployment_id,
            {"state": str(S.CLOSED), "closed_at": self.clock().isoformat()},
            expect_states=(S.PURGING,),
        )
        logger.info("deployment closed", extra={"deployment_id": deployment_id})
        return rec

    def fail(self, deployment_id: str, reason: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state in (S.FAILED, S.CLOSED):
            return rec
        rec = self.deployments.update(
            deployment_id,
            {"state": str(S.FAILED), "failure_reason": reason[:MAX_REASON_CHARS]},
            expect_states=FAILABLE,
        )
        logger.warning("deployment failed", extra={"deployment_id": deployment_id, "reason": reason})
        return rec


def _failure_reason(request: SessionRequest) -> str:
    if request.reason:
        return request.reason
    if isinstance(request.error, dict):
        err = request.error.get("Error") or request.error.get("error")
        if err:
            return str(err)
    return "unspecified"
