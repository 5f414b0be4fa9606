"""The van's console API over in-memory adapters: bound to its deployment's officers, and holding
only matched encounters (crops by presigned URL), camera counts, queue depth and the session."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest

from functions.logic.audit_log import AuditLog, read_events
from functions.logic.console import Console
from functions.logic.encounters import record_camera_activity
from functions.logic.officer_api import CONSOLE_PAGE_RESOURCE, FORBIDDEN, TOKEN_CONSOLE_RESOURCE, OfficerApi
from functions.logic.tokens import issue_token
from functions.models.officers import OfficerRecord
from functions.models.records import AlertRecord, Decision
from lfr_core.contracts import AuditAction
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryDeploymentRepository,
    InMemoryEvidenceLinks,
    InMemoryOfficerRepository,
    InMemoryQueueStats,
)
from tests.unit.functions_support import NOW, Clock, deployment

KEY = b"k" * 64
DEP, OTHER = "dep-a", "dep-b"
EXPIRY = int(NOW.timestamp()) + 31 * 86400  # what the match function would pass for a 31-day item


def _alert(alert_id: str, label: str, **kw: Any) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id, deployment_id=DEP, camera_id="cam-1", track_id="t", crop_message_id="m" * 10,
        captured_at=NOW, alerted_at=NOW, watchlist_entry_id=f"{label}_0001", watchlist_label=label,
        similarity=0.7, threshold=0.55, crop_key=f"alerts/{DEP}/{alert_id}.jpg", expires_at_epoch=0,
        encounter_window_s=120, **kw,
    )


@pytest.fixture
def world() -> tuple[OfficerApi, InMemoryAlertRepository, InMemoryAuditStore, Clock]:
    deps = InMemoryDeploymentRepository()
    for d in (DEP, OTHER):
        deps.create(deployment(d, duration_s=3600))
    alerts = InMemoryAlertRepository()
    alerts.put_new(_alert("enc-1", "Jane", tracks=["cam-1/t1", "cam-2/t7"], cameras=("cam-1", "cam-2")))
    alerts.put_new(_alert("enc-2", "John", decision=Decision.NOT_A_MATCH))
    officers = InMemoryOfficerRepository()
    officers.put(OfficerRecord(deployment_id=DEP, officer_id="op-1", name="Operator", created_at=NOW))
    officers.put(OfficerRecord(deployment_id=OTHER, officer_id="op-2", name="Other", created_at=NOW))
    clock = Clock(NOW)
    links = InMemoryEvidenceLinks()
    store = InMemoryAuditStore()
    api = OfficerApi(
        deployments=deps, alerts=alerts, officers=officers, links=links, key=lambda: KEY,
        alerts_bucket="alerts", watchlist_bucket="watchlist", audit=AuditLog(store, clock=clock), clock=clock,
        console=Console(deployments=deps, alerts=alerts, links=links, alerts_bucket="alerts",
                        queue=InMemoryQueueStats(), clock=clock),
    )
    return api, alerts, store, clock


def _get(token: str | None, dep: str = DEP) -> dict[str, Any]:
    return {"resource": TOKEN_CONSOLE_RESOURCE, "httpMethod": "GET", "pathParameters": {"deployment_id": dep},
            "headers": {"Authorization": f"Bearer {token}"} if token else {}}


def _token(officer: str = "op-1", dep: str = DEP) -> str:
    return issue_token(KEY, officer, dep, NOW + timedelta(hours=1), NOW)


def test_state_lists_encounters_cameras_queue_and_session(world: Any) -> None:
    api, alerts, _, clock = world
    record_camera_activity(alerts, [(DEP, "cam-1", None)] * 4 + [(DEP, "cam-2", None)], NOW - timedelta(seconds=30),
                           lambda _: EXPIRY)
    record_camera_activity(alerts, [(DEP, "cam-1", int(NOW.timestamp() * 1000) - 800)], NOW, lambda _: EXPIRY)
    clock.advance(5)
    resp = api.handle(_get(_token()))
    assert resp["statusCode"] == 200 and resp["headers"]["Cache-Control"] == "no-store"
    doc = json.loads(resp["body"])
    assert doc["deployment"]["deployment_id"] == DEP and doc["deployment"]["live"]
    assert doc["deployment"]["encounter_window_s"] == 120
    expires = deployment(DEP, duration_s=3600).expires_at
    assert expires is not None and doc["deployment"]["time_left_s"] == int((expires - clock()).total_seconds())
    by_id = {e["alert_id"]: e for e in doc["encounters"]}
    assert by_id["enc-1"]["state"] == "unresolved" and by_id["enc-1"]["sightings"] == 2
    assert by_id["enc-1"]["cameras"] == ["cam-1", "cam-2"] and by_id["enc-1"]["open"]
    assert by_id["enc-2"]["state"] == "rejected"
    assert by_id["enc-1"]["crop_url"] == "https://alerts.example/alerts/dep-a/enc-1.jpg?expires=300"
    assert doc["counts"] == {"unresolved": 1, "confirmed": 0, "rejected": 1, "could_not_locate": 0}
    cams = {c["camera_id"]: c for c in doc["cameras"]}
    assert cams["cam-1"]["messages"] == 5 and cams["cam-1"]["per_minute"] == 4 and cams["cam-1"]["this_minute"] == 1
    assert cams["cam-1"]["up"] and cams["cam-1"]["seconds_since"] == 5.0
    assert doc["queue"] == {"waiting": 3, "in_flight": 1, "last_wait_ms": 800.0}


def test_console_refuses_other_deployments_officers_and_ended_sessions(world: Any) -> None:
    api, _, store, clock = world
    for token, dep in ((None, DEP), (_token("op-2", OTHER), DEP), (_token("op-1", DEP), OTHER), ("lfr1.x.y", DEP)):
        resp = api.handle(_get(token, dep))
        assert resp["statusCode"] == 403 and json.loads(resp["body"]) == FORBIDDEN
    clock.advance(2 * 3600)  # the deployment has expired: the token with it
    assert api.handle(_get(_token()))["statusCode"] == 403
    refusals = [e.parsed_event() for e in read_events(store)]
    # The refusals that name an officer are audited; the anonymous two (no token, a forged one) are
    # logged and counted only (tests/unit/test_officer_hostile.py).
    assert all(e.action == AuditAction.FAILED_ACCESS for e in refusals)
    assert [(e.actor, e.details["reason"]) for e in refusals] == [
        ("officer:op-2", "foreign_deployment"), ("officer:op-1", "foreign_deployment"),
        ("officer:op-1", "token_expired"),
    ]


def test_console_page_is_static_with_a_hash_pinned_csp(world: Any) -> None:
    api, *_ = world
    resp = api.handle({"resource": CONSOLE_PAGE_RESOURCE, "httpMethod": "GET",
                       "pathParameters": {"deployment_id": "anything"}})
    html = resp["body"]
    assert resp["statusCode"] == 200 and resp["headers"]["Content-Type"].startswith("text/html")
    csp = resp["headers"]["Content-Security-Policy"]
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing external
