"""The officers' side of the template: API routes and who authorises them, identities, the signing key."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from aws_emulation.apigw import routes_from_template
from tests.infra.test_template import app_and_stack, template  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.usefixtures("built_assets")


def test_routes_and_their_authorisation(template: Template) -> None:  # noqa: F811
    (routes,) = routes_from_template(dict(template.to_json())).values()
    got = {(r.method, r.path, r.authorization) for r in routes}
    assert got == {
        ("GET", "/alert/{deployment_id}/{alert_id}", "NONE"),  # static page, no alert data
        ("GET", "/t/alerts/{deployment_id}/{alert_id}", "NONE"),  # lfr-signed token, verified in the function
        ("POST", "/t/alerts/{deployment_id}/{alert_id}/decision", "NONE"),
        ("GET", "/alerts/{deployment_id}/{alert_id}", "COGNITO_USER_POOLS"),
        ("POST", "/alerts/{deployment_id}/{alert_id}/decision", "COGNITO_USER_POOLS"),
        ("GET", "/console/{deployment_id}", "NONE"),  # the van's console: static page
        ("GET", "/t/console/{deployment_id}", "NONE"),  # its state: lfr-signed token, verified in the function
    }
    fns = template.find_resources("AWS::Lambda::Function")
    assert {fns[r.function]["Properties"]["Handler"] for r in routes} == {"functions.handlers.officer_api.handler"}


def test_identities_and_signing_key(template: Template) -> None:  # noqa: F811
    (pool,) = template.find_resources("AWS::Cognito::UserPool").values()
    props: dict[str, Any] = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props["MfaConfiguration"] == "ON"
    assert {a["Name"] for a in props["Schema"]} >= {"officer_id", "deployment_id"}
    (client,) = template.find_resources("AWS::Cognito::UserPoolClient").values()
    assert client["Properties"]["GenerateSecret"] is False
    (secret,) = template.find_resources("AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    functions = template.find_resources("AWS::Lambda::Function").values()
    fns = {f["Properties"]["Handler"]: f["Properties"] for f in functions}
    match_env = fns["functions.handlers.match.handler"]["Environment"]["Variables"]
    assert {"OFFICER_PAGE_URL", "SIGNING_SECRET_ARN"} <= set(match_env)
    api_env = fns["functions.handlers.officer_api.handler"]["Environment"]["Variables"]
    assert {"OFFICERS_TABLE", "SIGNING_SECRET_ARN", "AUDIT_BUCKET", "ALERTS_TABLE"} <= set(api_env)
