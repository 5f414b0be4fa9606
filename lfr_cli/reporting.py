"""Alert outcomes from officers' decisions and alert latency, for `lfr` reports (lfr_cli/admin.py)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from functions.models.records import AlertRecord, Decision


def outcome_counts(alerts: Iterable[AlertRecord]) -> dict[str, int]:
    """True/false/unresolved alerts from officers' decisions. Unresolved = "could not locate"
    plus no decision; it is never counted as true."""
    out = {"alerts": 0, "true": 0, "false": 0, "unresolved": 0, "could_not_locate": 0, "undecided": 0}
    for a in alerts:
        out["alerts"] += 1
        if a.decision == Decision.CONFIRMED:
            out["true"] += 1
        elif a.decision == Decision.NOT_A_MATCH:
            out["false"] += 1
        else:
            out["unresolved"] += 1
            out["could_not_locate" if a.decision == Decision.NOT_LOCATED else "undecided"] += 1
    return out


def latency_summary(alerts: Iterable[AlertRecord]) -> dict[str, float | int | None]:
    """Crop enqueued -> SNS publish, per alert (the last publish of each alert)."""
    values = sorted(a.queue_to_publish_ms for a in alerts if a.queue_to_publish_ms is not None)
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(values[-1], 1),
    }
