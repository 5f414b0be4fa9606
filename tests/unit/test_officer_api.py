"""Officer tokens, the alert page API's refusals and decisions, and the outcome counts (in-memory adapters)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from functions.exceptions import TokenError
from functions.logic.audit_log import AuditLog, read_events, verify_chain
from functions.logic.officer_api import FORBIDDEN, TOKEN_ALERT_RESOURCE, TOKEN_DECISION_RESOURCE, OfficerApi
from functions.logic.tokens import issue_token, page_link, verify_token
from functions.models.officers import OfficerRecord
from functions.models.records import AlertRecord, Decision
from lfr_cli.reporting import latency_summary, outcome_counts
from lfr_core.contracts import AuditAction
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryDeploymentRepository,
    InMemoryEvidenceLinks,
    InMemoryOfficerRepository,
)
from tests.unit.functions_support import (
    NOW,
    Clock,
    console_over,
    deployment,
)

KEY = b"k" * 64
DEP, OTHER = "dep-a", "dep-b"
ALERT_ID = "alert-1"


def _alert(alert_id: str = ALERT_ID, dep: str = DEP, **kw: Any) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id, deployment_id=dep, camera_id="cam-1", track_id="t", crop_message_id="m" * 10,
        captured_at=NOW, alerted_at=NOW, watchlist_entry_id="e1", watchlist_label="Jane", similarity=0.7,
        threshold=0.55, crop_key=f"alerts/{dep}/{alert_id}.jpg", expires_at_epoch=0,
        watchlist_image_key=f"deployments/{dep}/watchlist/images/e1.jpg", **kw,
    )


@pytest.fixture
def api() -> tuple[OfficerApi, InMemoryAlertRepository, InMemoryAuditStore, Clock]:
    deps = InMemoryDeploymentRepository()
    for d in (DEP, OTHER):
        deps.create(deployment(d))
    alerts = InMemoryAlertRepository()
    alerts.put_new(_alert())
    alerts.put_new(_alert(dep=OTHER))
    officers = InMemoryOfficerRepository()
    officers.put(OfficerRecord(deployment_id=DEP, officer_id="pc-1", name="PC One", created_at=NOW))
    officers.put(OfficerRecord(deployment_id=OTHER, officer_id="pc-2", name="PC Two", created_at=NOW))
    store = InMemoryAuditStore()
    clock = Clock(NOW)
    service = OfficerApi(
        deployments=deps, alerts=alerts, officers=officers, links=(links := InMemoryEvidenceLinks()), key=lambda: KEY,
        alerts_bucket="alerts", watchlist_bucket="watchlist", audit=AuditLog(store, clock=clock), clock=clock,
        console=console_over(deps, alerts, links, clock),
    )
    return service, alerts, store, clock


def _token(officer: str = "pc-1", dep: str = DEP, hours: float = 1.0) -> str:
    return issue_token(KEY, officer, dep, NOW + timedelta(hours=hours), NOW)


def _get(token: str | None, dep: str = DEP, link: str | None = None) -> dict[str, Any]:
    link = link or page_link("https://x/prod/", KEY, dep, ALERT_ID, NOW)
    query = dict(p.split("=", 1) for p in link.split("?", 1)[1].split("&"))
    return {
        "resource": TOKEN_ALERT_RESOURCE, "httpMethod": "GET",
        "pathParameters": {"deployment_id": dep, "alert_id": ALERT_ID},
        "queryStringParameters": query, "headers": {"Authorization": f"Bearer {token}"} if token else {},
    }


def _post(token: str, decision: str, dep: str = DEP) -> dict[str, Any]:
    return {
        "resource": TOKEN_DECISION_RESOURCE, "httpMethod": "POST",
        "pathParameters": {"deployment_id": dep, "alert_id": ALERT_ID},
        "headers": {"authorization": f"Bearer {token}"}, "body": json.dumps({"decision": decision}),
    }


def test_token_round_trip_and_refusals() -> None:
    claims = verify_token(KEY, _token(), NOW)
    assert (claims.officer_id, claims.deployment_id) == ("pc-1", DEP)
    with pytest.raises(TokenError) as e:
        verify_token(KEY, _token(), NOW + timedelta(hours=1))
    assert e.value.reason == "expired"
    head, body, mac = _token().split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad, reason in ((f"{head}.{forged}.{mac}", "bad_signature"), ("nonsense", "malformed")):
        with pytest.raises(TokenError) as e:
            verify_token(KEY, bad, NOW)
        assert e.value.reason == reason
    with pytest.raises(TokenError):
        verify_token(b"another key" * 4, _token(), NOW)


def test_valid_token_sees_the_alert(api: Any) -> None:
    service, *_ = api
    resp = service.handle(_get(_token()))
    assert resp["statusCode"] == 200 and resp["headers"]["Cache-Control"] == "no-store"
    view = json.loads(resp["body"])
    assert view["alert_id"] == ALERT_ID and view["camera_id"] == "cam-1" and view["similarity"] == 0.7
    assert "alerts/dep-a/alert-1.jpg" in view["probe_url"] and "e1.jpg" in view["watchlist_url"]


@pytest.mark.parametrize(
    "case", ["expired", "foreign", "no_token", "revoked_deployment", "stale_link", "forged_link"]
)
def test_refusals_say_nothing_and_are_audited(api: Any, case: str) -> None:
    service, _, store, clock = api
    event = _get(_token())
    if case == "expired":
        event = _get(_token(hours=0.5))
        clock.advance(3600)
    elif case == "foreign":  # an officer of another deployment, with a valid token of theirs
        event = _get(_token("pc-2", OTHER))
        event["pathParameters"]["deployment_id"] = DEP
    elif case == "no_token":
        event = _get(None)
    elif case == "revoked_deployment":
        service.deployments.update(DEP, {"state": "STOPPED"})
    elif case == "stale_link":
        clock.advance(31 * 60)
    elif case == "forged_link":
        event["queryStringParameters"]["sig"] = "x" * 43
    resp = service.handle(event)
    assert resp["statusCode"] == 403 and json.loads(resp["body"]) == FORBIDDEN
    assert "cam-1" not in resp["body"] and ALERT_ID not in resp["body"]
    events = [e.parsed_event() for e in read_events(store)]
    if case == "no_token":  # anonymous: logged and counted, never in the Object Lock log (test_officer_hostile.py)
        assert events == []
        return
    assert [e.action for e in events] == [AuditAction.FAILED_ACCESS]
    assert events[0].actor == ("officer:pc-2" if case == "foreign" else "officer:pc-1")
    assert "Bearer" not in json.dumps(events[0].details)


def test_decision_recorded_once_audited_and_counted(api: Any) -> None:
    service, alerts, store, _ = api
    resp = service.handle(_post(_token(), "not_a_match"))
    assert resp["statusCode"] == 200
    rec = alerts.get(DEP, ALERT_ID)
    assert rec is not None and rec.decision == Decision.NOT_A_MATCH and rec.decided_by == "officer:pc-1"
    again = service.handle(_post(_token(), "match_confirmed"))
    assert again["statusCode"] == 400
    again = service.handle(_post(_token(), "confirmed_engaged"))
    assert again["statusCode"] == 409 and json.loads(again["body"])["decision"] == "not_a_match"
    (entry,) = read_events(store)
    ev = entry.parsed_event()
    assert ev.action == AuditAction.ADJUDICATION and ev.actor == "officer:pc-1"
    assert ev.details == {"alert_id": ALERT_ID, "decision": "not_a_match", "via": "token"}
    assert verify_chain(store.entries()).ok
    # Foreign officer cannot decide: 403, no change.
    assert service.handle(_post(_token("pc-2", OTHER), "confirmed_engaged"))["statusCode"] == 403


def test_outcome_counts_never_count_unresolved_as_true() -> None:
    alerts = [
        _alert("a1", decision=Decision.CONFIRMED),
        _alert("a2", decision=Decision.NOT_A_MATCH),
        _alert("a3", decision=Decision.NOT_LOCATED),
        _alert("a4"),
    ]
    assert outcome_counts(alerts) == {
        "alerts": 4, "true": 1, "false": 1, "unresolved": 2, "could_not_locate": 1, "undecided": 1
    }


def test_latency_summary() -> None:
    alerts = [_alert(f"a{i}", queue_to_publish_ms=float(v)) for i, v in enumerate([100, 200, 300, 400, 1000])]
    s = latency_summary([*alerts, _alert("none")])
    assert s["n"] == 5 and s["p50_ms"] == 300.0 and s["max_ms"] == 1000.0
    assert 400.0 < float(s["p95_ms"] or 0) <= 1000.0
    assert latency_summary([])["p50_ms"] is None
