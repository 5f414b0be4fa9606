"""The function factory builds a function's environment from its env model, and refuses at synth time
a field left out, a name the model does not have, or an empty value (no optional field needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from functions.models.env import BuildWatchlistEnv, MatchEnv, SessionEnv
from infra.constants import METRICS_NAMESPACE, SERVICE_NAME
from infra.constructs.lambda_function import LAMBDA_ARCH, LAMBDA_RUNTIME, function_environment
from lambda_target import LAMBDA_ARCHITECTURE, LAMBDA_PYTHON_VERSION

BUILD = {"deployments_table": "d", "watchlist_bucket": "w", "model_dir": "/opt/models"}


def test_environment_is_the_models_variables_with_powertools_settings() -> None:
    env = function_environment(BuildWatchlistEnv, BUILD)
    assert env == {
        "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "LOG_LEVEL": "INFO",
        "DEPLOYMENTS_TABLE": "d",
        "WATCHLIST_BUCKET": "w",
        "MODEL_DIR": "/opt/models",
    }
    assert BuildWatchlistEnv.from_environ(env).model_dir == "/opt/models"  # what the handler then reads


def test_a_missing_field_fails_the_synth() -> None:
    with pytest.raises(ValueError, match=r"missing \['officer_page_url', 'signing_secret_arn'\]"):
        function_environment(MatchEnv, {
            "deployments_table": "d", "watchlist_bucket": "w", "alerts_table": "a", "alerts_bucket": "b",
            "alert_topic_arn": "t", "model_dir": "/opt/models", "audit_bucket": "au",
        })


def test_a_name_outside_the_model_fails_the_synth() -> None:
    # The session function does not load models: giving it MODEL_DIR is a mistake, not a harmless extra.
    with pytest.raises(ValueError, match=r"not in the model \['model_dir'\]"):
        function_environment(SessionEnv, {
            "deployments_table": "d", "watchlist_bucket": "w", "alerts_table": "a", "audit_bucket": "au",
            "crop_queue_url": "q", "crop_dlq_url": "dq", "model_dir": "/opt/models",
        })


def test_an_empty_value_fails_the_synth() -> None:
    with pytest.raises(ValidationError):
        function_environment(BuildWatchlistEnv, {**BUILD, "watchlist_bucket": ""})


def test_runtime_and_architecture_are_the_layers_build_target() -> None:
    assert LAMBDA_RUNTIME.name == f"python{LAMBDA_PYTHON_VERSION}"
    assert LAMBDA_ARCH.name == LAMBDA_ARCHITECTURE
