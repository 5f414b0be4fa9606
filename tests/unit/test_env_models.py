"""Each function's env model: the names of its variables (their one definition), all required; and the
values the functions spell themselves (infra/ is not in the Lambda asset) equal infra's constants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions import observability
from functions.models import env, records
from functions.models.env import BuildWatchlistEnv, MatchEnv, OfficerApiEnv, SessionEnv
from infra import constants as C


def test_values_match_infra_constants() -> None:
    assert records.ALERT_RETENTION_DAYS == C.ALERT_RETENTION_DAYS
    assert records.ALERT_RETENTION_CHOICES_DAYS == C.ALERT_RETENTION_CHOICES_DAYS
    assert records.ALERT_RETENTION_TAG == C.ALERT_RETENTION_TAG
    assert records.MAX_SESSION_DURATION_S == C.MAX_SESSION_DURATION_S
    assert observability.SERVICE_NAME == C.SERVICE_NAME
    assert observability.METRICS_NAMESPACE == C.METRICS_NAMESPACE


def test_match_env_names() -> None:
    aliases = {f.alias for f in MatchEnv.model_fields.values()}
    assert aliases == {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "LOG_LEVEL",
        "DEPLOYMENTS_TABLE",
        "ALERTS_TABLE",
        "WATCHLIST_BUCKET",
        "ALERTS_BUCKET",
        "ALERT_TOPIC_ARN",
        "MODEL_DIR",
        "AUDIT_BUCKET",
        "OFFICER_PAGE_URL",
        "SIGNING_SECRET_ARN",
    }
    assert (env.OFFICERS_TABLE, env.CROP_QUEUE_URL, env.CROP_DLQ_URL) == (
        "OFFICERS_TABLE", "CROP_QUEUE_URL", "CROP_DLQ_URL")


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
