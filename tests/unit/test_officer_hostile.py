"""Hostile input to the officers' API: malformed tokens, links, path parameters and bodies are
4xx refusals (never an exception, so never a 502 at the gateway), each one counted as a failed
access; and strangers cannot grow the Object Lock audit log (only refusals of a token we signed
are audited, at most once per officer, deployment and reason per window).

Through the real handler (`functions.handlers.officer_api.handler`, Powertools decorators and
all) over in-memory adapters; the same refusals against the embedded stack are in
tests/integration/test_officers_alert_page.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.exceptions import TokenError
from functions.handlers import officer_api
from functions.logic.audit_log import AuditLog, read_events
from functions.logic.officer_access import FAILED_ACCESS_AUDIT_WINDOW_S, FAILED_ACCESS_METRIC
from functions.logic.officer_api import (
    COGNITO_ALERT_RESOURCE,
    FORBIDDEN,
    TOKEN_ALERT_RESOURCE,
    TOKEN_DECISION_RESOURCE,
    OfficerApi,
)
from functions.logic.tokens import TOKEN_PREFIX, _b64, _mac, issue_token, page_link, verify_token
from functions.models.officers import AccessRefusal, OfficerRecord
from functions.models.records import AlertRecord
from functions.observability import PowertoolsMetricsSink
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
    RecordingMetrics,
    console_over,
    deployment,
)

KEY = b"k" * 64
DEP, OTHER = "dep-a", "dep-b"
ALERT_ID = "alert-1"


class StrictAlerts(InMemoryAlertRepository):
    """Refuses keys DynamoDB would refuse (empty, or longer than its 1,024-byte sort key limit)."""

    def get(self, deployment_id: str, alert_id: str) -> AlertRecord | None:
        if not alert_id or len(alert_id.encode()) > 1024 or not deployment_id:
            raise RuntimeError("ValidationException: key attribute out of range")
        return super().get(deployment_id, alert_id)


class FakeContext:
    function_name = "officer-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-2:000000000000:function:officer-api"
    memory_limit_in_mb = 256
    aws_request_id = "req-1"
    log_group_name = log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


class Env:
    def __init__(self) -> None:
        self.deployments = InMemoryDeploymentRepository()
        for d in (DEP, OTHER):
            self.deployments.create(deployment(d))
        self.alerts = StrictAlerts()
        self.alerts.put_new(AlertRecord(
            alert_id=ALERT_ID, deployment_id=DEP, camera_id="cam-1", track_id="t", crop_message_id="m" * 10,
            captured_at=NOW, alerted_at=NOW, watchlist_entry_id="e1", watchlist_label="Jane", similarity=0.7,
            threshold=0.55, crop_key=f"alerts/{DEP}/{ALERT_ID}.jpg", expires_at_epoch=0,
        ))
        officers = InMemoryOfficerRepository()
        officers.put(OfficerRecord(deployment_id=DEP, officer_id="pc-1", name="PC One", created_at=NOW))
        officers.put(OfficerRecord(deployment_id=OTHER, officer_id="pc-2", name="PC Two", created_at=NOW))
        self.store = InMemoryAuditStore()
        self.clock = Clock(NOW)
        self.metrics = RecordingMetrics()
        self.service = OfficerApi(
            deployments=self.deployments, alerts=self.alerts, officers=officers, links=InMemoryEvidenceLinks(),
            key=lambda: KEY, alerts_bucket="alerts", watchlist_bucket="watchlist",
            audit=AuditLog(self.store, clock=self.clock), clock=self.clock, metrics=self.metrics,
            console=console_over(self.deployments, self.alerts, InMemoryEvidenceLinks(), self.clock),
        )

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        return officer_api.handler(event, FakeContext())

    def audited(self) -> list[Any]:
        return [e.parsed_event() for e in read_events(self.store)]

    def refusals(self, reason: str | None = None) -> float:
        if reason is None:  # the total series: every count call adds to it, as PowertoolsMetricsSink emits
            return self.metrics.total(FAILED_ACCESS_METRIC)
        return self.metrics.counts.get((FAILED_ACCESS_METRIC, (("reason", reason),)), 0.0)


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    officer_api.set_service(e.service)
    yield e
    officer_api.set_service(None)


def _link_query(dep: str = DEP, alert_id: str = ALERT_ID) -> dict[str, str]:
    link = page_link("https://x/prod/", KEY, dep, alert_id, NOW)
    return dict(p.split("=", 1) for p in link.split("?", 1)[1].split("&"))


def _get(authorization: str | None, dep: str = DEP, alert_id: str = ALERT_ID,
         query: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "resource": TOKEN_ALERT_RESOURCE, "httpMethod": "GET",
        "pathParameters": {"deployment_id": dep, "alert_id": alert_id},
        "queryStringParameters": query if query is not None else _link_query(dep, alert_id),
        "headers": {"Authorization": authorization} if authorization is not None else None,
        "requestContext": {"identity": {"sourceIp": "203.0.113.9"}},
    }


def _token(officer: str = "pc-1", dep: str = DEP, hours: float = 1.0) -> str:
    return issue_token(KEY, officer, dep, NOW + timedelta(hours=hours), NOW)


def _sign_body(body: str) -> str:
    return f"{body}.{_mac(KEY, body)}"


def _signed(payload: bytes) -> str:
    """A token whose MAC is right for whatever payload bytes: the parser behind the MAC is reached."""
    return _sign_body(f"{TOKEN_PREFIX}.{_b64(payload)}")


def _signed_json(doc: Any) -> str:
    return _signed(json.dumps(doc).encode())


GOOD = {"sub": "pc-1", "dep": DEP, "exp": int((NOW + timedelta(hours=1)).timestamp()), "iat": int(NOW.timestamp())}
GOOD_TOKEN = _token()
EXP_1E308 = b'{"sub": "pc-1", "dep": "dep-a", "exp": 1e308, "iat": 0}'
GOOD_HEAD, GOOD_BODY, GOOD_MAC = GOOD_TOKEN.split(".")

# (case, Authorization header, reason counted). Every one is a 403 and a failed access.
MALFORMED: list[tuple[str, str, str]] = [
    ("non-ascii signature", f"Bearer {GOOD_HEAD}.{GOOD_BODY}.é", "token_malformed"),
    ("non-ascii signature, right length", f"Bearer {GOOD_HEAD}.{GOOD_BODY}.{GOOD_MAC[:-1]}é", "token_malformed"),
    ("non-ascii payload", f"Bearer {GOOD_HEAD}.{GOOD_BODY[:-1]}ö.{GOOD_MAC}", "token_malformed"),
    ("non-ascii prefix", f"Bearer lfr¹.{GOOD_BODY}.{GOOD_MAC}", "token_malformed"),
    ("astral plane", f"Bearer {GOOD_TOKEN}\U0001f600", "token_malformed"),
    ("NUL byte", f"Bearer {GOOD_HEAD}.{GOOD_BODY}\x00.{GOOD_MAC}", "token_malformed"),
    ("two parts", f"Bearer {GOOD_HEAD}.{GOOD_BODY}", "token_malformed"),
    ("four parts", f"Bearer {GOOD_TOKEN}.x", "token_malformed"),
    ("empty parts", "Bearer lfr1..", "token_malformed"),
    ("empty token", "Bearer ", "token_missing"),
    ("no scheme", GOOD_TOKEN, "token_missing"),
    ("basic scheme", "Basic dXNlcjpwYXNz", "token_missing"),
    ("wrong prefix", f"Bearer lfr2.{GOOD_BODY}.{GOOD_MAC}", "token_malformed"),
    ("forged payload", f"Bearer {GOOD_HEAD}.{_b64(json.dumps({**GOOD, 'sub': 'pc-2'}).encode())}.{GOOD_MAC}",
     "token_bad_signature"),
    ("base64 of one char, signed", f"Bearer {_sign_body(f'{TOKEN_PREFIX}.A')}", "token_malformed"),
    ("not JSON, signed", f"Bearer {_signed(b'not json')}", "token_malformed"),
    ("not UTF-8, signed", f"Bearer {_signed(bytes([0xff, 0xfe, 0x00]))}", "token_malformed"),
    ("JSON list, signed", f"Bearer {_signed_json([1, 2])}", "token_malformed"),
    ("JSON null, signed", f"Bearer {_signed_json(None)}", "token_malformed"),
    ("sub is a number", f"Bearer {_signed_json({**GOOD, 'sub': 123})}", "token_malformed"),
    ("sub is an object", f"Bearer {_signed_json({**GOOD, 'sub': {'a': 1}})}", "token_malformed"),
    ("dep not an id", f"Bearer {_signed_json({**GOOD, 'dep': '../dep-a'})}", "token_malformed"),
    ("exp a string", f"Bearer {_signed_json({**GOOD, 'exp': str(GOOD['exp'])})}", "token_malformed"),
    ("exp superscript two", f"Bearer {_signed_json({**GOOD, 'exp': '²'})}", "token_malformed"),
    ("exp arabic digits", f"Bearer {_signed_json({**GOOD, 'exp': '١٢٣'})}", "token_malformed"),
    ("exp true", f"Bearer {_signed_json({**GOOD, 'exp': True})}", "token_malformed"),
    ("exp float", f"Bearer {_signed_json({**GOOD, 'exp': 1.5e9})}", "token_malformed"),
    ("exp huge", f"Bearer {_signed_json({**GOOD, 'exp': 10**30})}", "token_malformed"),
    ("exp 1e308", f"Bearer {_signed(EXP_1E308)}", "token_malformed"),
    ("exp negative huge", f"Bearer {_signed_json({**GOOD, 'exp': -(10**30)})}", "token_malformed"),
    ("exp past year 9999", f"Bearer {_signed_json({**GOOD, 'exp': 253402300800 * 10})}", "token_malformed"),
    ("iat huge", f"Bearer {_signed_json({**GOOD, 'iat': 10**400})}", "token_malformed"),
    ("missing exp", f"Bearer {_signed_json({k: v for k, v in GOOD.items() if k != 'exp'})}", "token_malformed"),
    ("missing sub", f"Bearer {_signed_json({k: v for k, v in GOOD.items() if k != 'sub'})}", "token_malformed"),
    ("very long header", "Bearer " + "A" * 200_000, "token_malformed"),
    ("very long signed payload", f"Bearer {_signed_json({**GOOD, 'pad': 'x' * 50_000})}", "token_malformed"),
]


@pytest.mark.parametrize(("case", "authorization", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_tokens_are_403_counted_and_never_audited(
    env: Env, case: str, authorization: str, reason: str
) -> None:
    resp = env.call(_get(authorization))
    assert resp["statusCode"] == 403 and json.loads(resp["body"]) == FORBIDDEN, case
    assert env.refusals(reason) == 1 and env.refusals() == 1, env.metrics.counts
    # Anonymous: nothing appended to the Object Lock log (a stranger cannot grow it).
    assert env.audited() == []


def test_missing_headers_and_empty_events_are_403(env: Env) -> None:
    assert env.call(_get(None))["statusCode"] == 403
    event = _get(None)
    event.update(headers={"authorization": None}, requestContext=None, queryStringParameters=None)
    assert env.call(event)["statusCode"] == 403
    assert env.call({"resource": TOKEN_ALERT_RESOURCE, "httpMethod": "GET"})["statusCode"] == 403
    assert env.call({"resource": TOKEN_ALERT_RESOURCE, "httpMethod": "GET", "pathParameters": "x",
                     "headers": "y", "requestContext": "z"})["statusCode"] == 403
    assert env.refusals("token_missing") == 4 and env.audited() == []


@pytest.mark.parametrize(("exp", "sig"), [
    ("²", None), ("١٢٣٤٥٦٧٨٩٠", None), ("9" * 400, None), ("-1", None), (" 1", None), ("", None),
    (None, "é"), (None, "x" * 10_000), (None, ""), (None, "\x00"),
])
def test_malformed_link_is_403_and_audited_once(env: Env, exp: str | None, sig: str | None) -> None:
    query = _link_query()
    if exp is not None:
        query["exp"] = exp
    if sig is not None:
        query["sig"] = sig
    for _ in range(3):
        resp = env.call(_get(f"Bearer {GOOD_TOKEN}", query=query))
        assert resp["statusCode"] == 403 and json.loads(resp["body"]) == FORBIDDEN
    assert env.refusals(AccessRefusal.LINK_INVALID) == 3
    # A token we signed was presented: the officer is known, so the refusal is audited (once per window).
    (ev,) = env.audited()
    assert ev.action == AuditAction.FAILED_ACCESS and ev.actor == "officer:pc-1"
    assert ev.details["reason"] == AccessRefusal.LINK_INVALID


@pytest.mark.parametrize("exp", ["²", "١٢٣", "9" * 400, "Thu Dec 03 09:00:00 UTC 2026", "", None, 12.5, True])
def test_malformed_cognito_claims_are_403(env: Env, exp: Any) -> None:
    event = {
        "resource": COGNITO_ALERT_RESOURCE, "httpMethod": "GET",
        "pathParameters": {"deployment_id": DEP, "alert_id": ALERT_ID},
        "requestContext": {"authorizer": {"claims": {
            "custom:officer_id": "pc-1", "custom:deployment_id": DEP, "exp": exp}}},
    }
    assert env.call(event)["statusCode"] == 403
    assert env.refusals("token_no_cognito_claims") == 1


@pytest.mark.parametrize("alert_id", ["x" * 2000, "é", "../../etc", " ", "a/b", "\x00", "a" * 65])
def test_malformed_path_parameters_with_a_valid_token_are_404_not_5xx(env: Env, alert_id: str) -> None:
    cognito = {
        "resource": COGNITO_ALERT_RESOURCE, "httpMethod": "GET",
        "pathParameters": {"deployment_id": DEP, "alert_id": alert_id},
        "requestContext": {"authorizer": {"claims": {
            "custom:officer_id": "pc-1", "custom:deployment_id": DEP,
            "exp": str(int((NOW + timedelta(hours=1)).timestamp()))}}},
    }
    assert env.call(cognito)["statusCode"] == 404
    post = {
        "resource": TOKEN_DECISION_RESOURCE, "httpMethod": "POST",
        "pathParameters": {"deployment_id": DEP, "alert_id": alert_id},
        "headers": {"Authorization": f"Bearer {GOOD_TOKEN}"}, "body": json.dumps({"decision": "not_a_match"}),
    }
    assert env.call(post)["statusCode"] == 404
    # A foreign or malformed deployment id is refused before any lookup.
    for dep in ("x" * 2000, "dép", ""):
        resp = env.call({**post, "pathParameters": {"deployment_id": dep, "alert_id": ALERT_ID}})
        assert resp["statusCode"] == 403


@pytest.mark.parametrize(("body", "b64"), [
    ("not json", False), ("", False), ("[]", False), ('{"decision": 1}', False),
    ('{"decision": "not_a_match", "x": 1}', False), ('{"decision": "²"}', False),
    ("{" * 100_000, False), ('{"decision": ' + "1" * 5000 + "}", False),
    ("!!!not base64", True), (base64.b64encode(b"\xff\xfe").decode(), True), ("é", True),
])
def test_malformed_decision_bodies_are_400(env: Env, body: str, b64: bool) -> None:
    event = {
        "resource": TOKEN_DECISION_RESOURCE, "httpMethod": "POST",
        "pathParameters": {"deployment_id": DEP, "alert_id": ALERT_ID},
        "headers": {"Authorization": f"Bearer {GOOD_TOKEN}"}, "body": body, "isBase64Encoded": b64,
    }
    resp = env.call(event)
    assert resp["statusCode"] == 400
    assert env.alerts.get(DEP, ALERT_ID).decision is None  # type: ignore[union-attr]


def test_each_refusal_is_one_in_the_emitted_total(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Through Powertools' metrics (the EMF the alarm reads): the total series counts a refusal once."""
    env.service.access.metrics = PowertoolsMetricsSink()
    capsys.readouterr()
    for _ in range(3):
        assert env.call(_get(None))["statusCode"] == 403
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{") and FAILED_ACCESS_METRIC in line and '"_aws"' in line]
    totals = [v for d in docs if "reason" not in d for v in d[FAILED_ACCESS_METRIC]]
    by_reason = [v for d in docs if d.get("reason") == "token_missing" for v in d[FAILED_ACCESS_METRIC]]
    assert sum(totals) == 3 and sum(by_reason) == 3


# -- strangers cannot grow the audit log --------------------------------------------------------


def test_anonymous_and_forged_requests_add_no_audit_entries_but_are_counted_and_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    forged = f"Bearer {GOOD_HEAD}.{GOOD_BODY}.{'A' * len(GOOD_MAC)}"
    with caplog.at_level(logging.WARNING):
        for n in range(50):
            env.call(_get(None if n % 2 else forged, dep=f"dep-{n:03d}"))
    assert env.audited() == []
    assert env.refusals() == 50
    assert env.refusals("token_missing") == 25 and env.refusals("token_bad_signature") == 25
    lines = [r for r in caplog.records if r.getMessage() == "officer access refused"]
    assert len(lines) == 50
    assert {getattr(r, "reason", None) for r in lines} == {"token_missing", "token_bad_signature"}
    assert all(getattr(r, "audited", None) is False for r in lines)
    assert all(getattr(r, "source_ip", None) == "203.0.113.9" for r in lines)
    assert not any(GOOD_MAC in r.getMessage() or "Bearer" in str(r.__dict__) for r in lines)


def test_refusals_of_a_signed_token_are_audited_once_per_window_with_a_count(env: Env) -> None:
    expired = _token(hours=0.5)
    env.clock.advance(3600)
    for _ in range(40):
        assert env.call(_get(f"Bearer {expired}"))["statusCode"] == 403
    (first,) = env.audited()
    assert first.actor == "officer:pc-1" and first.details["reason"] == "token_expired"
    assert first.details["refusals_since_last_entry"] == 1
    assert env.refusals("token_expired") == 40
    # The next window's first refusal carries the count of those not written.
    env.clock.advance(FAILED_ACCESS_AUDIT_WINDOW_S)
    env.call(_get(f"Bearer {expired}"))
    second = env.audited()[1]
    assert second.details["refusals_since_last_entry"] == 40
    # Another reason of the same officer is its own entry.
    env.call(_get(f"Bearer {_token('pc-2', OTHER, hours=10)}"))
    assert [e.details["reason"] for e in env.audited()] == ["token_expired", "token_expired", "foreign_deployment"]


# -- properties: the parser raises nothing but TokenError -----------------------------------------


def _only_token_errors(token: str) -> None:
    with contextlib.suppress(TokenError):
        verify_token(KEY, token, NOW)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_token_error_or_claims(text: str) -> None:
    _only_token_errors(text)
    _only_token_errors(f"{TOKEN_PREFIX}.{text}")
    _only_token_errors(f"{GOOD_HEAD}.{GOOD_BODY}.{text}")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: JSON for k in ("sub", "dep", "exp", "iat")}), JSON)
def test_any_signed_payload_is_a_token_error_or_claims(doc: dict[str, Any], extra: Any) -> None:
    _only_token_errors(_signed_json(doc))
    _only_token_errors(_signed_json({**doc, "x": extra}))
    _only_token_errors(_signed_json(extra))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_signed_bytes_are_a_token_error_or_claims(payload: bytes) -> None:
    _only_token_errors(_signed(payload))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    auth=st.one_of(st.none(), st.text(max_size=100), st.text(max_size=60).map(lambda t: f"Bearer {t}")),
    dep=st.text(max_size=70), alert=st.text(max_size=70),
    exp=st.one_of(st.none(), st.text(max_size=15)), sig=st.one_of(st.none(), st.text(max_size=50)),
    body=st.one_of(st.none(), st.text(max_size=50)), b64=st.booleans(),
    resource=st.sampled_from([TOKEN_ALERT_RESOURCE, TOKEN_DECISION_RESOURCE, COGNITO_ALERT_RESOURCE]),
)
def test_any_request_is_answered_4xx_or_2xx(
    env: Env, auth: str | None, dep: str, alert: str, exp: str | None, sig: str | None,
    body: str | None, b64: bool, resource: str,
) -> None:
    event = {
        "resource": resource, "httpMethod": "POST" if resource == TOKEN_DECISION_RESOURCE else "GET",
        "pathParameters": {"deployment_id": dep, "alert_id": alert},
        "queryStringParameters": {k: v for k, v in (("exp", exp), ("sig", sig)) if v is not None},
        "headers": {"Authorization": auth}, "body": body, "isBase64Encoded": b64,
    }
    assert env.call(event)["statusCode"] in (200, 400, 403, 404, 409)
