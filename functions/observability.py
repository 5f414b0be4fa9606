"""Powertools logger and metrics shared by handlers and logic (one instance per container).

No Tracer: X-Ray is not available locally and nothing here needs it to be correct; add
`Tracer()` in the handlers when the stack enables active tracing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE_NAME = "lfr"  # = infra.constants.SERVICE_NAME, default when POWERTOOLS_SERVICE_NAME is unset
METRICS_NAMESPACE = "lfr"  # = infra.constants.METRICS_NAMESPACE

# The metrics that alarms watch (infra/constructs/alarms.py imports these names: one spelling for
# the code that emits a metric and the alarm that watches it). Each is emitted in namespace
# METRICS_NAMESPACE with the dimension {"service": SERVICE_NAME} (Powertools' default), and, when
# it has a reason, once more with {"reason": ..., "service": ...} for the breakdown.
METRIC_CROPS_REJECTED = "CropsRejected"  # a crop that can never match (corrupt, wrong size, bad message)
METRIC_CROPS_REFUSED = "CropsRefused"  # a crop for a deployment that is not ACTIVE
# Crops of an ACTIVE deployment held for retry because its watchlist index is missing or unreadable.
METRIC_INDEX_MISSING = "IndexMissing"
# A purge attempt that found data still under the deployment prefix (or could not finish).
METRIC_PURGE_INCOMPLETE = "PurgeIncomplete"
# A session step (check, purge, ...) that failed and is being retried by the state machine (dimension Action).
METRIC_SESSION_STEP_ERRORS = "SessionStepErrors"
SERVICE_DIMENSION = "service"  # Powertools' dimension name for the service

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE))


class MetricsSink(Protocol):
    """What logic needs from metrics; Powertools in Lambda, a recorder in unit tests."""

    def count(self, name: str, value: float = 1.0, dimensions: Mapping[str, str] | None = None) -> None: ...

    def milliseconds(self, name: str, value: float) -> None: ...


class PowertoolsMetricsSink:
    def __init__(self, m: Metrics = metrics) -> None:
        self._m = m

    def count(self, name: str, value: float = 1.0, dimensions: Mapping[str, str] | None = None) -> None:
        # The total always (the series an alarm watches), plus the per-dimension breakdown if given.
        self._m.add_metric(name=name, unit=MetricUnit.Count, value=value)
        if not dimensions:
            return
        # Dimensions on the shared Metrics object would apply to every metric of the
        # invocation; a per-reason count needs its own EMF blob.
        namespace = self._m.namespace or METRICS_NAMESPACE
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=namespace) as sm:
            for k, v in dimensions.items():
                sm.add_dimension(name=k, value=v)

    def milliseconds(self, name: str, value: float) -> None:
        self._m.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)
