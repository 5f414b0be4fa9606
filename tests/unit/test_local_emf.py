"""The local stand-in for CloudWatch Logs' EMF extraction: real Powertools output in, PutMetricData out."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from functions.observability import METRIC_INDEX_MISSING, PowertoolsMetricsSink
from lfr_cli.local import emf


def test_powertools_emf_becomes_the_data_points_cloudwatch_would_extract(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "svc")  # as in Lambda (the template sets it)
    m = Metrics(namespace="lfr-test", service="svc")
    m.clear_metrics()  # Powertools' metric set is shared by every Metrics instance: drop other tests' leftovers
    PowertoolsMetricsSink(m).count(METRIC_INDEX_MISSING, 3, {"reason": "missing"})
    m.add_metric(name="EmbedBatchMs", unit=MetricUnit.Milliseconds, value=12.5)
    m.flush_metrics()
    sent: list[tuple[str, list[dict[str, Any]]]] = []
    sink = io.StringIO()
    out = emf.EmfForwarder(sink, lambda ns, data: sent.append((ns, data)))
    text = capsys.readouterr().out + '{"level":"INFO","message":"not a metric"}\n'
    for chunk in (text[:17], text[17:]):  # lines may arrive split across writes
        out.write(chunk)
    assert sink.getvalue() == text  # the log file gets every byte unchanged
    points = {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d["Dimensions"]), d["Value"], d["Unit"])
              for ns, data in sent for d in data if ns == "lfr-test"}
    assert points == {
        (METRIC_INDEX_MISSING, (("service", "svc"),), 3.0, "Count"),
        (METRIC_INDEX_MISSING, (("reason", "missing"), ("service", "svc")), 3.0, "Count"),
        ("EmbedBatchMs", (("service", "svc"),), 12.5, "Milliseconds"),
    }


def test_a_failing_put_never_fails_the_function(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(ns: str, data: list[dict[str, Any]]) -> None:
        raise RuntimeError("cloudwatch down")

    out = emf.EmfForwarder(io.StringIO(), broken)
    out.write('{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[[]],'
              '"Metrics":[{"Name":"X","Unit":"Count"}]}]},"X":1}\n')
    assert "EMF not forwarded: RuntimeError" in capsys.readouterr().err


def test_only_a_loopback_endpoint_gets_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://monitoring.eu-west-2.amazonaws.com")
    assert emf.loopback_put_metric_data() is None
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert emf.loopback_put_metric_data() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    assert emf.loopback_put_metric_data() is not None
