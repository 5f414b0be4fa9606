"""Auditors' operations: read and verify the audit chain, find anything held past retention,
and the per-deployment transparency record in the format the Met publishes.

Counts in the report come from durable sources: the audit log (alerts by id, which outlives
the 31-day alert records) and the deployment record (faces seen, refused crops). True and
false alerts come from officers' adjudications; an alert nobody decided is "unresolved",
never counted as true.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository, from_item
from functions.logic.audit_log import AuditEntry, VerifyReport, read_events, verify_chain
from functions.models.records import DeploymentRecord
from infra import constants as C
from lfr_cli.aws import AwsContext
from lfr_core.contracts import AuditAction, DeploymentState, utcnow

S = DeploymentState
LIVE = {S.PENDING, S.AUTHORISED, S.BUILDING, S.ACTIVE}
# Adjudication outcomes (functions/models/records.py Decision; older spellings accepted).
TRUE_DECISIONS = {"confirmed_engaged", "confirmed", "true", "true_alert"}
FALSE_DECISIONS = {"not_a_match", "false", "false_alert"}
REPORT_FIELDS = (
    "deployment_id", "date", "location", "duration_minutes", "watchlist_size", "faces_seen", "alerts",
    "true_alerts", "false_alerts", "unresolved_alerts", "engagements", "arrests", "state",
)


@dataclass
class TransparencyRow:
    deployment_id: str
    date: str
    location: str
    duration_minutes: float | None
    watchlist_size: int
    faces_seen: int
    alerts: int
    true_alerts: int
    false_alerts: int
    unresolved_alerts: int
    engagements: int
    arrests: int | None  # None: outcomes not recorded for this deployment
    state: str


@dataclass
class HeldItem:
    where: str
    what: str
    why: str


class Auditor:
    def __init__(self, ctx: AwsContext, actor: str = "auditor") -> None:
        out = ctx.outputs
        self.ctx = ctx
        self.actor = actor
        self.store = S3AuditStore(out[C.OUTPUT_AUDIT_BUCKET], ctx.client("s3"))
        self.deployments = DynamoDeploymentRepository(out[C.OUTPUT_DEPLOYMENTS_TABLE], ctx.client("dynamodb"))
        self.alerts = DynamoAlertRepository(out[C.OUTPUT_ALERTS_TABLE], ctx.client("dynamodb"))
        self._s3 = ctx.client("s3")
        self._ddb = ctx.client("dynamodb")

    # -- the chain

    def events(self, deployment_id: str | None = None, since: datetime | None = None) -> list[AuditEntry]:
        out = []
        for e in read_events(self.store):
            ev = e.parsed_event()
            if deployment_id is not None and ev.deployment_id != deployment_id:
                continue
            if since is not None and ev.at < since:
                continue
            out.append(e)
        return out

    def verify(self) -> VerifyReport:
        report = verify_chain(self.store.entries(), self.store.anomalies())
        if self.store.lock_configuration() is None:
            report.problems.append(f"audit bucket {self.store.bucket} has no Object Lock configuration")
        return report

    # -- retention

    def retention(self, now: datetime | None = None) -> list[HeldItem]:
        """Everything held past its retention. Must be empty."""
        now = now or utcnow()
        held: list[HeldItem] = []
        deployments = {d.deployment_id: d for d in self.deployments.list_all()}
        out = self.ctx.outputs
        # Alert records: DynamoDB TTL (it may lag; anything past expiry still counts as held).
        for page in self._ddb.get_paginator("scan").paginate(TableName=out[C.OUTPUT_ALERTS_TABLE]):
            for item in page.get("Items", []):
                doc = from_item(item)
                expiry = int(doc.get("expires_at_epoch") or 0)
                if expiry <= now.timestamp():
                    held.append(HeldItem("alerts table", f"{doc.get('deployment_id')}/{doc.get('alert_id')}",
                                         f"expired at {datetime.fromtimestamp(expiry, now.tzinfo).isoformat()}"))
        # Alert crops: the bucket's lifecycle (31 days, or the deployment's shorter retention).
        for obj in self._objects(out[C.OUTPUT_ALERTS_BUCKET], "alerts/"):
            parts = obj["Key"].split("/")
            dep = deployments.get(parts[1]) if len(parts) > 2 else None
            days = dep.alert_retention_days if dep else C.ALERT_RETENTION_DAYS
            if obj["LastModified"] + timedelta(days=days) <= now:
                held.append(HeldItem("alerts bucket", obj["Key"], f"older than {days} days"))
        # Watchlist data: nothing may remain PURGE_TARGET_S after a deployment's end.
        for obj in self._objects(out[C.OUTPUT_WATCHLIST_BUCKET], "deployments/"):
            dep_id = obj["Key"].split("/")[1]
            dep = deployments.get(dep_id)
            why = _watchlist_overdue(dep, now)
            if why:
                held.append(HeldItem("watchlist bucket", obj["Key"], why))
        return held

    def _objects(self, bucket: str, prefix: str) -> Iterable[dict[str, Any]]:
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    # -- transparency report

    def report(self) -> list[TransparencyRow]:
        entries = [e.parsed_event() for e in read_events(self.store)]
        rows = []
        for dep in self.deployments.list_all():
            dep_events = [e for e in entries if e.deployment_id == dep.deployment_id]
            alert_ids = {str(e.details.get("alert_id")) for e in dep_events if e.action == AuditAction.ALERT}
            decisions: dict[str, str] = {}
            for e in dep_events:  # adjudications in the audit log outlive the alert records
                if e.action == AuditAction.ADJUDICATION and e.details.get("alert_id"):
                    decisions[str(e.details["alert_id"])] = str(e.details.get("decision") or "")
            for a in self.alerts.list_for_deployment(dep.deployment_id):
                alert_ids.add(a.alert_id)
                decided = getattr(a, "decision", None)
                if decided is not None:
                    decisions.setdefault(a.alert_id, str(decided))
            true_n = sum(1 for i in alert_ids if decisions.get(i) in TRUE_DECISIONS)
            false_n = sum(1 for i in alert_ids if decisions.get(i) in FALSE_DECISIONS)
            arrests = [e for e in dep_events if e.action == AuditAction.ADJUDICATION and "arrest" in e.details]
            rows.append(TransparencyRow(
                deployment_id=dep.deployment_id,
                date=(dep.started_at or dep.created_at).date().isoformat(),
                location=dep.authorisation.location if dep.authorisation else "",
                duration_minutes=_duration_minutes(dep),
                watchlist_size=dep.watchlist_size,
                faces_seen=dep.faces_seen,
                alerts=len(alert_ids),
                true_alerts=true_n,
                false_alerts=false_n,
                unresolved_alerts=len(alert_ids) - true_n - false_n,
                engagements=true_n,  # a confirmed alert is one the officer engaged on
                arrests=sum(1 for e in arrests if e.details.get("arrest") is True) if arrests else None,
                state=str(dep.state),
            ))
        return rows


def _ended_at(dep: DeploymentRecord) -> datetime | None:
    ends = [t for t in (dep.stopped_at, dep.expires_at, dep.closed_at) if t is not None]
    return min(ends) if ends else None


def _duration_minutes(dep: DeploymentRecord) -> float | None:
    end = _ended_at(dep)
    if dep.started_at is None or end is None:
        return None
    return round(max(0.0, (end - dep.started_at).total_seconds()) / 60.0, 1)


def _watchlist_overdue(dep: DeploymentRecord | None, now: datetime) -> str | None:
    if dep is None:
        return "no deployment owns this prefix"
    if dep.state in LIVE:
        return None
    end = _ended_at(dep) or dep.created_at
    if now - end > timedelta(seconds=C.PURGE_TARGET_S):
        return f"deployment {dep.state} since {end.isoformat()}; purge target is {C.PURGE_TARGET_S}s"
    return None


def rows_as(rows: list[TransparencyRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


# -- `lfr audit ...`


def add_audit_parsers(sub: Any) -> None:
    aud = sub.add_parser("audit", help="auditors: the audit log, retention, transparency report")
    asub = aud.add_subparsers(dest="sub", required=True)
    ev = asub.add_parser("events", help="audit events (JSON lines)")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--deployment", help="one deployment's events")
    which.add_argument("--since", type=_aware, help="events at or after this ISO date/time (UTC if no zone)")
    asub.add_parser("verify", help="check the hash chain, sequence gaps and Object Lock; exit 1 on tampering")
    asub.add_parser("retention", help="anything held past its retention (must be empty; exit 1 if not)")
    rep = asub.add_parser("report", help="per-deployment transparency record")
    rep.add_argument("--format", choices=["csv", "json"], default="csv")


def _aware(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def run_audit(args: Any, auditor: Auditor, record: Any) -> int:
    """`record(action, deployment_id, **details)` audits the auditor's own reads (exports)."""
    if args.sub == "events":
        entries = auditor.events(args.deployment, args.since)
        record(AuditAction.EXPORT, args.deployment, what="audit events", rows=len(entries))
        for e in entries:
            print(json.dumps(e.model_dump(mode="json"), sort_keys=True))
        return 0
    if args.sub == "verify":
        report = auditor.verify()
        for p in report.problems:
            print(f"TAMPERED: {p}")
        print(f"{report.entries} entries, last sequence number {report.last_seq}: "
              f"{'chain intact' if report.ok else f'{len(report.problems)} problem(s)'}")
        return 0 if report.ok else 1
    if args.sub == "retention":
        held = auditor.retention()
        for h in held:
            print(f"{h.where}\t{h.what}\t{h.why}")
        print(f"{len(held)} item(s) held past retention")
        return 0 if not held else 1
    if args.sub == "report":
        rows = auditor.report()
        record(AuditAction.EXPORT, None, what="transparency report", rows=len(rows), format=args.format)
        print(rows_as(rows, args.format), end="" if args.format == "csv" else "\n")
        return 0
    return 2
