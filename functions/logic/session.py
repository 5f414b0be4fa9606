"""Session state machine tasks: validate, activate, check, purge, close, fail.

`validate` is the machine's first step: no authorisation, a watchlist larger than
authorised, a session longer than the maximum or outside the authorised window raises
`AuthorisationError`, which the machine routes to fail -> purge (the uploaded watchlist
is destroyed) -> Fail. Every transition is written to the audit log.

Every transition is a conditional update on the states the lifecycle table allows it from
(`lfr_core/lifecycle.py`), so a Step Functions retry or a concurrent admin STOP cannot move a
deployment backwards. Each action is idempotent: repeating it after success returns the same result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.dal.ports import AlertRepository, CropQueues, DeploymentRepository, WatchlistStore
from functions.exceptions import (
    AuditAppendError,
    AuthorisationError,
    DeploymentNotActiveError,
    DeploymentNotFoundError,
    PurgeIncompleteError,
    StateConflictError,
    TransientStorageError,
    UnknownActionError,
    WatchlistNotBuiltError,
    is_transient,
)
from functions.logic.audit_log import AuditLog
from functions.models.records import MAX_SESSION_DURATION_S, DeploymentRecord, PurgeResult
from functions.observability import METRIC_PURGE_INCOMPLETE, METRIC_SESSION_STEP_ERRORS, MetricsSink, logger
from lfr_core.contracts import AuditAction, AuditValue, DeploymentId, DeploymentState, utcnow
from lfr_core.layout import deployment_prefix, watchlist_images_prefix
from lfr_core.lifecycle import STARTABLE, TERMINAL, SessionAction, can_move, sources_of

S = DeploymentState
MAX_WAIT_S = 5
MAX_REASON_CHARS = 400  # fits an audit detail (functions.logic.audit_log.MAX_DETAIL_CHARS)
ACTOR = "session-state-machine"
# Clock skew tolerated between the authorising officer's start time and the machine's clock.
START_SKEW_S = 300


class SessionRequest(BaseModel):
    # The state machine may pass more (e.g. Catch's error/cause); only these are used.
    model_config = ConfigDict(extra="ignore")

    action: SessionAction
    deployment_id: DeploymentId
    reason: str | None = Field(default=None, description="for action fail: why")
    error: Any = None  # Step Functions Catch output {"Error", "Cause"}, for actions fail and purge
    # For action check: how often the machine retried this step ($$.State.RetryCount), and the
    # error it caught before re-checking ({"Error", "Cause"}), if any: audited once it recovers.
    retry_count: int = 0
    fault: Any = None

    @field_validator("action", mode="before")
    @classmethod
    def _known(cls, v: Any) -> Any:
        # Not a ValueError: the machine's Catch sees UnknownActionError (terminal), as for any
        # other bug in the request.
        if isinstance(v, str) and v not in {a.value for a in SessionAction}:
            raise UnknownActionError(f"unknown action {v!r}; expected one of {', '.join(SessionAction)}")
        return v  # anything but a string: pydantic's own ValidationError


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
        *,
        audit: AuditLog,
        queues: CropQueues,
        alerts: AlertRepository,
        max_duration_s: int = MAX_SESSION_DURATION_S,
    ) -> None:
        # None of the three is optional: a session whose transitions went unaudited, or whose purge
        # skipped the queues or the encounter state, would break the safeguards it exists to keep.
        self.alerts = alerts  # encounter state and camera activity go with the deployment
        self.deployments = deployments
        self.watchlists = watchlists
        self.clock = clock
        self.audit = audit
        self.queues = queues
        self.max_duration_s = max_duration_s

    def _audit(self, action: AuditAction, deployment_id: str, **details: AuditValue) -> None:
        # Written before the task reports success: a transition the log cannot record fails
        # the task (and so the session), rather than happening unrecorded.
        self.audit.record(ACTOR, action, deployment_id, **details)

    def handle(self, request: SessionRequest) -> dict[str, Any]:
        A = SessionAction
        actions: dict[SessionAction, Callable[[SessionRequest], dict[str, Any]]] = {
            A.VALIDATE: lambda r: self.validate(r.deployment_id),
            A.ACTIVATE: lambda r: self.activate(r.deployment_id).model_dump(mode="json"),
            A.CHECK: lambda r: self.check(
                r.deployment_id, retries=r.retry_count, fault=_error_text(r.fault)
            ).model_dump(mode="json"),
            A.PURGE: lambda r: self.purge(r.deployment_id, failure=_error_text(r.error)).model_dump(mode="json"),
            A.CLOSE: lambda r: self.close(r.deployment_id).model_dump(mode="json"),
            A.FAIL: lambda r: self.fail(r.deployment_id, _failure_reason(r)).model_dump(mode="json"),
        }
        return actions[request.action](request)

    def _get(self, deployment_id: str) -> DeploymentRecord:
        rec = self.deployments.get(deployment_id)
        if rec is None:
            raise DeploymentNotFoundError(deployment_id)
        return rec

    def _authorised_problem(self, rec: DeploymentRecord, images: int | None) -> str | None:
        """Why this deployment may not go live, or None. Checked at validate AND at activate."""
        auth = rec.authorisation
        if rec.state == S.PENDING or auth is None:
            return "no authorisation recorded"
        if rec.duration_s > self.max_duration_s:
            return f"duration {rec.duration_s}s exceeds the maximum {self.max_duration_s}s"
        if images is not None and images > auth.max_watchlist_size:
            return f"watchlist of {images} images exceeds the authorised maximum {auth.max_watchlist_size}"
        if rec.watchlist_size > auth.max_watchlist_size:
            return f"watchlist of {rec.watchlist_size} exceeds the authorised maximum {auth.max_watchlist_size}"
        now = self.clock()
        if now >= auth.end:
            return f"authorisation ended at {auth.end.isoformat()}"
        if now < auth.start - timedelta(seconds=START_SKEW_S):
            return f"authorisation starts at {auth.start.isoformat()}"
        if rec.duration_s > (auth.end - auth.start).total_seconds() + START_SKEW_S:
            return "duration longer than the authorised period"
        return None

    def validate(self, deployment_id: str) -> dict[str, Any]:
        """The machine's first step: refuse (AuthorisationError) anything not authorised as it stands."""
        rec = self._get(deployment_id)
        if rec.state not in STARTABLE:
            raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot start")
        images = len(self.watchlists.list_keys(watchlist_images_prefix(deployment_id)))
        problem = self._authorised_problem(rec, images)
        if problem is not None:
            self._audit(AuditAction.REFUSED, deployment_id, reason=problem, watchlist_images=images)
            logger.warning("start refused", extra={"deployment_id": deployment_id, "reason": problem})
            raise AuthorisationError(f"deployment {deployment_id} refused: {problem}")
        self._audit(
            AuditAction.START, deployment_id, stage="validated", watchlist_images=images, duration_s=rec.duration_s
        )
        return {"valid": True, "watchlist_images": images}

    def activate(self, deployment_id: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state == S.ACTIVE:
            return rec  # a Step Functions retry after a lost response
        if not can_move(rec.state, S.ACTIVE):
            raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot activate")
        if rec.watchlist_size <= 0 or not rec.index_etag:
            raise WatchlistNotBuiltError(f"deployment {deployment_id} has no built watchlist")
        problem = self._authorised_problem(rec, None)  # again: time has passed since validate
        if problem is not None:
            self._audit(AuditAction.REFUSED, deployment_id, reason=problem)
            raise AuthorisationError(f"deployment {deployment_id} refused: {problem}")
        now = self.clock()
        expires = now + timedelta(seconds=rec.duration_s)
        if rec.authorisation is not None:
            expires = min(expires, rec.authorisation.end)  # never beyond what was authorised
        self._audit(
            AuditAction.START, deployment_id, stage="active", expires_at=expires.isoformat(),
            watchlist_size=rec.watchlist_size, confusable_pairs=rec.confusable_count,
        )
        rec = self.deployments.update(
            deployment_id,
            {"state": str(S.ACTIVE), "started_at": now.isoformat(), "expires_at": expires.isoformat()},
            expect_states=sources_of(S.ACTIVE),
        )
        logger.info(
            "deployment active", extra={"deployment_id": deployment_id, "expires_at": str(rec.expires_at)}
        )
        return rec

    def check(self, deployment_id: str, *, retries: int = 0, fault: str | None = None) -> CheckResult:
        rec = self._get(deployment_id)
        now = self.clock()
        if retries or fault:
            # The machine retried this check (storage or endpoint outage, a killed worker): the
            # live deployment survived it; say so in the audit log once the check succeeds.
            logger.warning(
                "session check recovered", extra={"deployment_id": deployment_id, "retries": retries, "error": fault}
            )
            try:
                self._audit(
                    AuditAction.FAULT, deployment_id, step=str(SessionAction.CHECK), retries=retries, error=fault,
                    recovered=True, state=str(rec.state),
                )
            except (TransientStorageError, AuditAppendError):
                # Not a transition: an audit store still down must not keep a live check failing
                # (the error metric and log above and the machine's history still show the fault).
                logger.warning("fault not audited", extra={"deployment_id": deployment_id})
        if rec.state != S.ACTIVE:
            return CheckResult(active=False, wait_s=1, state=rec.state)
        if rec.expires_at is None or now >= rec.expires_at:
            # Audited before the transition: a retry after a failed audit finds the record still
            # ACTIVE and audits again, rather than EXPIRED with the event lost.
            self._audit(AuditAction.EXPIRE, deployment_id, faces_seen=rec.faces_seen)
            try:
                rec = self.deployments.update(
                    deployment_id, {"state": str(S.EXPIRED)}, expect_states=sources_of(S.EXPIRED)
                )
                logger.info("deployment expired", extra={"deployment_id": deployment_id})
            except StateConflictError:
                rec = self._get(deployment_id)  # stopped meanwhile: inactive either way
            return CheckResult(active=False, wait_s=1, state=rec.state)
        remaining = (rec.expires_at - now).total_seconds()
        return CheckResult(active=True, wait_s=max(1, min(MAX_WAIT_S, math.ceil(remaining))), state=rec.state)

    def purge(self, deployment_id: str, failure: str | None = None) -> PurgeResult:
        """Delete everything of the deployment and verify every store empty of it.

        `failure`: the error that sent the machine here (the failure path). It is written with
        the move to PURGING, in the same conditional update, so a record never sits in PURGING
        without its reason even when MarkFailed could not write it. Alert records and crops of
        MATCHED faces are not purged: they are kept for the deployment's alert retention.
        """
        rec = self._get(deployment_id)
        if rec.state == S.CLOSED and rec.purge is not None:
            return rec.purge
        if rec.state != S.FAILED:
            # A FAILED deployment keeps its state (and reason) while being purged.
            if not can_move(rec.state, S.PURGING):
                raise DeploymentNotActiveError(f"deployment {deployment_id} is {rec.state}; cannot purge")
            rec = self._to_purging(rec, failure)
        prefix = deployment_prefix(deployment_id)
        # Who was in an open encounter (functions/logic/encounters.py) need not outlive the session.
        # Before any deletion: an outage of its table then fails the attempt before it has deleted
        # anything, rather than after, when the deletions would never reach the audit log below.
        state_deleted = self.alerts.purge_state(deployment_id)
        deleted = self.watchlists.delete_prefix(prefix)
        # Pending crops and DLQ copies of this deployment go too: a crop must not outlive its session.
        # The queues are drained until their own counts show nothing of it visible or in flight.
        try:
            drained = self.queues.purge_deployment(deployment_id)
            remaining = self.watchlists.count_prefix(prefix)  # verify by listing, not by trusting the delete
        except Exception:
            # This attempt has deleted: audit it before failing, or the retry (finding nothing left)
            # would leave the audit log short of what was deleted.
            self._audit(
                AuditAction.PURGE, deployment_id, prefix=prefix, objects_deleted=deleted, queue_messages_deleted=0,
                dlq_messages_deleted=0, queues_verified=False, encounter_state_deleted=state_deleted,
                verified=False,
            )
            raise
        before = rec.purge
        total_deleted = deleted + (before.deleted if before else 0)
        verified = remaining == 0 and drained.verified
        result = PurgeResult(
            deleted=total_deleted,
            remaining=remaining,
            verified_at=self.clock() if verified else None,
            queue_deleted=drained.queue_deleted + (before.queue_deleted if before else 0),
            dlq_deleted=drained.dlq_deleted + (before.dlq_deleted if before else 0),
        )
        ends = [t for t in (rec.stopped_at, rec.expires_at) if t is not None]
        ended = min(ends) if ends and rec.started_at is not None else None
        # Audited before the record is written, with THIS attempt's counts: if the write then fails
        # (a storage outage), the retry finds nothing left to delete, and the audit log still adds
        # up to everything deleted. The record holds the totals it could write.
        self._audit(
            AuditAction.PURGE,
            deployment_id,
            prefix=prefix,
            objects_deleted=deleted,
            objects_remaining=remaining,
            queue_messages_deleted=drained.queue_deleted,
            dlq_messages_deleted=drained.dlq_deleted,
            queues_verified=drained.verified,
            encounter_state_deleted=state_deleted,
            verified=verified,
            seconds_after_end=round((self.clock() - ended).total_seconds(), 1) if ended else None,
        )
        self.deployments.update(deployment_id, {"purge": result.model_dump(mode="json", exclude_none=True)})
        logger.info(
            "purge", extra={"deployment_id": deployment_id, "deleted": total_deleted, "remaining": remaining,
                            "queues_verified": drained.verified}
        )
        if remaining:
            raise PurgeIncompleteError(f"{remaining} object(s) remain under {prefix}")
        if not drained.verified:
            raise PurgeIncompleteError(f"crops of {deployment_id} may still be in flight: {drained.detail}")
        return result

    def _to_purging(self, rec: DeploymentRecord, failure: str | None) -> DeploymentRecord:
        """PURGING, with its reason: a failure, else the stop or expiry that ended it."""
        fields: dict[str, Any] = {"state": str(S.PURGING)}
        if failure and not rec.failure_reason:
            fields["failure_reason"] = failure[:MAX_REASON_CHARS]
        elif rec.state == S.ACTIVE and rec.expires_at is not None and (
            self.clock() >= rec.expires_at - timedelta(seconds=START_SKEW_S)  # the machine's clock said so
        ):
            # Reached from the live fault loop past the window: CheckActive never saw the expiry.
            self._audit(AuditAction.EXPIRE, rec.deployment_id, faces_seen=rec.faces_seen, after_fault=True)
        elif can_move(rec.state, S.STOPPED) and not rec.failure_reason:  # not yet ended: it could be stopped
            fields["failure_reason"] = "purged before its end: no failure reason was passed"
        return self.deployments.update(rec.deployment_id, fields, expect_states=sources_of(S.PURGING))

    def close(self, deployment_id: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state == S.CLOSED:
            return rec
        if rec.purge is None or rec.purge.remaining != 0 or rec.purge.verified_at is None:
            raise PurgeIncompleteError(f"deployment {deployment_id} has no verified purge; cannot close")
        # Audited before the transition, so a retry after a failed audit still finds it to do.
        self._audit(AuditAction.CLOSE, deployment_id, faces_seen=rec.faces_seen, refused_crops=rec.refused_crops)
        rec = self.deployments.update(
            deployment_id,
            {"state": str(S.CLOSED), "closed_at": self.clock().isoformat()},
            expect_states=sources_of(S.CLOSED),
        )
        logger.info("deployment closed", extra={"deployment_id": deployment_id})
        return rec

    def fail(self, deployment_id: str, reason: str) -> DeploymentRecord:
        rec = self._get(deployment_id)
        if rec.state in TERMINAL:
            return rec
        # Audited before the transition (a retry after a failed audit finds it still to do).
        self._audit(AuditAction.FAIL, deployment_id, reason=reason[:MAX_REASON_CHARS])
        rec = self.deployments.update(
            deployment_id,
            {"state": str(S.FAILED), "failure_reason": reason[:MAX_REASON_CHARS]},
            expect_states=sources_of(S.FAILED),
        )
        logger.warning("deployment failed", extra={"deployment_id": deployment_id, "reason": reason})
        return rec


def _failure_reason(request: SessionRequest) -> str:
    if request.reason:
        return request.reason
    return _error_text(request.error) or "unspecified"


def _error_text(error: Any) -> str | None:
    """"<Error>: <message>" from a Step Functions Catch output, or None."""
    if not isinstance(error, dict):
        return None
    err = error.get("Error") or error.get("error")
    if not err:
        return None
    # The Cause is the function's error JSON; its message names ids and counts only.
    try:
        message = json.loads(error.get("Cause") or "").get("errorMessage")
    except (ValueError, AttributeError):
        message = None
    return (f"{err}: {message}" if message else str(err))[:MAX_REASON_CHARS]


STEP_ERRORS_METRIC = METRIC_SESSION_STEP_ERRORS


def handle_with_metric(service: SessionService, request: SessionRequest, metrics: MetricsSink) -> dict[str, Any]:
    """Run one step; a failed step is counted (metric per action, alarmed) and logged, then re-raised.

    EMF metrics go out with the function's log, so they are emitted even while the AWS endpoint
    is unreachable. The state machine decides what to do with the error (functions/exceptions.py).
    """
    try:
        return service.handle(request)
    except Exception as exc:
        metrics.count(STEP_ERRORS_METRIC, 1, {"Action": str(request.action)})
        if request.action == SessionAction.PURGE:
            # Data may remain: the PurgeIncomplete alarm (infra/constructs/alarms.py) watches this one.
            metrics.count(METRIC_PURGE_INCOMPLETE, 1, {"error": type(exc).__name__})
        logger.warning(
            "session step failed",
            extra={"deployment_id": request.deployment_id, "step": str(request.action), "error": type(exc).__name__,
                   "transient": is_transient(exc)},
        )
        raise
