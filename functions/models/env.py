"""Each function's environment, validated once at cold start.

The variable names are spelled here rather than imported from `infra.constants`
because the Lambda code asset ships `functions/` (and the layer `lfr_core/`) but
not `infra/`; the aliases are literals because mypy's pydantic support needs them so;
`tests/unit/test_env_models.py` asserts both equal the constants.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field

DEPLOYMENTS_TABLE: Final = "DEPLOYMENTS_TABLE"
ALERTS_TABLE: Final = "ALERTS_TABLE"
WATCHLIST_BUCKET: Final = "WATCHLIST_BUCKET"
ALERTS_BUCKET: Final = "ALERTS_BUCKET"
ALERT_TOPIC_ARN: Final = "ALERT_TOPIC_ARN"
MODEL_DIR: Final = "MODEL_DIR"
AUDIT_BUCKET: Final = "AUDIT_BUCKET"
CROP_QUEUE_URL: Final = "CROP_QUEUE_URL"
CROP_DLQ_URL: Final = "CROP_DLQ_URL"
OFFICERS_TABLE: Final = "OFFICERS_TABLE"
SIGNING_SECRET_ARN: Final = "SIGNING_SECRET_ARN"
OFFICER_PAGE_URL: Final = "OFFICER_PAGE_URL"


class _Env(BaseModel):
    # Lambda's environment holds much more than ours; only our names are validated.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class MatchEnv(_Env):
    deployments_table: str = Field(alias=DEPLOYMENTS_TABLE, min_length=1)
    alerts_table: str = Field(alias=ALERTS_TABLE, min_length=1)
    watchlist_bucket: str = Field(alias=WATCHLIST_BUCKET, min_length=1)
    alerts_bucket: str = Field(alias=ALERTS_BUCKET, min_length=1)
    alert_topic_arn: str = Field(alias=ALERT_TOPIC_ARN, min_length=1)
    model_dir: str | None = Field(default=None, alias=MODEL_DIR)
    # Alerts are audited (alert id only) when the stack provides the audit bucket.
    audit_bucket: str | None = Field(default=None, alias=AUDIT_BUCKET)
    # Officers' alert page (functions/logic/officer_api.py): notifications carry a signed link when both are set.
    officer_page_url: str | None = Field(default=None, alias=OFFICER_PAGE_URL)
    signing_secret_arn: str | None = Field(default=None, alias=SIGNING_SECRET_ARN)


class BuildWatchlistEnv(_Env):
    deployments_table: str = Field(alias=DEPLOYMENTS_TABLE, min_length=1)
    watchlist_bucket: str = Field(alias=WATCHLIST_BUCKET, min_length=1)
    model_dir: str | None = Field(default=None, alias=MODEL_DIR)


class SessionEnv(_Env):
    deployments_table: str = Field(alias=DEPLOYMENTS_TABLE, min_length=1)
    watchlist_bucket: str = Field(alias=WATCHLIST_BUCKET, min_length=1)
    audit_bucket: str = Field(alias=AUDIT_BUCKET, min_length=1)
    crop_queue_url: str = Field(alias=CROP_QUEUE_URL, min_length=1)
    crop_dlq_url: str = Field(alias=CROP_DLQ_URL, min_length=1)
    # Purge also deletes the deployment's encounter state and camera activity from the alerts table.
    alerts_table: str | None = Field(default=None, alias=ALERTS_TABLE)


class OfficerApiEnv(_Env):
    deployments_table: str = Field(alias=DEPLOYMENTS_TABLE, min_length=1)
    alerts_table: str = Field(alias=ALERTS_TABLE, min_length=1)
    officers_table: str = Field(alias=OFFICERS_TABLE, min_length=1)
    watchlist_bucket: str = Field(alias=WATCHLIST_BUCKET, min_length=1)
    alerts_bucket: str = Field(alias=ALERTS_BUCKET, min_length=1)
    signing_secret_arn: str = Field(alias=SIGNING_SECRET_ARN, min_length=1)
    # Decisions and refused access are audited when the stack provides the audit bucket.
    audit_bucket: str | None = Field(default=None, alias=AUDIT_BUCKET)
    # The van's console shows the crop queue's depth when the stack provides it.
    crop_queue_url: str | None = Field(default=None, alias=CROP_QUEUE_URL)
