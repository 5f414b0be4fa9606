"""Officers of a deployment, their notification channels, and the claims of an access token."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lfr_core.contracts import DeploymentId

OfficerId = str


class ChannelKind(StrEnum):
    APNS = "apns"
    APNS_SANDBOX = "apns_sandbox"
    FCM = "fcm"
    SMS = "sms"
    EMAIL = "email"
    SQS = "sqs"  # a stand-in device for tests and demos (an SQS queue the operator owns)


class Channel(BaseModel):
    """One SNS subscription of an officer. Device tokens and addresses are not kept here:
    the endpoint/subscription ARNs are enough to unsubscribe, and `hint` is masked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ChannelKind
    subscription_arn: str
    endpoint_arn: str | None = None  # platform endpoint (APNs/FCM)
    hint: str = ""  # e.g. "+44******789", "a***@example.police.uk", "token …3f2a"


class OfficerRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    deployment_id: DeploymentId
    officer_id: str = Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    channels: list[Channel] = Field(default_factory=list)
    revoked_at: AwareDatetime | None = None

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Claims(BaseModel):
    """Who is asking: an officer of one deployment, until `expires_at` (the deployment's end)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    officer_id: str
    deployment_id: str
    expires_at: datetime
    via: str  # "token" (lfr signed token) or "cognito"
