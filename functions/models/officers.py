"""Officers of a deployment, their notification channels, and the claims of an access token."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lfr_core.contracts import DeploymentId

OfficerId = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
# The last second a datetime can hold (9999-12-31T23:59:59Z): a larger `exp` could not be a date.
MAX_EPOCH_S = 253_402_300_799


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
    officer_id: OfficerId
    name: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    channels: list[Channel] = Field(default_factory=list)
    revoked_at: AwareDatetime | None = None

    def to_item(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Claims(BaseModel):
    """Who is asking: an officer of one deployment, until `expires_at` (the deployment's end)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    officer_id: OfficerId
    deployment_id: DeploymentId
    expires_at: datetime
    via: str  # "token" (lfr signed token) or "cognito"


class TokenPayload(BaseModel):
    """The signed JSON of an lfr token, parsed strictly: a `"123"`, `true`, `1.5` or `"²"` is not
    an `exp`, and every value is bounded (a datetime must hold it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    sub: OfficerId
    dep: DeploymentId
    exp: int = Field(ge=0, le=MAX_EPOCH_S)
    iat: int = Field(ge=0, le=MAX_EPOCH_S)


class AccessRefusal(StrEnum):
    """Why the officers' API refused a request: a closed set, so it can be a metric dimension.

    The first four carry no identity (no token, or one we did not sign): logged and counted only.
    The rest follow a token we signed (or Cognito verified), so the officer is known: also audited.
    """

    TOKEN_MISSING = "token_missing"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_BAD_SIGNATURE = "token_bad_signature"
    NO_COGNITO_CLAIMS = "token_no_cognito_claims"
    TOKEN_EXPIRED = "token_expired"
    FOREIGN_DEPLOYMENT = "foreign_deployment"
    UNKNOWN_OR_REVOKED_OFFICER = "unknown_or_revoked_officer"
    DEPLOYMENT_ENDED = "deployment_ended"
    LINK_INVALID = "link_expired_or_invalid"

    @property
    def identified(self) -> bool:
        return self not in _ANONYMOUS


_ANONYMOUS = frozenset({
    AccessRefusal.TOKEN_MISSING, AccessRefusal.TOKEN_MALFORMED, AccessRefusal.TOKEN_BAD_SIGNATURE,
    AccessRefusal.NO_COGNITO_CLAIMS,
})
