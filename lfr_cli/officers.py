"""`lfr officers ...`: register officers' phones and addresses for a deployment's alerts, issue tokens.

    lfr officers platform apns --p8 KEY.p8 --key-id K --team-id T --bundle-id B [--sandbox]
    lfr officers platform fcm --service-account SA.json
    lfr officers add --deployment ID --name N [--apns TOKEN] [--apns-sandbox TOKEN] [--fcm TOKEN]
                     [--sms +44...] [--email ADDRESS]
    lfr officers token --deployment ID --officer OFFICER_ID
    lfr officers list --deployment ID
    lfr officers revoke --deployment ID --officer OFFICER_ID

Platform credentials (APNs token key, FCM service account) are read from files the admin
supplies at run time and handed to SNS; they are never stored in this repository or printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from functions.dal.audit_store import S3AuditStore
from functions.dal.dynamodb import DynamoDeploymentRepository
from functions.dal.officers import DynamoOfficerRepository, SecretSigningKey, SnsOfficerChannels
from functions.logic.audit_log import AuditLog
from functions.models.officers import ChannelKind
from infra import constants as C
from lfr_cli.aws import AwsContext
from lfr_cli.officer_admin import OfficerAdmin, OfficerAdminError


def officer_admin(ctx: AwsContext) -> OfficerAdmin:
    out = ctx.outputs
    audit_bucket = out.get(C.OUTPUT_AUDIT_BUCKET)
    return OfficerAdmin(
        deployments=DynamoDeploymentRepository(out[C.OUTPUT_DEPLOYMENTS_TABLE], ctx.client("dynamodb")),
        officers=DynamoOfficerRepository(out[C.OUTPUT_OFFICERS_TABLE], ctx.client("dynamodb")),
        channels=SnsOfficerChannels(out[C.OUTPUT_ALERT_TOPIC_ARN], ctx.client("sns")),
        key=SecretSigningKey(out[C.OUTPUT_SIGNING_SECRET_ARN], ctx.client("secretsmanager")),
        audit=AuditLog(S3AuditStore(audit_bucket, ctx.client("s3"))) if audit_bucket else None,
    )


def add_officer_parsers(sub: Any) -> None:
    off = sub.add_parser("officers", help="officers: alert subscriptions and access tokens")
    osub = off.add_subparsers(dest="sub", required=True)

    plat = osub.add_parser("platform", help="create the SNS platform application for APNs or FCM")
    psub = plat.add_subparsers(dest="platform", required=True)
    apns = psub.add_parser("apns", help="APNs token-based auth (.p8 key)")
    apns.add_argument("--p8", required=True, type=Path, help="the APNs auth key file (.p8)")
    apns.add_argument("--key-id", required=True)
    apns.add_argument("--team-id", required=True)
    apns.add_argument("--bundle-id", required=True)
    apns.add_argument("--sandbox", action="store_true", help="development (sandbox) APNs")
    fcm = psub.add_parser("fcm", help="Firebase Cloud Messaging HTTP v1 (service account JSON)")
    fcm.add_argument("--service-account", required=True, type=Path)

    add = osub.add_parser("add", help="register an officer's channels for one deployment's alerts")
    add.add_argument("--deployment", required=True)
    add.add_argument("--name", required=True)
    for kind in ("apns", "apns-sandbox", "fcm"):
        add.add_argument(f"--{kind}", action="append", default=[], metavar="DEVICE_TOKEN")
    add.add_argument("--sms", action="append", default=[], metavar="+44...")
    add.add_argument("--email", action="append", default=[])

    tok = osub.add_parser("token", help="a signed access token for the alert page (expires with the deployment)")
    tok.add_argument("--deployment", required=True)
    tok.add_argument("--officer", required=True)
    tok.add_argument("--json", action="store_true")

    lst = osub.add_parser("list", help="officers of a deployment")
    lst.add_argument("--deployment", required=True)
    rev = osub.add_parser("revoke", help="unsubscribe an officer and end their access")
    rev.add_argument("--deployment", required=True)
    rev.add_argument("--officer", required=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise OfficerAdminError(f"cannot read {path}: {exc.strerror}") from exc


def run_officers(args: argparse.Namespace, ctx: AwsContext, actor: str = "admin") -> int:
    try:
        admin = officer_admin(ctx)
        if args.sub == "platform":
            if args.platform == "apns":
                kind = ChannelKind.APNS_SANDBOX if args.sandbox else ChannelKind.APNS
                attrs = {
                    "PlatformCredential": _read(args.p8),
                    "PlatformPrincipal": args.key_id,
                    "ApplePlatformTeamID": args.team_id,
                    "ApplePlatformBundleID": args.bundle_id,
                }
            else:
                kind, sa = ChannelKind.FCM, _read(args.service_account)
                try:
                    json.loads(sa)
                except ValueError as exc:
                    raise OfficerAdminError(f"{args.service_account} is not a JSON service account file") from exc
                attrs = {"PlatformCredential": sa}
            print(admin.add_platform(kind, attrs))
            return 0
        if args.sub == "add":
            wanted = [(ChannelKind.APNS, t) for t in args.apns]
            wanted += [(ChannelKind.APNS_SANDBOX, t) for t in args.apns_sandbox]
            wanted += [(ChannelKind.FCM, t) for t in args.fcm]
            wanted += [(ChannelKind.SMS, n) for n in args.sms] + [(ChannelKind.EMAIL, e) for e in args.email]
            rec = admin.add_officer(args.deployment, args.name, wanted, actor=actor)
            print(f"officer {rec.officer_id} ({rec.name}) receives the alerts of {rec.deployment_id} on: "
                  + ", ".join(f"{c.kind.value} {c.hint}" for c in rec.channels))
            print(f"issue the alert page token with: lfr officers token --deployment {rec.deployment_id} "
                  f"--officer {rec.officer_id}")
            return 0
        if args.sub == "token":
            token, expires = admin.token(args.deployment, args.officer)
            if args.json:
                print(json.dumps({"token": token, "expires_at": expires.isoformat()}))
            else:
                print(token)
                print(f"expires {expires.isoformat()} (with the deployment); open an alert link with "
                      "#token=<token> appended, or enter it in the app", file=sys.stderr)
            return 0
        if args.sub == "list":
            for rec in admin.officers.list_for_deployment(args.deployment):
                state = "revoked" if rec.revoked_at else "active"
                chans = ", ".join(f"{c.kind.value} {c.hint}" for c in rec.channels)
                print(f"{rec.officer_id:32s} {state:8s} {rec.name}  [{chans}]")
            return 0
        if args.sub == "revoke":
            rec = admin.revoke(args.deployment, args.officer, actor=actor)
            print(f"officer {rec.officer_id} revoked: unsubscribed, tokens refused from now on")
            return 0
    except OfficerAdminError as exc:
        print(f"lfr: {exc}", file=sys.stderr)
        return 1
    return 2
