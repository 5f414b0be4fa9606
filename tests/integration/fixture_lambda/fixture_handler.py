"""A tiny Lambda handler for the local-runtime integration test (packaged as the function's code asset)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

# Module-level state survives warm invocations, like a real Lambda container.
_INVOCATIONS = {"count": 0}
_COLD_PID = os.getpid()


class FixtureError(Exception):
    """Raised on request so the state machine's Retry/Catch see a named error."""


class FlakyError(Exception):
    """Raised for the first `flaky` invocations of a `key`: a transient error the machine retries."""


_FLAKY_CALLS: dict[str, int] = {}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _INVOCATIONS["count"] += 1
    # Printed to the handler's stdout: must never corrupt the worker protocol.
    print(json.dumps({"level": "INFO", "message": "fixture invoked", "count": _INVOCATIONS["count"]}))
    if "Records" in event:
        return _sqs(event)
    if event.get("sleep_s"):
        time.sleep(float(event["sleep_s"]))
    if event.get("fail"):
        raise FixtureError(str(event["fail"]))
    # The state machine's task passes its input under "input".
    given = event.get("input")
    inner: dict[str, Any] = given if isinstance(given, dict) else {}
    if inner.get("fail"):
        raise FixtureError(str(inner["fail"]))
    if inner.get("flaky"):
        key = str(inner["key"])
        _FLAKY_CALLS[key] = _FLAKY_CALLS.get(key, 0) + 1
        if _FLAKY_CALLS[key] <= int(inner["flaky"]):
            raise FlakyError(f"attempt {_FLAKY_CALLS[key]} of {key}")
    return {
        "echo": event,
        "count": _INVOCATIONS["count"],
        "pid": _COLD_PID,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "table": os.environ.get("FIXTURE_TABLE", ""),
        "env_endpoint": os.environ.get("AWS_ENDPOINT_URL", ""),
    }


def _sqs(event: dict[str, Any]) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        if body.get("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
        # Logged so the test can assert the exact event shape the poller built.
        print("RECORD " + json.dumps(record, sort_keys=True))
    return {"batchItemFailures": failures}
