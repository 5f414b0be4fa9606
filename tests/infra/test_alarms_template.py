"""Every quiet failure has an alarm in the template, on the metric the code emits, notifying ops."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from functions.observability import (
    METRIC_CROPS_REFUSED,
    METRIC_CROPS_REJECTED,
    METRIC_INDEX_MISSING,
    METRIC_PURGE_INCOMPLETE,
    METRICS_NAMESPACE,
    SERVICE_DIMENSION,
    SERVICE_NAME,
)
from infra import constants as C
from infra.app import CTX_ALARM_EMAIL, build_app
from infra.constructs import alarms as A
from infra.stack import LfrStack

pytestmark = pytest.mark.usefixtures("built_assets")

SERVICE_DIMS = [{"Name": SERVICE_DIMENSION, "Value": SERVICE_NAME}]


def _synth(tmp: Any, context: dict[str, Any] | None = None) -> tuple[App, LfrStack, Template]:
    app = build_app(outdir=str(tmp), context=context)
    stack = app.node.find_child(C.DEFAULT_STACK_NAME)
    assert isinstance(stack, LfrStack)
    app.synth()  # runs cdk-nag (its findings: tests/infra/test_template.py)
    return app, stack, Template.from_stack(stack)


@pytest.fixture(scope="module")
def synthed(built_assets: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[App, LfrStack, Template]:
    return _synth(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="module")
def template(synthed: tuple[App, LfrStack, Template]) -> Template:
    return synthed[2]


def _logical_id(template: Template, cfn_type: str, props: dict[str, Any]) -> str:
    found = template.find_resources(cfn_type, {"Properties": props})
    assert len(found) == 1, (cfn_type, props, list(found))
    return next(iter(found))


def _alarm(template: Template, suffix: str) -> dict[str, Any]:
    name = A.alarm_name_prefix(C.DEFAULT_STACK_NAME) + suffix
    (alarm,) = template.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": name}}).values()
    props: dict[str, Any] = alarm["Properties"]
    return props


def _topic_ref(template: Template) -> dict[str, str]:
    return {"Ref": _logical_id(template, "AWS::SNS::Topic", {"DisplayName": "lfr alarms"})}


@pytest.mark.parametrize(
    ("suffix", "namespace", "metric", "threshold", "operator", "period", "statistic"),
    [
        (A.ALARM_DLQ_DEPTH, "AWS/SQS", "ApproximateNumberOfMessagesVisible", 0, "GreaterThanThreshold", 60, "Maximum"),
        (A.ALARM_QUEUE_AGE, "AWS/SQS", "ApproximateAgeOfOldestMessage", A.QUEUE_AGE_ABOVE_S,
         "GreaterThanThreshold", 60, "Maximum"),
        (A.ALARM_MATCH_ERRORS, "AWS/Lambda", "Errors", A.MATCH_ERRORS_AT_LEAST,
         "GreaterThanOrEqualToThreshold", 300, "Sum"),
        (A.ALARM_CROPS_REJECTED, METRICS_NAMESPACE, METRIC_CROPS_REJECTED, A.REJECTED_CROPS_AT_LEAST,
         "GreaterThanOrEqualToThreshold", 300, "Sum"),
        (A.ALARM_CROPS_REFUSED, METRICS_NAMESPACE, METRIC_CROPS_REFUSED, A.REFUSED_CROPS_AT_LEAST,
         "GreaterThanOrEqualToThreshold", 300, "Sum"),
        (A.ALARM_PURGE_INCOMPLETE, METRICS_NAMESPACE, METRIC_PURGE_INCOMPLETE, 1,
         "GreaterThanOrEqualToThreshold", 60, "Sum"),
        (A.ALARM_INDEX_MISSING, METRICS_NAMESPACE, METRIC_INDEX_MISSING, 1,
         "GreaterThanOrEqualToThreshold", 60, "Sum"),
    ],
)
def test_every_alarm_has_its_metric_threshold_and_the_ops_action(
    template: Template, suffix: str, namespace: str, metric: str, threshold: float, operator: str,
    period: int, statistic: str,
) -> None:
    a = _alarm(template, suffix)
    assert (a["Namespace"], a["MetricName"]) == (namespace, metric)
    assert (a["Threshold"], a["ComparisonOperator"]) == (threshold, operator)
    assert (a["Period"], a["Statistic"], a["EvaluationPeriods"]) == (period, statistic, 1)
    assert a["TreatMissingData"] == "notBreaching"  # no data (no crop, no error) is healthy
    assert a["AlarmActions"] == [_topic_ref(template)]
    assert a["AlarmDescription"]


def test_alarm_dimensions_point_at_this_stacks_resources(template: Template) -> None:
    dlq = _logical_id(template, "AWS::SQS::Queue", {"MessageRetentionPeriod": C.CROP_DLQ_RETENTION_S})
    queue = _logical_id(template, "AWS::SQS::Queue", {"MessageRetentionPeriod": C.CROP_QUEUE_RETENTION_S})
    match = _logical_id(template, "AWS::Lambda::Function", {"Handler": "functions.handlers.match.handler"})
    assert _alarm(template, A.ALARM_DLQ_DEPTH)["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}
    ]
    assert _alarm(template, A.ALARM_QUEUE_AGE)["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
    ]
    assert _alarm(template, A.ALARM_MATCH_ERRORS)["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": match}}]
    for suffix in (A.ALARM_CROPS_REJECTED, A.ALARM_CROPS_REFUSED, A.ALARM_PURGE_INCOMPLETE, A.ALARM_INDEX_MISSING):
        # Exactly the dimensions Powertools emits the totals with (tests/unit/test_alarm_metrics.py).
        assert _alarm(template, suffix)["Dimensions"] == SERVICE_DIMS


def test_functions_emit_in_the_namespace_and_service_the_alarms_watch(template: Template) -> None:
    for fn in template.find_resources("AWS::Lambda::Function").values():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        if "POWERTOOLS_SERVICE_NAME" in env:
            assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
            assert env["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE


def test_session_failure_alarm_notifies_ops_too(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"MetricName": "ExecutionsFailed", "Namespace": "AWS/States", "AlarmActions": [_topic_ref(template)]},
    )


def test_alarm_topic_is_encrypted_tls_only_and_cloudwatch_may_publish(template: Template) -> None:
    topic = _topic_ref(template)["Ref"]
    props = template.find_resources("AWS::SNS::Topic")[topic]["Properties"]
    key = props["KmsMasterKeyId"]["Fn::GetAtt"][0]
    keys = template.find_resources("AWS::KMS::Key")
    assert keys[key]["Properties"]["EnableKeyRotation"] is True
    key_policy = keys[key]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key_policy)
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with([
                    Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
                    Match.object_like({"Action": "sns:Publish", "Principal": {"Service": "cloudwatch.amazonaws.com"}}),
                ])
            },
        },
    )
    template.has_output(C.OUTPUT_ALARM_TOPIC_ARN, {"Value": {"Ref": topic}})


def test_no_email_subscription_unless_asked(template: Template) -> None:
    assert template.find_resources("AWS::SNS::Subscription", {"Properties": {"Protocol": "email"}}) == {}


def test_alarm_email_context_subscribes_ops(built_assets: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    _, _, t = _synth(tmp_path_factory.mktemp("cdk.email"), {CTX_ALARM_EMAIL: "ops@example.org"})
    t.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "ops@example.org", "TopicArn": _topic_ref(t)},
    )

