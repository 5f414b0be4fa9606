"""The functions spell env var names themselves (infra/ is not in the Lambda asset): keep them equal."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions import observability
from functions.models import env, records
from functions.models.env import BuildWatchlistEnv, MatchEnv, OfficerApiEnv, SessionEnv
from infra import constants as C


def test_names_match_infra_constants() -> None:
    assert env.DEPLOYMENTS_TABLE == C.ENV_DEPLOYMENTS_TABLE
    assert env.ALERTS_TABLE == C.ENV_ALERTS_TABLE
    assert env.WATCHLIST_BUCKET == C.ENV_WATCHLIST_BUCKET
    assert env.ALERTS_BUCKET == C.ENV_ALERTS_BUCKET
    assert env.ALERT_TOPIC_ARN == C.ENV_ALERT_TOPIC_ARN
    assert env.MODEL_DIR == C.ENV_MODEL_DIR
    assert records.ALERT_RETENTION_DAYS == C.ALERT_RETENTION_DAYS
    assert records.ALERT_RETENTION_CHOICES_DAYS == C.ALERT_RETENTION_CHOICES_DAYS
    assert records.ALERT_RETENTION_TAG == C.ALERT_RETENTION_TAG
    assert records.MAX_SESSION_DURATION_S == C.MAX_SESSION_DURATION_S
    assert (env.AUDIT_BUCKET, env.CROP_QUEUE_URL, env.CROP_DLQ_URL) == (
        C.ENV_AUDIT_BUCKET, C.ENV_CROP_QUEUE_URL, C.ENV_CROP_DLQ_URL)
    assert observability.SERVICE_NAME == C.SERVICE_NAME
    assert observability.METRICS_NAMESPACE == C.METRICS_NAMESPACE
    aliases = {f.alias for model in (MatchEnv,) for f in model.model_fields.values()}
    assert aliases == {
        env.POWERTOOLS_SERVICE_NAME,
        env.POWERTOOLS_METRICS_NAMESPACE,
        env.LOG_LEVEL,
        env.DEPLOYMENTS_TABLE,
        env.ALERTS_TABLE,
        env.WATCHLIST_BUCKET,
        env.ALERTS_BUCKET,
        env.ALERT_TOPIC_ARN,
        env.MODEL_DIR,
        env.AUDIT_BUCKET,
        env.OFFICER_PAGE_URL,
        env.SIGNING_SECRET_ARN,
    }
    assert (env.OFFICERS_TABLE, env.SIGNING_SECRET_ARN, env.OFFICER_PAGE_URL) == (
        C.ENV_OFFICERS_TABLE, C.ENV_SIGNING_SECRET_ARN, C.ENV_OFFICER_PAGE_URL)


POWERTOOLS = {"POWERTOOLS_SERVICE_NAME": "lfr", "POWERTOOLS_METRICS_NAMESPACE": "lfr", "LOG_LEVEL": "INFO"}
SESSION = {**POWERTOOLS, "DEPLOYMENTS_TABLE": "d", "WATCHLIST_BUCKET": "w", "ALERTS_TABLE": "t",
           "AUDIT_BUCKET": "a", "CROP_QUEUE_URL": "q", "CROP_DLQ_URL": "dq"}


def test_env_validated() -> None:
    e = SessionEnv.from_environ({**SESSION, "OTHER": "x"})
    assert (e.deployments_table, e.watchlist_bucket, e.audit_bucket, e.alerts_table) == ("d", "w", "a", "t")
    with pytest.raises(ValidationError):
        MatchEnv.from_environ({"DEPLOYMENTS_TABLE": "d"})


@pytest.mark.parametrize("name", sorted(SESSION))
def test_every_variable_a_handler_reads_is_required(name: str) -> None:
    """Production sets them all (the factory refuses a template without one): none falls back to None."""
    with pytest.raises(ValidationError, match=name):
        SessionEnv.from_environ({k: v for k, v in SESSION.items() if k != name})


def test_no_env_model_has_an_optional_field() -> None:
    for model in (MatchEnv, SessionEnv, BuildWatchlistEnv, OfficerApiEnv):
        assert [n for n, f in model.model_fields.items() if not f.is_required()] == [], model.__name__
