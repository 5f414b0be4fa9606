"""`lfr officers`: who receives a deployment's alerts (their SNS channels) and their access tokens.
Command-line side only: nothing in functions/ imports this module.

Scoping choice: ONE alert topic, one subscription per officer channel with a filter policy on
the message attribute `deployment_id` (which the match function already sets,
functions/dal/push.py), rather than a topic per deployment. Why: the topic, its KMS key and
the match function's single `sns:Publish` grant stay in the CDK template (a topic per
deployment would be created by the CLI at run time, outside the template and cdk-nag, with IAM
widened to `topic/*`); filtering is evaluated by SNS before delivery, so an officer's device
never receives, even briefly, an alert of a deployment they are not assigned to; and ending an
officer's access is one unsubscribe. The cost is SNS's per-topic filter-policy quota (soft
limit, 200 by default), far above the officers of the few deployments live at any one time.

Tokens (functions/logic/tokens.py) expire with the deployment and are only issued while it is live.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from functions.dal.officers import OfficerChannels, OfficerRepository
from functions.dal.ports import DeploymentRepository
from functions.logic.audit_log import AuditLog
from functions.logic.tokens import issue_token
from functions.models.officers import Channel, ChannelKind, OfficerRecord
from functions.models.records import DeploymentRecord
from lfr_core.contracts import AuditAction, utcnow

PLATFORM_APPS = {  # channel kind -> (SNS platform, platform application name)
    ChannelKind.APNS: ("APNS", "lfr-apns"),
    ChannelKind.APNS_SANDBOX: ("APNS_SANDBOX", "lfr-apns-sandbox"),
    ChannelKind.FCM: ("GCM", "lfr-fcm"),
}
SNS_PROTOCOL = {ChannelKind.SMS: "sms", ChannelKind.EMAIL: "email", ChannelKind.SQS: "sqs"}
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class OfficerAdminError(Exception):
    """A refused `lfr officers` request, with a message fit for the terminal."""


def new_officer_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "officer"
    return f"{slug}-{secrets.token_hex(3)}"


def filter_policy(deployment_id: str) -> dict[str, list[str]]:
    return {"deployment_id": [deployment_id]}


def mask(kind: ChannelKind, address: str) -> str:
    if kind == ChannelKind.SMS:
        return address[:3] + "*" * max(0, len(address) - 6) + address[-3:]
    if kind == ChannelKind.EMAIL:
        user, _, domain = address.partition("@")
        return f"{user[:1]}***@{domain}"
    return f"…{address[-4:]}"


class OfficerAdmin:
    """`lfr officers ...`: register officers' channels on the alert topic, issue tokens."""

    def __init__(
        self,
        deployments: DeploymentRepository,
        officers: OfficerRepository,
        channels: OfficerChannels,
        key: Callable[[], bytes],
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.deployments = deployments
        self.officers = officers
        self.channels = channels
        self.key = key
        self.audit = audit
        self.clock = clock

    def _deployment(self, deployment_id: str) -> DeploymentRecord:
        dep = self.deployments.get(deployment_id)
        if dep is None:
            raise OfficerAdminError(f"no deployment {deployment_id!r}")
        return dep

    def add_platform(self, kind: ChannelKind, attributes: Mapping[str, str]) -> str:
        """Create (or return) the SNS platform application for APNs/FCM from admin-supplied credentials."""
        platform, name = PLATFORM_APPS[kind]
        existing = self.channels.find_platform_application(name)
        return existing or self.channels.create_platform_application(name, platform, attributes)

    def add_officer(
        self, deployment_id: str, name: str, addresses: Iterable[tuple[ChannelKind, str]], actor: str = "admin"
    ) -> OfficerRecord:
        dep = self._deployment(deployment_id)
        wanted = list(addresses)
        if not wanted:
            raise OfficerAdminError("give at least one of --apns, --fcm, --sms, --email")
        for kind, address in wanted:
            if kind == ChannelKind.SMS and not _E164.match(address):
                raise OfficerAdminError(f"--sms {address!r} is not an E.164 number (e.g. +447700900123)")
            if kind == ChannelKind.EMAIL and not _EMAIL.match(address):
                raise OfficerAdminError(f"--email {address!r} is not an email address")
            if kind in PLATFORM_APPS and not re.fullmatch(r"[A-Za-z0-9:_\-]{8,4096}", address):
                raise OfficerAdminError(f"--{kind.value} device token looks malformed")
        officer_id = new_officer_id(name)
        made: list[Channel] = []
        try:
            for kind, address in wanted:
                made.append(self._channel(dep.deployment_id, officer_id, kind, address))
        except Exception:
            for ch in made:  # all or nothing: no half-registered officer keeps receiving alerts
                self._remove(ch)
            raise
        record = OfficerRecord(
            deployment_id=dep.deployment_id, officer_id=officer_id, name=name, created_at=self.clock(), channels=made
        )
        self.officers.put(record)
        if self.audit is not None:
            self.audit.record(
                actor, AuditAction.AUTHORISE, dep.deployment_id,
                what="officer_added", officer_id=officer_id, channels=",".join(c.kind.value for c in made),
            )
        return record

    def _channel(self, deployment_id: str, officer_id: str, kind: ChannelKind, address: str) -> Channel:
        policy = filter_policy(deployment_id)
        if kind in PLATFORM_APPS:
            platform, name = PLATFORM_APPS[kind]
            app = self.channels.find_platform_application(name)
            if app is None:
                raise OfficerAdminError(
                    f"no {platform} platform application: run `lfr officers platform {kind.value} ...` "
                    "with the credentials first"
                )
            endpoint = self.channels.create_platform_endpoint(app, address, f"{deployment_id}/{officer_id}")
            try:
                sub = self.channels.subscribe("application", endpoint, policy)
            except Exception:
                self.channels.delete_endpoint(endpoint)
                raise
            return Channel(kind=kind, subscription_arn=sub, endpoint_arn=endpoint, hint=mask(kind, address))
        sub = self.channels.subscribe(SNS_PROTOCOL[kind], address, policy)
        return Channel(kind=kind, subscription_arn=sub, hint=mask(kind, address))

    def _remove(self, ch: Channel) -> None:
        self.channels.unsubscribe(ch.subscription_arn)
        if ch.endpoint_arn:
            self.channels.delete_endpoint(ch.endpoint_arn)

    def revoke(self, deployment_id: str, officer_id: str, actor: str = "admin") -> OfficerRecord:
        rec = self.officers.get(deployment_id, officer_id)
        if rec is None:
            raise OfficerAdminError(f"no officer {officer_id!r} in deployment {deployment_id!r}")
        for ch in rec.channels:
            self._remove(ch)
        rec = rec.model_copy(update={"revoked_at": self.clock(), "channels": []})
        self.officers.put(rec)
        if self.audit is not None:
            self.audit.record(
                actor, AuditAction.AUTHORISE, deployment_id, what="officer_revoked", officer_id=officer_id
            )
        return rec

    def token(self, deployment_id: str, officer_id: str) -> tuple[str, datetime]:
        dep = self._deployment(deployment_id)
        rec = self.officers.get(deployment_id, officer_id)
        if rec is None or rec.revoked_at is not None:
            raise OfficerAdminError(f"no current officer {officer_id!r} in deployment {deployment_id!r}")
        if dep.expires_at is None:
            raise OfficerAdminError(f"deployment {deployment_id} has not started: tokens expire with it")
        now = self.clock()
        if not dep.is_live(now):
            raise OfficerAdminError(f"deployment {deployment_id} is {dep.state}: no token for an ended deployment")
        return issue_token(self.key(), officer_id, deployment_id, dep.expires_at, now), dep.expires_at
