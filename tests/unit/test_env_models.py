"""The functions spell env var names themselves (infra/ is not in the Lambda asset): keep them equal."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions import observability
from functions.models import env, records
from functions.models.env import MatchEnv, SessionEnv
from infra import constants as C


def test_names_match_infra_constants() -> None:
    assert env.DEPLOYMENTS_TABLE == C.ENV_DEPLOYMENTS_TABLE
    assert env.ALERTS_TABLE == C.ENV_ALERTS_TABLE
    assert env.IDEMPOTENCY_TABLE == C.ENV_IDEMPOTENCY_TABLE
    assert env.WATCHLIST_BUCKET == C.ENV_WATCHLIST_BUCKET
    assert env.ALERTS_BUCKET == C.ENV_ALERTS_BUCKET
    assert env.ALERT_TOPIC_ARN == C.ENV_ALERT_TOPIC_ARN
    assert env.MODEL_DIR == C.ENV_MODEL_DIR
    assert records.ALERT_RETENTION_DAYS == C.ALERT_RETENTION_DAYS
    assert observability.SERVICE_NAME == C.SERVICE_NAME
    assert observability.METRICS_NAMESPACE == C.METRICS_NAMESPACE
    aliases = {f.alias for model in (MatchEnv,) for f in model.model_fields.values()}
    assert aliases == {
        env.DEPLOYMENTS_TABLE,
        env.ALERTS_TABLE,
        env.IDEMPOTENCY_TABLE,
        env.WATCHLIST_BUCKET,
        env.ALERTS_BUCKET,
        env.ALERT_TOPIC_ARN,
        env.MODEL_DIR,
    }


def test_env_validated() -> None:
    e = SessionEnv.from_environ({"DEPLOYMENTS_TABLE": "d", "WATCHLIST_BUCKET": "w", "OTHER": "x"})
    assert (e.deployments_table, e.watchlist_bucket) == ("d", "w")
    with pytest.raises(ValidationError):
        MatchEnv.from_environ({"DEPLOYMENTS_TABLE": "d"})
