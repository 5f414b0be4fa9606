"""The local API gateway's route matching and proxy events, with a stand-in invoke (no stack)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from aws_emulation.apigw import LocalApiGateway, Route
from aws_emulation.runtime import InvokeResult


def test_routes_events_and_refusals() -> None:
    seen: list[tuple[str, Any]] = []

    def invoke(fn: str, event: Any) -> InvokeResult:
        seen.append((fn, event))
        return InvokeResult(payload={"statusCode": 201, "headers": {"X-A": "1"}, "body": json.dumps({"ok": True})})

    gw = LocalApiGateway([
        Route("api", "/t/alerts/{deployment_id}/{alert_id}/decision", "POST", "Fn", "NONE"),
        Route("api", "/alerts/{deployment_id}/{alert_id}", "GET", "Fn", "COGNITO_USER_POOLS"),
    ], invoke, stage="prod")
    base = gw.start()
    try:
        req = urllib.request.Request(f"{base}t/alerts/dep-1/a%201/decision?x=1", data=b'{"decision":"x"}',
                                     method="POST", headers={"Authorization": "Bearer t"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 201 and resp.headers["X-A"] == "1" and json.load(resp) == {"ok": True}
        fn, event = seen[0]
        assert fn == "Fn" and event["resource"] == "/t/alerts/{deployment_id}/{alert_id}/decision"
        assert event["pathParameters"] == {"deployment_id": "dep-1", "alert_id": "a 1"}
        assert event["queryStringParameters"] == {"x": "1"} and event["body"] == '{"decision":"x"}'
        assert event["headers"]["Authorization"] == "Bearer t" and event["requestContext"]["stage"] == "prod"
        for url, method, status in ((f"{base}alerts/d/a", "GET", 401), (f"{base}nope", "GET", 403),
                                    (f"{base}t/alerts/d/a/decision", "GET", 403)):
            try:
                urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5)
                raise AssertionError(f"{url} answered")
            except urllib.error.HTTPError as exc:
                assert exc.code == status
        assert len(seen) == 1  # refused requests never reach the function
    finally:
        gw.stop()
