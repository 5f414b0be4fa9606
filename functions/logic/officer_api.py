"""The officers' API (API Gateway REST proxy) on Powertools' `APIGatewayRestResolver`: the alert
page, an alert's data, officers' decisions, and the van's console (functions/logic/console.py).

Routes are the API's resources as declared in infra/constructs/officers.py. The resolver
dispatches on the resource API Gateway matched, with the path parameters API Gateway decoded
(`proxy_event`), not by matching the raw path again: a request reaches exactly the route the
gateway authorised it for, and an id holding a `/` or nothing cannot land on another route.

Errors are typed (functions/exceptions.py) and answered by the exception handlers below:
`TokenError`/`AccessRefusedError` -> 403 with one body whatever the reason, after the refusal
is logged, counted and (when it names an officer) audited (functions/logic/officer_access.py);
`RequestNotFoundError` and an unknown route -> 404; `InvalidRequestBodyError` -> 400. Hostile
input of any shape is a 4xx, never an exception (tests/unit/test_officer_hostile.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, ValidationError

from functions.dal.officers import EvidenceLinks, OfficerRepository
from functions.dal.ports import AlertRepository, DeploymentRepository
from functions.exceptions import (
    AccessRefusedError,
    InvalidRequestBodyError,
    ObjectNotFoundError,
    RequestNotFoundError,
    TokenError,
)
from functions.logic.audit_log import AuditLog
from functions.logic.console import Console, content_security_policy
from functions.logic.officer_access import OfficerAccess, as_dict, as_str, refusal_of
from functions.logic.tokens import ALERT_ID
from functions.models.officers import Claims
from functions.models.records import AlertRecord, Decision
from functions.observability import MetricsSink, PowertoolsMetricsSink, logger
from lfr_core.contracts import AuditAction, utcnow

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

FORBIDDEN = {"message": "forbidden"}  # the same body for every refusal: it says nothing of the alert
NOT_FOUND = {"message": "not found"}
BAD_DECISION = {"message": f"body must be {{\"decision\": one of {[d.value for d in Decision]}}}"}
HTML = "text/html; charset=utf-8"
JSON = "application/json"


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision


def _response(status: int, body: Any, content_type: str = JSON, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_type,
        body=body if isinstance(body, str) else json.dumps(body),
        headers={
            # Alert data and presigned URLs must not sit in caches or leak through referrers.
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        },
    )


def proxy_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the resolver reads it: routed on its `resource`, and every field Powertools
    parses given the type it expects (a client or a test can send any shape; Powertools would
    raise on a non-object `headers`, i.e. a 5xx). Our own reads use `as_dict`/`as_str` too."""
    headers = {k: v for k, v in as_dict(event.get("headers")).items() if isinstance(k, str) and isinstance(v, str)}
    return {
        **event,
        "path": as_str(event.get("resource")),
        "httpMethod": as_str(event.get("httpMethod")).upper(),
        "headers": headers,
        "multiValueHeaders": None,  # not read by the routes; `headers` carries each one's value
        "requestContext": dict(as_dict(event.get("requestContext"))),
    }


class OfficerApi:
    """The API's routes over its ports; `handle(event, context)` answers one proxy event (the handler's one call)."""

    def __init__(
        self,
        deployments: DeploymentRepository,
        alerts: AlertRepository,
        officers: OfficerRepository,
        links: EvidenceLinks,
        key: Callable[[], bytes],
        alerts_bucket: str,
        watchlist_bucket: str,
        audit: AuditLog,
        console: Console,
        clock: Callable[[], datetime] = utcnow,
        metrics: MetricsSink | None = None,  # Powertools' own unless a test records them
    ) -> None:
        self.console = console
        self.deployments = deployments
        self.alerts = alerts
        self.links = links
        self.key = key
        self.alerts_bucket = alerts_bucket
        self.watchlist_bucket = watchlist_bucket
        self.audit = audit
        self.clock = clock
        self.access = OfficerAccess(
            deployments=deployments, officers=officers, key=key, audit=audit, clock=clock,
            metrics=metrics or PowertoolsMetricsSink(),
        )
        self._page: str | None = None
        # debug=False whatever POWERTOOLS_DEV says: debug mode prints the event, and it carries a bearer token.
        self.app = APIGatewayRestResolver(debug=False)
        self._register_routes()

    def handle(self, event: Mapping[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
        resp = self.app.resolve(proxy_event(event), context)  # type: ignore[arg-type]
        # One value per header, as the API has always answered (API Gateway takes either form).
        resp["headers"] = {k: ", ".join(v) for k, v in (resp.pop("multiValueHeaders", None) or {}).items()}
        return resp

    # -- routes and error mapping

    def _register_routes(self) -> None:
        app = self.app
        app.get(PAGE_RESOURCE)(self._alert_page)
        app.get(TOKEN_ALERT_RESOURCE)(lambda: self._get_alert(cognito=False))
        app.get(COGNITO_ALERT_RESOURCE)(lambda: self._get_alert(cognito=True))
        app.post(TOKEN_DECISION_RESOURCE)(lambda: self._decide(cognito=False))
        app.post(COGNITO_DECISION_RESOURCE)(lambda: self._decide(cognito=True))
        app.get(CONSOLE_PAGE_RESOURCE)(self._console_page)
        app.get(TOKEN_CONSOLE_RESOURCE)(self._console_state)
        app.exception_handler([TokenError, AccessRefusedError])(self._refused)
        app.exception_handler(RequestNotFoundError)(lambda _: _response(404, NOT_FOUND))
        app.not_found(lambda _: _response(404, NOT_FOUND))
        app.exception_handler(InvalidRequestBodyError)(lambda _: _response(400, BAD_DECISION))

    def _event(self) -> Mapping[str, Any]:
        return self.app.current_event.raw_event

    def _ids(self) -> tuple[str, str]:
        params = as_dict(self._event().get("pathParameters"))
        return as_str(params.get("deployment_id")), as_str(params.get("alert_id"))

    def _refused(self, exc: TokenError | AccessRefusedError) -> Response:
        dep_id, alert_id = self._ids()
        self.access.refuse(self._event(), refusal_of(exc), dep_id, alert_id, exc.officer_id)
        return _response(403, FORBIDDEN)

    # -- the alert page and the console

    @property
    def page(self) -> str:
        if self._page is None:
            self._page = PAGE_FILE.read_text(encoding="utf-8")
        return self._page

    def _alert_page(self) -> Response:
        # Static: the page holds nothing of any alert until its script fetches with a token.
        return _response(200, self.page, HTML)

    def _console_page(self) -> Response:
        # Static too; the CSP allows only its own inline script and style (by hash).
        html = self.console.page
        return _response(200, html, HTML, {"Content-Security-Policy": content_security_policy(html)})

    def _console_state(self) -> Response:
        dep_id, _ = self._ids()
        self.access.authorise(self._event(), dep_id, cognito=False)
        dep = self.deployments.get(dep_id)
        if dep is None:
            return _response(403, FORBIDDEN)
        return _response(200, self.console.state(dep))

    # -- alerts

    def _alert(self, dep_id: str, alert_id: str) -> AlertRecord | None:
        # A path parameter that is no alert id never reaches DynamoDB (which would refuse an
        # over-long key with a ValidationException, i.e. a 5xx): it is simply not found.
        return self.alerts.get(dep_id, alert_id) if ALERT_ID.fullmatch(alert_id) else None

    def _get_alert(self, cognito: bool) -> Response:
        dep_id, alert_id = self._ids()
        claims = self.access.authorise(self._event(), dep_id, cognito)
        self.access.check_link(self._event(), claims, dep_id, alert_id)
        alert = self._alert(dep_id, alert_id)
        if alert is None:
            raise RequestNotFoundError(alert_id)
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

    def _decision_request(self) -> DecisionRequest:
        event = self._event()
        try:
            raw = as_str(event.get("body"))
            if event.get("isBase64Encoded"):
                raw = base64.b64decode(raw, validate=True).decode("utf-8")
            return DecisionRequest.model_validate_json(raw)
        except (ValidationError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise InvalidRequestBodyError("decision body") from None

    def _decide(self, cognito: bool) -> Response:
        dep_id, alert_id = self._ids()
        claims = self.access.authorise(self._event(), dep_id, cognito)
        return self.decide(claims, dep_id, alert_id, self._decision_request())

    def decide(self, claims: Claims, dep_id: str, alert_id: str, req: DecisionRequest) -> Response:
        """Record an authorised officer's decision on an alert (its whole encounter), once."""
        if self._alert(dep_id, alert_id) is None:
            raise RequestNotFoundError(alert_id)
        now = self.clock()
        actor = f"officer:{claims.officer_id}"
        try:
            recorded = self.alerts.set_decision(dep_id, alert_id, req.decision.value, actor, now)
        except ObjectNotFoundError:
            raise RequestNotFoundError(alert_id) from None
        if not recorded:
            current = self._alert(dep_id, alert_id)
            return _response(409, {
                "message": "already decided",
                "decision": current.decision.value if current and current.decision else None,
            })
        self.audit.record(
            actor, AuditAction.ADJUDICATION, dep_id, alert_id=alert_id, decision=req.decision.value, via=claims.via
        )
        logger.info("alert decided", extra={"deployment_id": dep_id, "alert_id": alert_id, "decision": req.decision})
        return _response(200, {"alert_id": alert_id, "decision": req.decision.value, "decided_at": now.isoformat()})
