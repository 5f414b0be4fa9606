"""The officers' side: who receives a deployment's alerts, how they prove who they are, the
alert page's API, and the decisions that turn alerts into true/false/unresolved counts.

Scoping choice: ONE alert topic, one subscription per officer channel with a filter policy on
the message attribute `deployment_id` (which the match function already sets), rather than a
topic per deployment. Why: the topic, its KMS key and the match function's single
`sns:Publish` grant stay in the CDK template (a topic per deployment would be created by the
CLI at run time, outside the template and cdk-nag, with IAM widened to `topic/*`); filtering
is evaluated by SNS before delivery, so an officer's device never receives, even briefly, an
alert of a deployment they are not assigned to; and ending an officer's access is one
unsubscribe. The cost is SNS's per-topic filter-policy quota (soft limit, 200 by default),
far above the officers of the few deployments live at any one time.

Tokens: `lfr1.<payload>.<mac>`, payload = base64url JSON {sub: officer id, dep: deployment
id, exp, iat}, mac = HMAC-SHA256 under the key in Secrets Manager. `exp` is the deployment's
`expires_at`, and every request also checks that the deployment is still live and the
officer not revoked, so a token can never outlive the deployment (a STOP ends it at once).
In AWS, requests authorised by the Cognito user pool arrive with claims in the request
context (`custom:officer_id`, `custom:deployment_id`) and pass the same checks.

Page links: the push message carries `/alert/<dep>/<alert>?exp=..&sig=..`, a link signed
for that alert that stops working after `LINK_TTL_S`; it is not a credential (the page
still needs the officer's token) but a stale SMS or email cannot reopen an alert.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from functions.dal.officers import EvidenceLinks, OfficerChannels, OfficerRepository
from functions.dal.ports import AlertRepository, DeploymentRepository
from functions.exceptions import ObjectNotFoundError, TokenError
from functions.logic.audit import AuditLog
from functions.logic.console import Console, content_security_policy
from functions.models.officers import (
    MAX_EPOCH_S,
    AccessRefusal,
    Channel,
    ChannelKind,
    Claims,
    OfficerRecord,
    TokenPayload,
)
from functions.models.records import AlertRecord, Decision, DeploymentRecord
from functions.observability import MetricsSink, PowertoolsMetricsSink, logger
from lfr_core.contracts import AuditAction, utcnow

TOKEN_PREFIX = "lfr1"
LINK_TTL_S = 30 * 60  # how long a link in a notification opens the alert page
EVIDENCE_URL_TTL_S = 5 * 60  # presigned image URLs on the page
PAGE_FILE = Path(__file__).with_name("alert_page.html")

# Routes of the REST API (resource paths as API Gateway reports them in the proxy event).
PAGE_RESOURCE = "/alert/{deployment_id}/{alert_id}"
TOKEN_ALERT_RESOURCE = "/t/alerts/{deployment_id}/{alert_id}"
TOKEN_DECISION_RESOURCE = "/t/alerts/{deployment_id}/{alert_id}/decision"
COGNITO_ALERT_RESOURCE = "/alerts/{deployment_id}/{alert_id}"
COGNITO_DECISION_RESOURCE = "/alerts/{deployment_id}/{alert_id}/decision"
# The van's console (functions/logic/console.py): static page, and its polled state (token only).
CONSOLE_PAGE_RESOURCE = "/console/{deployment_id}"
TOKEN_CONSOLE_RESOURCE = "/t/console/{deployment_id}"
COGNITO_OFFICER_CLAIM = "custom:officer_id"
COGNITO_DEPLOYMENT_CLAIM = "custom:deployment_id"

PLATFORM_APPS = {  # channel kind -> (SNS platform, platform application name)
    ChannelKind.APNS: ("APNS", "lfr-apns"),
    ChannelKind.APNS_SANDBOX: ("APNS_SANDBOX", "lfr-apns-sandbox"),
    ChannelKind.FCM: ("GCM", "lfr-fcm"),
}
SNS_PROTOCOL = {ChannelKind.SMS: "sms", ChannelKind.EMAIL: "email", ChannelKind.SQS: "sqs"}
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Client input is checked against these before it reaches a parser, a MAC comparison or a table key.
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_EPOCH = re.compile(r"^[0-9]{1,12}$")
_ALERT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")  # uuid5 strings (functions/logic/match.py)
_DEPLOYMENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")  # lfr_core.contracts.DeploymentId
MAX_TOKEN_CHARS = 4096  # an lfr token is ~200 chars; API Gateway allows 10 KiB of headers
MAX_SIG_CHARS = 128  # a link signature is 43 chars


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


# ------------------------------------------------------------------------------ tokens


def issue_token(key: bytes, officer_id: str, deployment_id: str, expires_at: datetime, now: datetime) -> str:
    payload = {"sub": officer_id, "dep": deployment_id, "exp": int(expires_at.timestamp()), "iat": int(now.timestamp())}
    body = f"{TOKEN_PREFIX}.{_b64(json.dumps(payload, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{body}.{_mac(key, body)}"


def verify_token(key: bytes, token: str, now: datetime) -> Claims:
    """Claims of a well-signed, unexpired token; `TokenError(reason)` for anything else, whatever the
    input (tests/unit/test_officer_hostile.py checks that property over arbitrary text and payloads)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not all(_B64URL.fullmatch(p) for p in parts[1:]):
        raise TokenError("malformed")
    body = f"{parts[0]}.{parts[1]}"
    # Bytes, not str: compare_digest refuses non-ASCII str (the parts are ASCII by now anyway).
    if not hmac.compare_digest(_mac(key, body).encode("ascii"), parts[2].encode("ascii")):
        raise TokenError("bad_signature")
    try:
        payload = TokenPayload.model_validate_json(_unb64(parts[1]))
        claims = Claims(
            officer_id=payload.sub,
            deployment_id=payload.dep,
            expires_at=datetime.fromtimestamp(payload.exp, UTC),
            via="token",
        )
    except (ValueError, ValidationError):  # binascii.Error is a ValueError
        raise TokenError("malformed") from None
    if now >= claims.expires_at:
        raise TokenError("expired", officer_id=claims.officer_id)
    return claims


def link_signature(key: bytes, deployment_id: str, alert_id: str, exp: int) -> str:
    return _mac(key, f"link|{deployment_id}|{alert_id}|{exp}")


def page_link(base_url: str, key: bytes, deployment_id: str, alert_id: str, now: datetime) -> str:
    exp = int(now.timestamp()) + LINK_TTL_S
    sig = link_signature(key, deployment_id, alert_id, exp)
    return f"{base_url.rstrip('/')}/alert/{deployment_id}/{alert_id}?exp={exp}&sig={sig}"


def _epoch(text: object) -> int | None:
    """An epoch-seconds query or claim value: ASCII digits only (`"²".isdigit()` is True), bounded."""
    if not isinstance(text, str) or not _EPOCH.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_EPOCH_S else None


def link_valid(key: bytes, deployment_id: str, alert_id: str, exp: str | None, sig: str | None, now: datetime) -> bool:
    exp_s = _epoch(exp)
    if exp_s is None or not isinstance(sig, str) or not sig.isascii() or len(sig) > MAX_SIG_CHARS:
        return False
    good = hmac.compare_digest(
        link_signature(key, deployment_id, alert_id, exp_s).encode("ascii"), sig.encode("ascii")
    )
    return good and now.timestamp() < exp_s


@dataclass
class PageLinks:
    """What the match function uses to put a link to the alert page in each notification."""

    base_url: str
    key: Callable[[], bytes]
    clock: Callable[[], datetime] = utcnow

    def __call__(self, deployment_id: str, alert_id: str) -> str:
        return page_link(self.base_url, self.key(), deployment_id, alert_id, self.clock())


# ------------------------------------------------------------------- officers' registration


class OfficerAdminError(Exception):
    """A refused `lfr officers` request, with a message fit for the terminal."""


def new_officer_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "officer"
    return f"{slug}-{secrets.token_hex(3)}"


def filter_policy(deployment_id: str) -> dict[str, list[str]]:
    return {"deployment_id": [deployment_id]}


def mask(kind: ChannelKind, address: str) -> str:
    if kind == ChannelKind.SMS:
        return address[:3] + "*" * max(0, len(address) - 6) + address[-3:]
    if kind == ChannelKind.EMAIL:
        user, _, domain = address.partition("@")
        return f"{user[:1]}***@{domain}"
    return f"…{address[-4:]}"


class OfficerAdmin:
    """`lfr officers ...`: register officers' channels on the alert topic, issue tokens."""

    def __init__(
        self,
        deployments: DeploymentRepository,
        officers: OfficerRepository,
        channels: OfficerChannels,
        key: Callable[[], bytes],
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.deployments = deployments
        self.officers = officers
        self.channels = channels
        self.key = key
        self.audit = audit
        self.clock = clock

    def _deployment(self, deployment_id: str) -> DeploymentRecord:
        dep = self.deployments.get(deployment_id)
        if dep is None:
            raise OfficerAdminError(f"no deployment {deployment_id!r}")
        return dep

    def add_platform(self, kind: ChannelKind, attributes: Mapping[str, str]) -> str:
        """Create (or return) the SNS platform application for APNs/FCM from admin-supplied credentials."""
        platform, name = PLATFORM_APPS[kind]
        existing = self.channels.find_platform_application(name)
        return existing or self.channels.create_platform_application(name, platform, attributes)

    def add_officer(
        self, deployment_id: str, name: str, addresses: Iterable[tuple[ChannelKind, str]], actor: str = "admin"
    ) -> OfficerRecord:
        dep = self._deployment(deployment_id)
        wanted = list(addresses)
        if not wanted:
            raise OfficerAdminError("give at least one of --apns, --fcm, --sms, --email")
        for kind, address in wanted:
            if kind == ChannelKind.SMS and not _E164.match(address):
                raise OfficerAdminError(f"--sms {address!r} is not an E.164 number (e.g. +447700900123)")
            if kind == ChannelKind.EMAIL and not _EMAIL.match(address):
                raise OfficerAdminError(f"--email {address!r} is not an email address")
            if kind in PLATFORM_APPS and not re.fullmatch(r"[A-Za-z0-9:_\-]{8,4096}", address):
                raise OfficerAdminError(f"--{kind.value} device token looks malformed")
        officer_id = new_officer_id(name)
        made: list[Channel] = []
        try:
            for kind, address in wanted:
                made.append(self._channel(dep.deployment_id, officer_id, kind, address))
        except Exception:
            for ch in made:  # all or nothing: no half-registered officer keeps receiving alerts
                self._remove(ch)
            raise
        record = OfficerRecord(
            deployment_id=dep.deployment_id, officer_id=officer_id, name=name, created_at=self.clock(), channels=made
        )
        self.officers.put(record)
        if self.audit is not None:
            self.audit.record(
                actor, AuditAction.AUTHORISE, dep.deployment_id,
                what="officer_added", officer_id=officer_id, channels=",".join(c.kind.value for c in made),
            )
        return record

    def _channel(self, deployment_id: str, officer_id: str, kind: ChannelKind, address: str) -> Channel:
        policy = filter_policy(deployment_id)
        if kind in PLATFORM_APPS:
            platform, name = PLATFORM_APPS[kind]
            app = self.channels.find_platform_application(name)
            if app is None:
                raise OfficerAdminError(
                    f"no {platform} platform application: run `lfr officers platform {kind.value} ...` "
                    "with the credentials first"
                )
            endpoint = self.channels.create_platform_endpoint(app, address, f"{deployment_id}/{officer_id}")
            try:
                sub = self.channels.subscribe("application", endpoint, policy)
            except Exception:
                self.channels.delete_endpoint(endpoint)
                raise
            return Channel(kind=kind, subscription_arn=sub, endpoint_arn=endpoint, hint=mask(kind, address))
        sub = self.channels.subscribe(SNS_PROTOCOL[kind], address, policy)
        return Channel(kind=kind, subscription_arn=sub, hint=mask(kind, address))

    def _remove(self, ch: Channel) -> None:
        self.channels.unsubscribe(ch.subscription_arn)
        if ch.endpoint_arn:
            self.channels.delete_endpoint(ch.endpoint_arn)

    def revoke(self, deployment_id: str, officer_id: str, actor: str = "admin") -> OfficerRecord:
        rec = self.officers.get(deployment_id, officer_id)
        if rec is None:
            raise OfficerAdminError(f"no officer {officer_id!r} in deployment {deployment_id!r}")
        for ch in rec.channels:
            self._remove(ch)
        rec = rec.model_copy(update={"revoked_at": self.clock(), "channels": []})
        self.officers.put(rec)
        if self.audit is not None:
            self.audit.record(
                actor, AuditAction.AUTHORISE, deployment_id, what="officer_revoked", officer_id=officer_id
            )
        return rec

    def token(self, deployment_id: str, officer_id: str) -> tuple[str, datetime]:
        dep = self._deployment(deployment_id)
        rec = self.officers.get(deployment_id, officer_id)
        if rec is None or rec.revoked_at is not None:
            raise OfficerAdminError(f"no current officer {officer_id!r} in deployment {deployment_id!r}")
        if dep.expires_at is None:
            raise OfficerAdminError(f"deployment {deployment_id} has not started: tokens expire with it")
        now = self.clock()
        if not dep.is_live(now):
            raise OfficerAdminError(f"deployment {deployment_id} is {dep.state}: no token for an ended deployment")
        return issue_token(self.key(), officer_id, deployment_id, dep.expires_at, now), dep.expires_at


# ------------------------------------------------------------------------ the alert page API


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision


def _response(status: int, body: Any, content_type: str = "application/json") -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "statusCode": status,
        "headers": {
            "Content-Type": content_type,
            # Alert data and presigned URLs must not sit in caches or leak through referrers.
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
        "body": text,
    }


FORBIDDEN = {"message": "forbidden"}  # the same body for every refusal: it says nothing of the alert

# Failed access. Every refusal is a structured log line (reason, ids, source IP; never the token)
# and a `FailedAccess` count, in total and per reason (alarmed in infra/constructs/officers.py).
# Only a refusal that follows a token we signed (or Cognito verified) is also appended to the
# Object Lock audit log, and at most once per officer, deployment and reason per window per
# container, the entry carrying how many refusals it stands for. Why not every refusal: the audit
# log keeps each object for years, so an anonymous request that wrote one would let anyone grow
# locked storage at the API's rate (50/s); anonymous refusals carry no identity to audit anyway,
# and the API access log and the metric keep them. The bound: containers (the function's reserved
# concurrency) x issued tokens' officers x reasons x windows.
FAILED_ACCESS_METRIC = "FailedAccess"
FAILED_ACCESS_AUDIT_WINDOW_S = 60 * 60
_MAX_TRACKED_REFUSERS = 10_000  # memory bound of the per-container window table


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


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _safe_id(value: str) -> str | None:
    """A client-given id fit for logs and the audit log, or None."""
    return value if _DEPLOYMENT_ID.fullmatch(value) or _ALERT_ID.fullmatch(value) else None


class OfficerApi:
    def __init__(
        self,
        deployments: DeploymentRepository,
        alerts: AlertRepository,
        officers: OfficerRepository,
        links: EvidenceLinks,
        key: Callable[[], bytes],
        alerts_bucket: str,
        watchlist_bucket: str,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: MetricsSink | None = None,
        console: Console | None = None,
    ) -> None:
        self.console = console
        self.deployments = deployments
        self.alerts = alerts
        self.officers = officers
        self.links = links
        self.key = key
        self.alerts_bucket = alerts_bucket
        self.watchlist_bucket = watchlist_bucket
        self.audit = audit
        self.clock = clock
        self.metrics: MetricsSink = metrics or PowertoolsMetricsSink()
        self.failed_access = FailedAccessAudit()
        self._page: str | None = None

    @property
    def page(self) -> str:
        if self._page is None:
            self._page = PAGE_FILE.read_text(encoding="utf-8")
        return self._page

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        resource = _str(event.get("resource"))
        method = _str(event.get("httpMethod")).upper()
        params = _dict(event.get("pathParameters"))
        dep_id, alert_id = _str(params.get("deployment_id")), _str(params.get("alert_id"))
        if resource == PAGE_RESOURCE and method == "GET":
            # Static: the page holds nothing of any alert until its script fetches with a token.
            return _response(200, self.page, "text/html; charset=utf-8")
        if self.console is not None and resource in (CONSOLE_PAGE_RESOURCE, TOKEN_CONSOLE_RESOURCE) and method == "GET":
            return self._console(event, resource, dep_id)
        routes = {
            (TOKEN_ALERT_RESOURCE, "GET"): self._get_alert,
            (COGNITO_ALERT_RESOURCE, "GET"): self._get_alert,
            (TOKEN_DECISION_RESOURCE, "POST"): self._decide,
            (COGNITO_DECISION_RESOURCE, "POST"): self._decide,
        }
        action = routes.get((resource, method))
        if action is None:
            return _response(404, {"message": "not found"})
        claims = self._authorise(event, dep_id, alert_id, cognito=not resource.startswith("/t/"))
        if claims is None:
            return _response(403, FORBIDDEN)
        return action(event, claims, dep_id, alert_id)

    def _console(self, event: Mapping[str, Any], resource: str, dep_id: str) -> dict[str, Any]:
        assert self.console is not None
        if resource == CONSOLE_PAGE_RESOURCE:
            # Static too; the CSP allows only its own inline script and style (by hash).
            html = self.console.page
            resp = _response(200, html, "text/html; charset=utf-8")
            resp["headers"]["Content-Security-Policy"] = content_security_policy(html)
            return resp
        if self._authorise(event, dep_id, "", cognito=False) is None:
            return _response(403, FORBIDDEN)
        dep = self.deployments.get(dep_id)
        if dep is None:
            return _response(403, FORBIDDEN)
        return _response(200, self.console.state(dep))

    # -- authorisation

    def _deny(
        self, event: Mapping[str, Any], reason: AccessRefusal, deployment_id: str, alert_id: str,
        officer_id: str | None,
    ) -> None:
        now = self.clock()
        dep, alert = _safe_id(deployment_id), _safe_id(alert_id)
        refusals = None
        if reason.identified and officer_id and self.audit is not None:
            refusals = self.failed_access.admit((officer_id, dep or "", reason.value), now)
        self.metrics.count(FAILED_ACCESS_METRIC)
        self.metrics.count(FAILED_ACCESS_METRIC, dimensions={"reason": reason.value})
        source_ip = _str(_dict(_dict(event.get("requestContext")).get("identity")).get("sourceIp"))[:64]
        logger.warning(
            "officer access refused",
            extra={"reason": reason.value, "deployment_id": dep, "alert_id": alert, "officer_id": officer_id,
                   "source_ip": source_ip or None, "audited": refusals is not None},
        )
        if refusals is not None and self.audit is not None:
            self.audit.record(
                f"officer:{officer_id}",
                AuditAction.FAILED_ACCESS,
                dep,
                reason=reason.value,
                alert_id=alert or "",
                surface="alert_page_api",
                refusals_since_last_entry=refusals,
            )

    def _claims(self, event: Mapping[str, Any], cognito: bool, now: datetime) -> Claims:
        if cognito:
            raw = _dict(_dict(_dict(event.get("requestContext")).get("authorizer")).get("claims"))
            officer, dep = raw.get(COGNITO_OFFICER_CLAIM), raw.get(COGNITO_DEPLOYMENT_CLAIM)
            exp = _epoch(raw.get("exp"))
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
        headers = {str(k).lower(): v for k, v in _dict(event.get("headers")).items()}
        auth = _str(headers.get("authorization"))
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            raise TokenError("missing")
        return verify_token(self.key(), token, now)

    def _authorise(self, event: Mapping[str, Any], dep_id: str, alert_id: str, cognito: bool) -> Claims | None:
        now = self.clock()
        try:
            claims = self._claims(event, cognito, now)
        except TokenError as exc:
            # An expired token was still signed by us (or verified by Cognito): it names its officer.
            tag = f"token_{exc.reason}"
            reason = AccessRefusal(tag) if tag in AccessRefusal.__members__.values() else AccessRefusal.TOKEN_MALFORMED
            self._deny(event, reason, dep_id, alert_id, exc.officer_id)
            return None
        if claims.deployment_id != dep_id:
            self._deny(event, AccessRefusal.FOREIGN_DEPLOYMENT, dep_id, alert_id, claims.officer_id)
            return None
        officer = self.officers.get(dep_id, claims.officer_id)
        if officer is None or officer.revoked_at is not None:
            self._deny(event, AccessRefusal.UNKNOWN_OR_REVOKED_OFFICER, dep_id, alert_id, claims.officer_id)
            return None
        dep = self.deployments.get(dep_id)
        if dep is None or not dep.is_live(now):
            # Access ends with the deployment, whatever the token's own expiry says.
            self._deny(event, AccessRefusal.DEPLOYMENT_ENDED, dep_id, alert_id, claims.officer_id)
            return None
        return claims

    # -- actions

    def _alert(self, dep_id: str, alert_id: str) -> AlertRecord | None:
        # A path parameter that is no alert id never reaches DynamoDB (which would refuse an
        # over-long key with a ValidationException, i.e. a 5xx): it is simply not found.
        return self.alerts.get(dep_id, alert_id) if _ALERT_ID.fullmatch(alert_id) else None

    def _get_alert(self, event: Mapping[str, Any], claims: Claims, dep_id: str, alert_id: str) -> dict[str, Any]:
        query = _dict(event.get("queryStringParameters"))
        if claims.via == "token" and not link_valid(
            self.key(), dep_id, alert_id, query.get("exp"), query.get("sig"), self.clock()
        ):
            self._deny(event, AccessRefusal.LINK_INVALID, dep_id, alert_id, claims.officer_id)
            return _response(403, FORBIDDEN)
        alert = self._alert(dep_id, alert_id)
        if alert is None:
            return _response(404, {"message": "not found"})
        return _response(200, self.view(alert))

    def view(self, alert: AlertRecord) -> dict[str, Any]:
        # Encounter (functions/logic/encounters.py): every sighting this alert stands for.
        encounter = {"sightings": alert.sightings, "cameras": list(alert.cameras) or [alert.camera_id],
                     "last_seen_at": (alert.last_seen_at or alert.captured_at).isoformat()}
        watchlist_url = None
        if alert.watchlist_image_key:
            watchlist_url = self.links.presign(self.watchlist_bucket, alert.watchlist_image_key, EVIDENCE_URL_TTL_S)
        return {
            "alert_id": alert.alert_id,
            "deployment_id": alert.deployment_id,
            "camera_id": alert.camera_id,
            "captured_at": alert.captured_at.isoformat(),
            "alerted_at": alert.alerted_at.isoformat(),
            "similarity": round(alert.similarity, 3),
            "threshold": round(alert.threshold, 3),
            "watchlist_label": alert.watchlist_label,
            "watchlist_reference": alert.watchlist_reference or alert.watchlist_entry_id,
            "watchlist_reason": alert.watchlist_reason,
            "revision": alert.revision,
            "decision": alert.decision.value if alert.decision else None,
            "decided_at": alert.decided_at.isoformat() if alert.decided_at else None,
            "probe_url": self.links.presign(self.alerts_bucket, alert.crop_key, EVIDENCE_URL_TTL_S),
            "watchlist_url": watchlist_url,
            "urls_expire_in_s": EVIDENCE_URL_TTL_S,
            **encounter,
        }

    def _decide(self, event: Mapping[str, Any], claims: Claims, dep_id: str, alert_id: str) -> dict[str, Any]:
        try:
            raw = _str(event.get("body"))
            if event.get("isBase64Encoded"):
                raw = base64.b64decode(raw, validate=True).decode("utf-8")
            req = DecisionRequest.model_validate_json(raw)
        except (ValidationError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            return _response(400, {"message": f"body must be {{\"decision\": one of {[d.value for d in Decision]}}}"})
        if self._alert(dep_id, alert_id) is None:
            return _response(404, {"message": "not found"})
        now = self.clock()
        actor = f"officer:{claims.officer_id}"
        try:
            recorded = self.alerts.set_decision(dep_id, alert_id, req.decision.value, actor, now)
        except ObjectNotFoundError:
            return _response(404, {"message": "not found"})
        if not recorded:
            current = self._alert(dep_id, alert_id)
            return _response(409, {
                "message": "already decided",
                "decision": current.decision.value if current and current.decision else None,
            })
        if self.audit is not None:
            self.audit.record(
                actor, AuditAction.ADJUDICATION, dep_id, alert_id=alert_id, decision=req.decision.value, via=claims.via
            )
        else:
            # Hook: stacks without the audit bucket keep the decision on the alert record only.
            logger.warning("decision not audited: no audit log configured", extra={"deployment_id": dep_id})
        logger.info("alert decided", extra={"deployment_id": dep_id, "alert_id": alert_id, "decision": req.decision})
        return _response(200, {"alert_id": alert_id, "decision": req.decision.value, "decided_at": now.isoformat()})


# -------------------------------------------------------------------------------- outcomes


def outcome_counts(alerts: Iterable[AlertRecord]) -> dict[str, int]:
    """True/false/unresolved alerts from officers' decisions. Unresolved = "could not locate"
    plus no decision; it is never counted as true."""
    out = {"alerts": 0, "true": 0, "false": 0, "unresolved": 0, "could_not_locate": 0, "undecided": 0}
    for a in alerts:
        out["alerts"] += 1
        if a.decision == Decision.CONFIRMED:
            out["true"] += 1
        elif a.decision == Decision.NOT_A_MATCH:
            out["false"] += 1
        else:
            out["unresolved"] += 1
            out["could_not_locate" if a.decision == Decision.NOT_LOCATED else "undecided"] += 1
    return out


def latency_summary(alerts: Iterable[AlertRecord]) -> dict[str, float | int | None]:
    """Crop enqueued -> SNS publish, per alert (the last publish of each alert)."""
    values = sorted(a.queue_to_publish_ms for a in alerts if a.queue_to_publish_ms is not None)
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(values[-1], 1),
    }
