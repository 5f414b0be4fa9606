"""The metrics the alarms watch are emitted as the alarms expect them (name, namespace, dimensions).

Powertools writes CloudWatch embedded-metric-format (EMF) JSON to stdout, which CloudWatch Logs
turns into metrics; these tests read that JSON exactly as CloudWatch would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.exceptions import PurgeIncompleteError
from functions.handlers import session as session_handler
from functions.logic.audit_log import AuditLog
from functions.logic.session import SessionService
from functions.observability import (
    METRIC_CROPS_REJECTED,
    METRIC_PURGE_INCOMPLETE,
    METRICS_NAMESPACE,
    SERVICE_DIMENSION,
    SERVICE_NAME,
    PowertoolsMetricsSink,
    metrics,
)
from lfr_core.contracts import DeploymentState
from lfr_core.layout import watchlist_index_key
from tests.fakes import (
    InMemoryAlertRepository,
    InMemoryAuditStore,
    InMemoryCropQueues,
    InMemoryDeploymentRepository,
    InMemoryObjectStore,
)
from tests.unit.functions_support import Clock, deployment, lambda_context


def emf_points(stdout: str) -> list[tuple[str, str, dict[str, str], float]]:
    """(namespace, metric, dimensions, value) for every metric in the EMF lines of `stdout`."""
    points = []
    for line in stdout.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        doc: dict[str, Any] = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dims in directive["Dimensions"]:
                for m in directive["Metrics"]:
                    values = doc[m["Name"]]
                    for v in values if isinstance(values, list) else [values]:
                        points.append((directive["Namespace"], m["Name"], {d: doc[d] for d in dims}, float(v)))
    return points


@pytest.fixture(autouse=True)
def _service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE_NAME)
    metrics.service = SERVICE_NAME


def test_a_count_with_a_reason_emits_the_total_the_alarm_watches_and_the_breakdown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = PowertoolsMetricsSink(metrics)
    sink.count(METRIC_CROPS_REJECTED, 1, {"reason": "corrupt"})
    sink.count(METRIC_CROPS_REJECTED, 1, {"reason": "truncated"})
    metrics.flush_metrics()
    points = emf_points(capsys.readouterr().out)
    total = [p for p in points if p[2] == {SERVICE_DIMENSION: SERVICE_NAME}]
    assert sum(p[3] for p in total if p[1] == METRIC_CROPS_REJECTED) == 2
    assert all(p[0] == METRICS_NAMESPACE for p in points)
    by_reason = {p[2].get("reason") for p in points if "reason" in p[2]}
    assert by_reason == {"corrupt", "truncated"}


def test_a_purge_that_does_not_finish_is_counted_for_its_alarm(capsys: pytest.CaptureFixture[str]) -> None:
    repo, store = InMemoryDeploymentRepository(), InMemoryObjectStore("watchlist")
    clock = Clock()
    repo.create(deployment("dep-purge", DeploymentState.STOPPED))
    store.put_object(watchlist_index_key("dep-purge"), b"x")
    store.undeletable.add(watchlist_index_key("dep-purge"))  # a purge that cannot finish
    svc = SessionService(repo, store, clock=clock, audit=AuditLog(InMemoryAuditStore(), clock=clock),
                         queues=InMemoryCropQueues(), alerts=InMemoryAlertRepository())
    session_handler.set_service(svc)
    try:
        capsys.readouterr()
        with pytest.raises(PurgeIncompleteError):
            session_handler.handler({"action": "purge", "deployment_id": "dep-purge"}, lambda_context())
        points = emf_points(capsys.readouterr().out)
        assert (METRICS_NAMESPACE, METRIC_PURGE_INCOMPLETE, {SERVICE_DIMENSION: SERVICE_NAME}, 1.0) in points
        # A successful action counts nothing.
        store.undeletable.clear()
        session_handler.handler({"action": "purge", "deployment_id": "dep-purge"}, lambda_context())
        assert not [p for p in emf_points(capsys.readouterr().out) if p[1] == METRIC_PURGE_INCOMPLETE]
    finally:
        session_handler.set_service(None)
