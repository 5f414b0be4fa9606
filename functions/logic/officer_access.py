"""Who may use the officers' API, and what a refusal leaves behind.

A request's credential is an lfr-signed token (functions/logic/tokens.py) or, in AWS, claims of
the Cognito user pool in the request context; either way it must name an officer of THIS
deployment who is not revoked, and the deployment must be live (access ends with it, whatever
the credential's own expiry says). `authorise` raises `TokenError` or `AccessRefusedError`;
the API's exception handlers (functions/logic/officer_api.py) answer 403 and call `refuse`.

Failed access. Every refusal is a structured log line (reason, ids, source IP; never the token)
and a `FailedAccess` count, in total and per reason (alarmed in infra/constructs/officers.py).
Only a refusal that follows a token we signed (or Cognito verified) is also appended to the
Object Lock audit log, and at most once per officer, deployment and reason per window per
container, the entry carrying how many refusals it stands for. Why not every refusal: the audit
log keeps each object for years, so an anonymous request that wrote one would let anyone grow
locked storage at the API's rate (50/s); anonymous refusals carry no identity to audit anyway,
and the API access log and the metric keep them. The bound: containers (the function's reserved
concurrency) x issued tokens' officers x reasons x windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from functions.dal.officers import OfficerRepository
from functions.dal.ports import DeploymentRepository
from functions.exceptions import AccessRefusedError, TokenError
from functions.logic.audit_log import AuditLog
from functions.logic.tokens import ALERT_ID, DEPLOYMENT_ID, epoch, link_valid, verify_token
from functions.models.officers import AccessRefusal, Claims
from functions.observability import MetricsSink, logger
from lfr_core.contracts import AuditAction

COGNITO_OFFICER_CLAIM = "custom:officer_id"
COGNITO_DEPLOYMENT_CLAIM = "custom:deployment_id"
FAILED_ACCESS_METRIC = "FailedAccess"
FAILED_ACCESS_AUDIT_WINDOW_S = 60 * 60
_MAX_TRACKED_REFUSERS = 10_000  # memory bound of the per-container window table


def as_dict(value: Any) -> Mapping[str, Any]:
    """A field of a request event that should be an object: anything else reads as empty."""
    return value if isinstance(value, Mapping) else {}


def as_str(value: Any) -> str:
    """A field of a request event that should be text: anything else reads as empty."""
    return value if isinstance(value, str) else ""


def _safe_id(value: str) -> str | None:
    """A client-given id fit for logs and the audit log, or None."""
    return value if DEPLOYMENT_ID.fullmatch(value) or ALERT_ID.fullmatch(value) else None


@dataclass
class _Window:
    opened: datetime
    refusals: int = 0  # in this window, not yet written to the audit log


class FailedAccessAudit:
    """Which identified refusals to write to the audit log: the first per key per window."""

    def __init__(self, window_s: int = FAILED_ACCESS_AUDIT_WINDOW_S) -> None:
        self.window_s = window_s
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def admit(self, key: tuple[str, str, str], now: datetime) -> int | None:
        """Refusals this entry stands for (itself included), or None when the window already has one."""
        win = self._windows.get(key)
        if win is not None and (now - win.opened).total_seconds() < self.window_s:
            win.refusals += 1
            return None
        if len(self._windows) >= _MAX_TRACKED_REFUSERS:
            self._windows.clear()  # forgetting only makes the next refusal of each key audited again
        self._windows[key] = _Window(opened=now)
        return 1 + (win.refusals if win is not None else 0)


def refusal_of(exc: TokenError | AccessRefusedError) -> AccessRefusal:
    if isinstance(exc, AccessRefusedError):
        return AccessRefusal(exc.reason)
    tag = f"token_{exc.reason}"
    return AccessRefusal(tag) if tag in AccessRefusal.__members__.values() else AccessRefusal.TOKEN_MALFORMED


@dataclass
class OfficerAccess:
    deployments: DeploymentRepository
    officers: OfficerRepository
    key: Callable[[], bytes]
    audit: AuditLog
    clock: Callable[[], datetime]
    metrics: MetricsSink

    def __post_init__(self) -> None:
        self.failed_access = FailedAccessAudit()

    def authorise(self, event: Mapping[str, Any], dep_id: str, cognito: bool) -> Claims:
        """The claims of a request for deployment `dep_id`; `TokenError` or `AccessRefusedError` otherwise."""
        now = self.clock()
        claims = self._claims(event, cognito, now)
        if claims.deployment_id != dep_id:
            raise AccessRefusedError(AccessRefusal.FOREIGN_DEPLOYMENT, claims.officer_id)
        officer = self.officers.get(dep_id, claims.officer_id)
        if officer is None or officer.revoked_at is not None:
            raise AccessRefusedError(AccessRefusal.UNKNOWN_OR_REVOKED_OFFICER, claims.officer_id)
        dep = self.deployments.get(dep_id)
        if dep is None or not dep.is_live(now):
            # Access ends with the deployment, whatever the token's own expiry says.
            raise AccessRefusedError(AccessRefusal.DEPLOYMENT_ENDED, claims.officer_id)
        return claims

    def check_link(self, event: Mapping[str, Any], claims: Claims, dep_id: str, alert_id: str) -> None:
        """A token's holder opens an alert only through a fresh signed link (Cognito users need none)."""
        query = as_dict(event.get("queryStringParameters"))
        if claims.via == "token" and not link_valid(
            self.key(), dep_id, alert_id, query.get("exp"), query.get("sig"), self.clock()
        ):
            raise AccessRefusedError(AccessRefusal.LINK_INVALID, claims.officer_id)

    def _claims(self, event: Mapping[str, Any], cognito: bool, now: datetime) -> Claims:
        if cognito:
            raw = as_dict(as_dict(as_dict(event.get("requestContext")).get("authorizer")).get("claims"))
            officer, dep = raw.get(COGNITO_OFFICER_CLAIM), raw.get(COGNITO_DEPLOYMENT_CLAIM)
            exp = epoch(raw.get("exp"))
            if not isinstance(officer, str) or not isinstance(dep, str) or exp is None:
                raise TokenError("no_cognito_claims")
            try:
                claims = Claims(
                    officer_id=officer, deployment_id=dep, expires_at=datetime.fromtimestamp(exp, UTC), via="cognito"
                )
            except ValidationError:
                raise TokenError("no_cognito_claims") from None
            if now >= claims.expires_at:
                raise TokenError("expired", officer_id=claims.officer_id)
            return claims
        headers = {str(k).lower(): v for k, v in as_dict(event.get("headers")).items()}
        auth = as_str(headers.get("authorization"))
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            raise TokenError("missing")
        return verify_token(self.key(), token, now)

    def refuse(
        self, event: Mapping[str, Any], reason: AccessRefusal, deployment_id: str, alert_id: str,
        officer_id: str | None,
    ) -> None:
        """Log and count a refusal; audit it when it names an officer (once per window, see above).
        An expired token was still signed by us (or verified by Cognito): it names its officer."""
        now = self.clock()
        dep, alert = _safe_id(deployment_id), _safe_id(alert_id)
        refusals = None
        if reason.identified and officer_id:
            refusals = self.failed_access.admit((officer_id, dep or "", reason.value), now)
        # One call: the sink counts the total series and the per-reason one (functions/observability.py).
        self.metrics.count(FAILED_ACCESS_METRIC, dimensions={"reason": reason.value})
        source_ip = as_str(as_dict(as_dict(event.get("requestContext")).get("identity")).get("sourceIp"))[:64]
        logger.warning(
            "officer access refused",
            extra={"reason": reason.value, "deployment_id": dep, "alert_id": alert, "officer_id": officer_id,
                   "source_ip": source_ip or None, "audited": refusals is not None},
        )
        if refusals is not None:
            self.audit.record(
                f"officer:{officer_id}",
                AuditAction.FAILED_ACCESS,
                dep,
                reason=reason.value,
                alert_id=alert or "",
                surface="alert_page_api",
                refusals_since_last_entry=refusals,
            )
