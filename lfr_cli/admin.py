"""Admin operations on deployments, over the functions' own data-access layer."""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import secrets
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from edge_uploader.pipeline import SourceError, list_images
from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoAlertRepository, DynamoDeploymentRepository
from functions.dal.ports import DeploymentRepository
from functions.dal.s3 import S3WatchlistStore
from functions.exceptions import StateConflictError
from functions.logic.audit_log import AuditLog
from functions.models.records import (
    ENCOUNTER_WINDOW_BOUNDS_S,
    ENCOUNTER_WINDOW_S,
    AlertRecord,
    Authorisation,
    DeploymentRecord,
)
from infra import constants as C
from lfr_cli import aws
from lfr_cli.aws import AwsContext
from lfr_core.calibration import shipped_table
from lfr_core.contracts import MAX_TRACK_CROPS, AuditAction, AuditValue, DeploymentState, utcnow
from lfr_core.errors import CalibrationError
from lfr_core.layout import deployment_prefix, watchlist_images_prefix, watchlist_index_key
from lfr_core.lifecycle import STARTABLE, TERMINAL, sources_of
from lfr_core.thresholds import DEFAULT_THRESHOLD


class AdminError(Exception):
    """A refused admin request, with a message fit for the terminal."""


def new_deployment_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "deployment"
    return f"{slug}-{secrets.token_hex(3)}"


def default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (e.g. a container): still an attributable actor string
        return "cli:unknown"


class Admin:
    def __init__(self, ctx: AwsContext, actor: str | None = None) -> None:
        self.ctx = ctx
        out = ctx.outputs
        self.actor = actor or default_actor()
        self.deployments: DeploymentRepository = DynamoDeploymentRepository(
            out[C.OUTPUT_DEPLOYMENTS_TABLE], ctx.client("dynamodb")
        )
        self.alerts = DynamoAlertRepository(out[C.OUTPUT_ALERTS_TABLE], ctx.client("dynamodb"))
        self.watchlist = S3WatchlistStore(out[C.OUTPUT_WATCHLIST_BUCKET], ctx.client("s3"))
        self.audit_store = S3AuditStore(out[C.OUTPUT_AUDIT_BUCKET], ctx.client("s3"))
        self.audit = AuditLog(self.audit_store)
        self._sfn = ctx.client("stepfunctions")

    def record(self, action: AuditAction, deployment_id: str | None, **details: AuditValue) -> None:
        self.audit.record(self.actor, action, deployment_id, **details)

    def refused(self, deployment_id: str | None, operation: str, reason: str) -> AdminError:
        """Audit a refused request (failed access) and return the error to raise."""
        self.record(AuditAction.FAILED_ACCESS, deployment_id, operation=operation, reason=reason[:400])
        return AdminError(reason)

    def create_deployment(
        self,
        name: str,
        watchlist_dir: Path,
        duration_s: int,
        threshold: float | None = None,
        alert_retention_days: int = C.ALERT_RETENTION_DAYS,
        target_fpir: float | None = None,
        encounter_window_s: int = ENCOUNTER_WINDOW_S,
    ) -> DeploymentRecord:
        """Record the deployment (PENDING) and upload its watchlist under its own prefix.

        It does not start: `authorise` then `start` (the session machine checks the authorisation).
        The threshold is, in order: explicit; calibrated for `target_fpir` at this watchlist's size
        (the image count bounds the enrolled count from above, erring towards fewer false alerts);
        else `DEFAULT_THRESHOLD`. The thresholds for tracks of 2..3 crops come from the calibration
        table: for the target FPIR, or for the FPIR the one-crop threshold has at this size. Which
        ones, and why, go into the audit log.
        """
        if threshold is not None and target_fpir is not None:
            raise AdminError("give a threshold or a target FPIR, not both")
        if alert_retention_days not in C.ALERT_RETENTION_CHOICES_DAYS:
            raise AdminError(f"alert retention must be one of {C.ALERT_RETENTION_CHOICES_DAYS} days (never longer)")
        low, high = ENCOUNTER_WINDOW_BOUNDS_S
        if not low <= encounter_window_s <= high:
            raise AdminError(f"encounter window must be {low}..{high} s (one push per person per walk-by)")
        try:
            files = list_images(watchlist_dir)
        except SourceError as exc:
            raise AdminError(f"watchlist: {exc}") from exc
        names = [f.name for f in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AdminError(f"watchlist: file names must be unique (they are the entry ids): {dupes[:5]}")
        source = "explicit" if threshold is not None else "default"
        try:
            table = shipped_table()
            if threshold is None and target_fpir is not None:
                threshold = table.threshold(target_fpir, len(files))
                source = f"calibrated:{table.model}"
                tracks = [table.threshold(target_fpir, len(files), n) for n in range(2, MAX_TRACK_CROPS + 1)]
            else:
                threshold = DEFAULT_THRESHOLD if threshold is None else threshold
                # A stated or default threshold: each track size is held to the FPIR it gives one crop.
                tracks = table.track_thresholds(threshold, len(files))
        except CalibrationError as exc:
            raise AdminError(f"no calibrated threshold: {exc}") from exc
        record = DeploymentRecord(
            deployment_id=new_deployment_id(name),
            name=name,
            state=DeploymentState.PENDING,
            created_at=utcnow(),
            duration_s=duration_s,
            threshold=threshold,
            target_fpir=target_fpir,
            fusion_mode=table.fusion_mode,
            track_thresholds=[round(t, 6) for t in tracks],
            alert_retention_days=alert_retention_days,
            encounter_window_s=encounter_window_s,
        )
        self.deployments.create(record)
        self.record(
            AuditAction.CREATE, record.deployment_id, name=name[:200], duration_s=duration_s,
            watchlist_images=len(files), threshold=record.threshold, threshold_source=source,
            fusion_mode=record.fusion_mode,
            track_thresholds=",".join(f"{n}:{t}" for n, t in enumerate(record.track_thresholds, start=2)),
            target_fpir=target_fpir, alert_retention_days=alert_retention_days,
            encounter_window_s=encounter_window_s,
        )
        prefix = watchlist_images_prefix(record.deployment_id)
        for f in files:
            self.watchlist.put_object(prefix + f.name, f.read_bytes())
        manifest = watchlist_dir / "manifest.json"
        if manifest.is_file():  # per-file entry id, label, reference and reason (read by the builder)
            self.watchlist.put_object(prefix + manifest.name, manifest.read_bytes())
        self.record(AuditAction.WATCHLIST_CHANGE, record.deployment_id, uploaded_images=len(files))
        return record

    def authorise(
        self,
        deployment_id: str,
        *,
        officer: str,
        legitimate_aim: str,
        necessity: str,
        proportionality: str,
        location: str,
        watchlist_criteria: str,
        max_watchlist_size: int,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> DeploymentRecord:
        """Record who authorised this deployment and on what grounds: PENDING -> AUTHORISED."""
        rec = self.get(deployment_id)
        begin = start or utcnow()
        auth = Authorisation(
            authorising_officer=officer, legitimate_aim=legitimate_aim, necessity=necessity,
            proportionality=proportionality, location=location, start=begin,
            end=end or begin + timedelta(seconds=rec.duration_s), watchlist_criteria=watchlist_criteria,
            max_watchlist_size=max_watchlist_size, authorised_at=utcnow(),
        )
        try:
            rec = self.deployments.update(
                deployment_id,
                {"state": str(DeploymentState.AUTHORISED), "authorisation": auth.model_dump(mode="json")},
                expect_states=sources_of(DeploymentState.AUTHORISED),
            )
        except StateConflictError as exc:
            raise self.refused(deployment_id, "authorise", str(exc)) from exc
        digest = hashlib.sha256(auth.model_dump_json().encode()).hexdigest()
        self.record(
            AuditAction.AUTHORISE, deployment_id, authorising_officer=officer[:200], location=location[:400],
            start=auth.start.isoformat(), end=auth.end.isoformat(), max_watchlist_size=max_watchlist_size,
            watchlist_criteria=watchlist_criteria[:400], authorisation_sha256=digest,
        )
        return rec

    def start(self, deployment_id: str) -> str:
        """Start the session machine; its first step refuses anything not authorised as it stands."""
        rec = self.get(deployment_id)
        self.record(AuditAction.START, deployment_id, stage="requested", state=str(rec.state))
        resp = self._sfn.start_execution(
            stateMachineArn=self.ctx.outputs[C.OUTPUT_SESSION_STATE_MACHINE_ARN],
            name=deployment_id,
            input=json.dumps({"deployment_id": deployment_id}),
        )
        return str(resp["executionArn"])

    def stop(self, deployment_id: str, reason: str = "") -> DeploymentRecord:
        """Early stop: STOPPED now; the session machine then purges and closes.

        A deployment whose session never started is stopped too and its machine started, so its
        first step refuses it and the fail path purges the uploaded watchlist.
        """
        before = self.get(deployment_id)
        try:
            rec = self.deployments.update(
                deployment_id,
                {"state": str(DeploymentState.STOPPED), "stopped_at": utcnow().isoformat()},
                expect_states=sources_of(DeploymentState.STOPPED),
            )
        except StateConflictError as exc:
            raise self.refused(deployment_id, "stop", str(exc)) from exc
        self.record(AuditAction.STOP, deployment_id, previous_state=str(before.state), reason=reason[:400])
        if before.state in STARTABLE:
            self._sfn.start_execution(
                stateMachineArn=self.ctx.outputs[C.OUTPUT_SESSION_STATE_MACHINE_ARN],
                name=deployment_id,
                input=json.dumps({"deployment_id": deployment_id}),
            )
        return rec

    def create_authorise_start(
        self, name: str, watchlist_dir: Path, duration_s: int, *, officer: str = "Insp. Demo",
        location: str = "local demo", max_watchlist_size: int | None = None, threshold: float | None = None,
    ) -> DeploymentRecord:
        """The three steps in one, for demos and tests (a real deployment has a human in between)."""
        rec = self.create_deployment(name, watchlist_dir, duration_s, threshold)
        size = max_watchlist_size or max(1, len(self.watchlist.list_keys(watchlist_images_prefix(rec.deployment_id))))
        rec = self.authorise(
            rec.deployment_id, officer=officer, legitimate_aim="demonstration of the system",
            necessity="demonstration", proportionality="synthetic watchlist, short session", location=location,
            watchlist_criteria="demonstration identities", max_watchlist_size=size,
        )
        self.start(rec.deployment_id)
        return rec

    def get(self, deployment_id: str) -> DeploymentRecord:
        rec = self.deployments.get(deployment_id)
        if rec is None:
            raise self.refused(deployment_id[:64], "get", f"no deployment {deployment_id!r}")
        return rec

    def list_deployments(self) -> list[DeploymentRecord]:
        return self.deployments.list_all()

    def alerts_of(self, deployment_id: str) -> list[AlertRecord]:
        return self.alerts.list_for_deployment(deployment_id)

    def health(self, rec: DeploymentRecord) -> dict[str, Any]:
        """What `lfr deployment status` shows beside the record: the watchlist index, the raw numbers
        (queue and DLQ counts, the crop queue's oldest message, the alarmed metrics over this
        deployment's window) and every ops alarm's state. A part that cannot be read says why."""
        from functions.observability import (
            METRIC_CROPS_REFUSED,
            METRIC_CROPS_REJECTED,
            METRIC_INDEX_MISSING,
            METRIC_PURGE_INCOMPLETE,
            METRICS_NAMESPACE,
            SERVICE_DIMENSION,
            SERVICE_NAME,
        )

        out: dict[str, Any] = {}
        index: dict[str, Any] = {"status": "ok", "fault": None}
        if rec.index_fault is not None:
            index = {"status": f"{rec.index_fault.reason} since {rec.index_fault.since.isoformat()}",
                     "fault": rec.index_fault.model_dump(mode="json")}
        if rec.state == DeploymentState.ACTIVE:
            # Read directly too: a deleted index is visible here before any crop has hit it.
            present = self.watchlist.count_prefix(watchlist_index_key(rec.deployment_id)) > 0
            index["object_present"] = present
            if not present and rec.index_fault is None:
                index["status"] = "missing (no crop has needed it yet)"
        out["index"] = index
        out["refused_crops"] = rec.refused_crops  # this deployment's, from its record
        until = rec.closed_at or utcnow()
        since = min(rec.started_at or rec.created_at, until)
        readers: dict[str, Any] = {
            "queues": lambda: aws.queue_counts(self.ctx),
            "crop_queue_oldest_s": lambda: aws.queue_oldest_age_s(self.ctx, until - timedelta(minutes=5), until),
            # Service-wide totals (a rejected crop may not even name a deployment) over this window.
            "metrics_in_window": lambda: aws.metric_sums(
                self.ctx, METRICS_NAMESPACE,
                [METRIC_CROPS_REJECTED, METRIC_CROPS_REFUSED, METRIC_INDEX_MISSING, METRIC_PURGE_INCOMPLETE],
                {SERVICE_DIMENSION: SERVICE_NAME}, since, until,
            ),
            "alarms": lambda: aws.alarm_states(self.ctx),
        }
        for name, read in readers.items():
            try:
                out[name] = read()
            except (ClientError, BotoCoreError, KeyError) as exc:
                out[name] = {"unavailable": f"{type(exc).__name__}: {str(exc)[:200]}"}
        alarms = out["alarms"]
        if isinstance(alarms, list):
            out["alarms_firing"] = [a["name"] for a in alarms if a["state"] == "ALARM"]
        return out

    def objects_remaining(self, deployment_id: str) -> int:
        return self.watchlist.count_prefix(deployment_prefix(deployment_id))

    def wait_for(
        self, deployment_id: str, states: Collection[DeploymentState], timeout_s: float, poll_s: float = 0.5
    ) -> DeploymentRecord:
        deadline = time.monotonic() + timeout_s
        while True:
            rec = self.get(deployment_id)
            if rec.state in states:
                return rec
            if rec.state in TERMINAL - set(states):
                raise AdminError(
                    f"deployment {deployment_id} ended in {rec.state}: {rec.failure_reason or 'no reason'}"
                )
            if time.monotonic() > deadline:
                raise AdminError(
                    f"deployment {deployment_id} still {rec.state} after {timeout_s:.0f}s "
                    f"(waiting for {', '.join(sorted(states))})"
                )
            time.sleep(poll_s)


# -- `lfr deployment ...` (parsers and dispatch live here so main.py stays a thin router)


def add_deployment_parsers(sub: Any) -> None:
    dep = sub.add_parser("deployment", help="deployments").add_subparsers(dest="sub", required=True)
    create = dep.add_parser("create", help="create a deployment (PENDING) and upload its watchlist; does not start")
    create.add_argument("--name", required=True)
    create.add_argument("--watchlist", required=True, type=Path, help="folder of enrolment images")
    create.add_argument("--duration", required=True, help="e.g. 30m, 2h, 90s (at most 12h)")
    pick = create.add_mutually_exclusive_group()
    pick.add_argument("--threshold", type=float, help="explicit cosine threshold (default: DEFAULT_THRESHOLD, 0.55)")
    pick.add_argument("--target-fpir", type=float,
                      help="calibrated threshold for this false-positive identification rate at this list's size")
    create.add_argument("--alert-retention-days", type=int, default=C.ALERT_RETENTION_DAYS,
                        choices=C.ALERT_RETENTION_CHOICES_DAYS, help="shorter than 31 days only")
    create.add_argument("--encounter-window", default=f"{ENCOUNTER_WINDOW_S}s",
                        help="sightings of one listed person closer than this are one alert and one push"
                        f" (default {ENCOUNTER_WINDOW_S}s; {ENCOUNTER_WINDOW_BOUNDS_S[0]}s.."
                        f"{ENCOUNTER_WINDOW_BOUNDS_S[1]}s)")
    auth = dep.add_parser("authorise", help="record the authorisation: PENDING -> AUTHORISED")
    auth.add_argument("deployment_id")
    auth.add_argument("--officer", required=True, help="authorising officer (name, rank)")
    auth.add_argument("--aim", required=True, help="legitimate aim")
    auth.add_argument("--necessity", required=True)
    auth.add_argument("--proportionality", required=True)
    auth.add_argument("--location", required=True)
    auth.add_argument("--criteria", required=True, help="watchlist criteria")
    auth.add_argument("--max-watchlist", required=True, type=int, help="maximum watchlist size")
    auth.add_argument("--start", type=datetime.fromisoformat, help="ISO time (default now)")
    auth.add_argument("--end", type=datetime.fromisoformat, help="ISO time (default start + duration)")
    start = dep.add_parser("start", help="start the session (the machine refuses it unless authorised)")
    start.add_argument("deployment_id")
    start.add_argument("--wait", action="store_true", help="wait until ACTIVE (or report the refusal)")
    stop = dep.add_parser("stop", help="stop early: the session purges and closes")
    stop.add_argument("deployment_id")
    stop.add_argument("--reason", default="")
    status = dep.add_parser("status", help="one deployment's record")
    status.add_argument("deployment_id")
    dep.add_parser("list", help="all deployments")


def run_deployment(args: Any, admin: Admin, parse_duration: Any) -> int:
    if args.sub == "create":
        rec = admin.create_deployment(
            args.name, args.watchlist, parse_duration(args.duration), args.threshold, args.alert_retention_days,
            target_fpir=args.target_fpir, encounter_window_s=parse_duration(args.encounter_window),
        )
        print(f"created {rec.deployment_id} ({rec.state}); next: lfr deployment authorise {rec.deployment_id}")
    elif args.sub == "authorise":
        rec = admin.authorise(
            args.deployment_id, officer=args.officer, legitimate_aim=args.aim, necessity=args.necessity,
            proportionality=args.proportionality, location=args.location, watchlist_criteria=args.criteria,
            max_watchlist_size=args.max_watchlist, start=args.start, end=args.end,
        )
        print(f"{rec.deployment_id} {rec.state} by {args.officer}")
    elif args.sub == "start":
        admin.start(args.deployment_id)
        print(f"{args.deployment_id}: session started")
        if args.wait:
            rec = admin.wait_for(args.deployment_id, {DeploymentState.ACTIVE}, timeout_s=900)
            print(f"{rec.deployment_id} ACTIVE until {rec.expires_at:%Y-%m-%d %H:%M:%S}Z; "
                  f"{rec.watchlist_size} enrolled, {len(rec.enrol_rejects)} rejected")
            for r in rec.enrol_rejects:
                print(f"  rejected {r.file}: {r.reason}")
            if rec.confusable_count:
                print(f"  {rec.confusable_count} pair(s) of entries score as one person at {rec.threshold:.3f}"
                      " (one person under two names, or look-alikes): check before relying on alerts")
            for c in rec.confusable:
                print(f"  confusable {c.entry_id} ({c.label}) ~ {c.other_entry_id} ({c.other_label}): "
                      f"{c.similarity:.3f}")
    elif args.sub == "stop":
        rec = admin.stop(args.deployment_id, args.reason)
        print(f"{rec.deployment_id} STOPPED; the session purges its watchlist and closes")
    elif args.sub == "status":
        from lfr_cli.reporting import latency_summary, outcome_counts

        rec = admin.get(args.deployment_id)
        doc = rec.model_dump(mode="json")
        alerts = admin.alerts_of(args.deployment_id)
        # Officers' decisions (unresolved is never counted as true) and crop-enqueued -> SNS publish latency.
        doc["alert_outcomes"] = outcome_counts(alerts)
        doc["queue_to_publish_ms"] = latency_summary(alerts)
        # Faults and alarms: index health, queue/DLQ counts, alarmed metrics, every ops alarm's state.
        doc["health"] = admin.health(rec)
        print(json.dumps(doc, indent=2, default=str))
    elif args.sub == "list":
        for rec in admin.list_deployments():
            print(f"{rec.deployment_id:40s} {rec.state:10s} {rec.name}")
    else:
        return 2
    return 0
