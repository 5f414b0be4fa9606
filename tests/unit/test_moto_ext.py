"""moto's faults that `lfr_cli.local.moto_ext` and `EmbeddedStack` work around, and the workarounds.

The `test_upstream_*` tests assert moto (as installed) STILL has each fault, on moto's own code.
When one fails, moto has fixed that fault: delete the matching part of `moto_ext` (or of
`EmbeddedStack._executable_state_machines`) and the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.utils import get_stack_from_s3_url
from moto.core import DEFAULT_ACCOUNT_ID

from lfr_cli.local.moto_ext import path_style_template_url
from lfr_cli.local.server import MotoServer

REGION: Final = "eu-west-2"

# A REST API deployment listed before the method it depends on, and an output.
TEMPLATE: dict[str, Any] = {
    "Resources": {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "api"}},
        "Deployment": {
            "Type": "AWS::ApiGateway::Deployment",
            "Properties": {"RestApiId": {"Ref": "Api"}},
            "DependsOn": ["Method"],
        },
        "Method": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "RestApiId": {"Ref": "Api"},
                "ResourceId": {"Fn::GetAtt": ["Api", "RootResourceId"]},
                "HttpMethod": "GET",
                "AuthorizationType": "NONE",
                "Integration": {"Type": "MOCK", "IntegrationHttpMethod": "POST", "Uri": "http://example.invalid"},
            },
        },
        "Queue": {"Type": "AWS::SQS::Queue"},
    },
    "Outputs": {"QueueUrl": {"Value": {"Ref": "Queue"}}},
}


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def test_upstream_reads_a_loopback_template_url_host_as_the_bucket(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="assets", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="assets", Key="t.json", Body=b"{}")
    url = "http://127.0.0.1:40123/assets/t.json"  # what the CDK CLI sends with AWS_ENDPOINT_URL
    with pytest.raises(Exception, match="bucket does not exist"):
        get_stack_from_s3_url(url, account_id=DEFAULT_ACCOUNT_ID, partition="aws")
    # The workaround hands moto the same bucket and key in a form it parses.
    fixed = path_style_template_url(url)
    assert fixed == "https://s3.amazonaws.com/assets/t.json"
    assert get_stack_from_s3_url(fixed, account_id=DEFAULT_ACCOUNT_ID, partition="aws") == "{}"
    assert path_style_template_url("https://b.s3.amazonaws.com/k") == "https://b.s3.amazonaws.com/k"


def _stock_change_set(template: dict[str, Any]) -> Any:
    backend = cloudformation_backends[DEFAULT_ACCOUNT_ID][REGION]
    change_set_id, stack_id = backend.create_change_set(
        stack_name="s", change_set_name="cs", template=json.dumps(template), parameters={},
        description="", change_set_type="CREATE",
    )
    return backend, change_set_id, stack_id


def test_upstream_create_change_set_ignores_dependencies(aws: None) -> None:
    backend, change_set_id, _ = _stock_change_set(TEMPLATE)
    with pytest.raises(Exception, match="doesn't contain any methods"):
        backend.execute_change_set(change_set_name=change_set_id)


def test_upstream_create_change_set_reads_no_outputs(aws: None) -> None:
    template = {"Resources": {"Queue": TEMPLATE["Resources"]["Queue"]}, "Outputs": TEMPLATE["Outputs"]}
    backend, change_set_id, stack_id = _stock_change_set(template)
    backend.execute_change_set(change_set_name=change_set_id)
    stack = backend.stacks[stack_id]
    assert stack.status == "CREATE_COMPLETE"
    assert stack.outputs is None


def test_upstream_executing_backend_does_not_see_cloudformation_state_machines(aws: None) -> None:
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    template = {
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "DefinitionString": json.dumps(definition), "RoleArn": "arn:aws:iam::123456789012:role/r"
                },
            }
        }
    }
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(StackName="sm", TemplateBody=json.dumps(template))
    arn = cfn.describe_stack_resources(StackName="sm")["StackResources"][0]["PhysicalResourceId"]
    assert boto3.client("stepfunctions", region_name=REGION).describe_state_machine(stateMachineArn=arn)
    with pytest.raises(Exception, match=r"does not exist|DoesNotExist"):
        stepfunctions_parser_backends[DEFAULT_ACCOUNT_ID][REGION].describe_state_machine(arn)


def test_local_server_deploys_a_change_set_from_a_loopback_template_url() -> None:
    """What `cdk deploy` does, on the local server: upload, create and execute a CREATE change set."""
    with MotoServer() as server:
        s3, cfn = server.client("s3"), server.client("cloudformation")
        s3.create_bucket(Bucket="assets", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket="assets", Key="t.json", Body=json.dumps(TEMPLATE).encode())
        cfn.create_change_set(
            StackName="s", ChangeSetName="cs", ChangeSetType="CREATE",
            TemplateURL=f"{server.endpoint}/assets/t.json",
        )
        cfn.execute_change_set(StackName="s", ChangeSetName="cs")
        (stack,) = cfn.describe_stacks(StackName="s")["Stacks"]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        (output,) = stack["Outputs"]
        assert output["OutputKey"] == "QueueUrl"
        (queue_url,) = server.client("sqs").list_queues()["QueueUrls"]
        assert output["OutputValue"].rsplit("/", 1)[-1] == queue_url.rsplit("/", 1)[-1]
        types = {r["ResourceType"] for r in cfn.list_stack_resources(StackName="s")["StackResourceSummaries"]}
        assert {"AWS::ApiGateway::Deployment", "AWS::ApiGateway::Method", "AWS::SQS::Queue"} <= types
        events = [e["ResourceStatus"] for e in cfn.describe_stack_events(StackName="s")["StackEvents"]
                  if e["LogicalResourceId"] == "s"]
        assert "REVIEW_IN_PROGRESS" in events and "CREATE_COMPLETE" in events


def test_upstream_choice_timestamps_accept_only_whole_seconds_in_z() -> None:
    from moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations import (
        is_operator,
    )

    from lfr_cli.local import moto_ext

    # moto's own parser, or the one install() replaced if it already ran in this process.
    parse = moto_ext._upstream.get("string_to_timestamp") or is_operator.IsTimestamp.__dict__[
        "string_to_timestamp"].__func__
    assert parse is not moto_ext.rfc3339_timestamp
    # moto's own $$.State.EnteredTime (isoformat) and the session function's expires_at are not timestamps to it.
    assert parse("2026-12-03T09:05:16Z") is not None
    assert parse("2026-12-03T09:05:16.744330+00:00") is None
    assert parse("2026-12-03T09:05:16.744Z") is None


def test_choice_timestamps_are_rfc3339_in_utc() -> None:
    from lfr_cli.local.moto_ext import rfc3339_timestamp

    a = rfc3339_timestamp("2026-12-03T09:05:16.744330+00:00")
    b = rfc3339_timestamp("2026-12-03T10:05:16Z")
    c = rfc3339_timestamp("2026-12-03T11:05:16.5+01:00")
    assert a is not None and b is not None and a < b and c == b.replace(microsecond=500000)
    for not_one in ("2026-12-03", "2026-12-03T09:05:16", "soon", "2026-12-03t09:05:16Z"):
        assert rfc3339_timestamp(not_one) is None, not_one
