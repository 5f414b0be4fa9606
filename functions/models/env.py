"""Each function's environment, validated once at cold start.

Every field a function reads is required: the one function factory (infra/constructs/lambda_function.py)
builds each function's environment from its model and refuses at synth time a value missing or unknown,
so production always sets them all. Shared fields live in `FunctionEnv`, the base of every model.

The variable names are defined here, their one home: the Lambda code asset ships `functions/` but not
`infra/`, so infra (and the local stack) import them from here; the aliases are literals because mypy's
pydantic support needs them so.
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
# Read by Powertools itself (functions/observability.py), set on every function.
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
LOG_LEVEL: Final = "LOG_LEVEL"


class FunctionEnv(BaseModel):
    """What every lfr function is given: Powertools' settings and the deployment records."""

    # Lambda's environment holds much more than ours; only our names are validated.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    service_name: str = Field(alias=POWERTOOLS_SERVICE_NAME, min_length=1)
    metrics_namespace: str = Field(alias=POWERTOOLS_METRICS_NAMESPACE, min_length=1)
    log_level: str = Field(alias=LOG_LEVEL, min_length=1)
    deployments_table: str = Field(alias=DEPLOYMENTS_TABLE, min_length=1)
    watchlist_bucket: str = Field(alias=WATCHLIST_BUCKET, min_length=1)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class MatchEnv(FunctionEnv):
    alerts_table: str = Field(alias=ALERTS_TABLE, min_length=1)
    alerts_bucket: str = Field(alias=ALERTS_BUCKET, min_length=1)
    alert_topic_arn: str = Field(alias=ALERT_TOPIC_ARN, min_length=1)
    model_dir: str = Field(alias=MODEL_DIR, min_length=1)
    audit_bucket: str = Field(alias=AUDIT_BUCKET, min_length=1)  # alerts are audited (alert id only)
    # Officers' alert page: every notification carries a signed link to it.
    officer_page_url: str = Field(alias=OFFICER_PAGE_URL, min_length=1)
    signing_secret_arn: str = Field(alias=SIGNING_SECRET_ARN, min_length=1)


class BuildWatchlistEnv(FunctionEnv):
    model_dir: str = Field(alias=MODEL_DIR, min_length=1)


class SessionEnv(FunctionEnv):
    audit_bucket: str = Field(alias=AUDIT_BUCKET, min_length=1)
    crop_queue_url: str = Field(alias=CROP_QUEUE_URL, min_length=1)
    crop_dlq_url: str = Field(alias=CROP_DLQ_URL, min_length=1)
    # Purge also deletes the deployment's encounter state and camera activity from the alerts table.
    alerts_table: str = Field(alias=ALERTS_TABLE, min_length=1)


class OfficerApiEnv(FunctionEnv):
    alerts_table: str = Field(alias=ALERTS_TABLE, min_length=1)
    officers_table: str = Field(alias=OFFICERS_TABLE, min_length=1)
    alerts_bucket: str = Field(alias=ALERTS_BUCKET, min_length=1)
    signing_secret_arn: str = Field(alias=SIGNING_SECRET_ARN, min_length=1)
    audit_bucket: str = Field(alias=AUDIT_BUCKET, min_length=1)  # decisions and refused access are audited
    crop_queue_url: str = Field(alias=CROP_QUEUE_URL, min_length=1)  # the van's console shows its depth
