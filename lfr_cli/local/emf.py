"""What CloudWatch Logs does with a function's embedded-metric-format (EMF) lines, done locally.

In Lambda, Powertools prints each invocation's metrics as one EMF JSON line on stdout and
CloudWatch Logs turns it into metric data points. A local worker's stdout goes to a log file, so
`EmfForwarder` wraps it: every line passes through unchanged, and each EMF line is also sent to
the embedded stack's CloudWatch (`put_metric_data` on the loopback endpoint), where the alarms'
metrics, `lfr deployment status` and the tests read it. Only to a loopback endpoint: a worker
must never send anything to a real account.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

EMF_PREFIX = '{"_aws"'
MAX_DATA_PER_CALL = 500  # CloudWatch accepts 1,000 data points per PutMetricData; stay well under

PutMetricData = Callable[[str, list[dict[str, Any]]], None]


def metric_data(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """PutMetricData `MetricData` per namespace for one EMF document (the EMF specification's mapping)."""
    meta = doc["_aws"]
    ts = datetime.fromtimestamp(int(meta["Timestamp"]) / 1000.0, UTC)
    out: dict[str, list[dict[str, Any]]] = {}
    for directive in meta["CloudWatchMetrics"]:
        data = out.setdefault(directive["Namespace"], [])
        for dimension_set in directive.get("Dimensions") or [[]]:
            dims = [{"Name": d, "Value": str(doc[d])} for d in dimension_set]
            for m in directive["Metrics"]:
                raw = doc.get(m["Name"])
                for v in raw if isinstance(raw, list) else [raw]:
                    if v is None:
                        continue
                    data.append({
                        "MetricName": m["Name"], "Dimensions": dims, "Timestamp": ts,
                        "Value": float(v), "Unit": m.get("Unit", "None"),
                    })
    return out


class EmfForwarder:
    """A stdout stand-in: writes through to `inner`, forwards complete EMF lines to `put`."""

    def __init__(self, inner: TextIO, put: PutMetricData) -> None:
        self._inner = inner
        self._put = put
        self._partial = ""

    def write(self, text: str) -> int:
        n = self._inner.write(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            if line.startswith(EMF_PREFIX):
                self._forward(line)
        return n

    def _forward(self, line: str) -> None:
        try:
            for namespace, data in metric_data(json.loads(line)).items():
                for i in range(0, len(data), MAX_DATA_PER_CALL):
                    self._put(namespace, data[i : i + MAX_DATA_PER_CALL])
        except Exception as exc:  # like CloudWatch Logs: a bad metric line never fails the function
            print(f"LFR_LOCAL EMF not forwarded: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty, ...: the real stream's
        return getattr(self._inner, name)


def loopback_put_metric_data() -> PutMetricData | None:
    """A PutMetricData call against the worker's AWS endpoint if it is the loopback emulator, else None."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint.startswith(("http://127.0.0.1:", "http://localhost:")):
        return None
    client: Any = None

    def put(namespace: str, data: list[dict[str, Any]]) -> None:
        nonlocal client
        if client is None:
            import boto3

            client = boto3.client("cloudwatch", endpoint_url=endpoint)
        client.put_metric_data(Namespace=namespace, MetricData=data)

    return put


def install(stdout: TextIO) -> TextIO:
    """`stdout` wrapped to forward EMF to the local CloudWatch, or unchanged when not on the emulator."""
    put = loopback_put_metric_data()
    return stdout if put is None else EmfForwarder(stdout, put)  # type: ignore[return-value]
