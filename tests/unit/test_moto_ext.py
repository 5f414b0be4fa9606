"""moto's faults that `lfr_cli.local.moto_ext` and `EmbeddedStack` work around, and the workarounds.

The `test_upstream_*` tests assert moto (as installed) STILL has each fault, on moto's own code.
When one fails, moto has fixed that fault: delete the matching part of `moto_ext` (or of
`EmbeddedStack._executable_state_machines`) and the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Final

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.utils import get_stack_from_s3_url
from moto.core import DEFAULT_ACCOUNT_ID

from lfr_cli.local.moto_ext import path_style_template_url
from lfr_cli.local.server import ACCOUNT_ID as ACCOUNT
from lfr_cli.local.server import MotoServer, moto_config

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


def test_queue_counts_and_retention_answer_as_motos_own_code() -> None:
    """install()'s cheaper SQS counts and retention check (moto_ext item 4) give moto's answers."""
    from moto.sqs.models import sqs_backends

    from lfr_cli.local import moto_ext

    with MotoServer() as server:
        sqs = server.client("sqs")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for i in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=30)
        taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
        assert len(taken) == 2
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"],
                attrs["ApproximateNumberOfMessagesDelayed"]) == ("3", "2", "1")
        backend = sqs_backends[ACCOUNT][REGION]
        queue = backend.get_queue("q")
        assert queue.messages == moto_ext._upstream["queue_messages"](queue)
        # A message past the queue's retention period is not delivered, by either check.
        old = queue.messages[0]
        old.sent_timestamp = int(old.sent_timestamp or 0) - 61_000  # type: ignore[assignment]
        assert moto_ext._upstream["retention_ok"](backend, "q", old) is False
        assert backend.is_message_valid_based_on_retention_period("q", old) is False
        fresh = queue.messages[1]
        assert moto_ext._upstream["retention_ok"](backend, "q", fresh) is True
        assert backend.is_message_valid_based_on_retention_period("q", fresh) is True


def test_the_server_keeps_connections_alive_and_closes_them_when_stopped() -> None:
    """Many SDK calls share one connection (lfr_cli/local/keepalive.py); stopping ends it."""
    import socket

    server = MotoServer()
    server.start()
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="kept-alive", CreateBucketConfiguration={"LocationConstraint": REGION})
        body = bytes(range(256)) * 4096  # 1 MiB: bodies are read in full before the next request
        for i in range(5):
            s3.put_object(Bucket="kept-alive", Key=f"k{i}", Body=body)
            assert s3.get_object(Bucket="kept-alive", Key=f"k{i}")["Body"].read() == body
        assert s3.head_object(Bucket="kept-alive", Key="k0")["ContentLength"] == len(body)
        with pytest.raises(Exception, match=r"404|Not Found"):
            s3.head_object(Bucket="kept-alive", Key="missing")
        assert s3.get_object(Bucket="kept-alive", Key="k1", Range="bytes=0-9")["Body"].read() == body[:10]
        connections = server._server._server.lfr_connections
        assert len(connections) == 1
        # Requests written back to back on one socket, the first with a body: each is answered in
        # turn (the body was read exactly, not taken for the next request line, nor drained away).
        host, port = server.endpoint.removeprefix("http://").split(":")
        update = json.dumps({"batch": {"use_docker": False}}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                f"POST /moto-api/config HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(update)}\r\n\r\n".encode() + update
                + f"GET /moto-api/config HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            got = b""
            while got.count(b"HTTP/1.1 201") < 2 or not got.endswith(b"}"):
                chunk = raw.recv(65536)
                assert chunk, got
                got += chunk
        second = json.loads(got.split(b"\r\n\r\n")[-1])
        assert second["batch"]["use_docker"] is False
    finally:
        moto_config(server.endpoint, {"batch": {"use_docker": True}})  # moto's config is per process
        server.stop()
    time.sleep(0.2)
    assert not connections
