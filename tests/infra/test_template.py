"""The synthesised template carries the safeguards the architecture promises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Annotations, Match, Template

from functions.models.env import (
    AUDIT_BUCKET,
    CROP_DLQ_URL,
    CROP_QUEUE_URL,
    BuildWatchlistEnv,
    FunctionEnv,
    MatchEnv,
    OfficerApiEnv,
    SessionEnv,
)
from infra.app import build_app
from infra.constants import (
    ALERT_RETENTION_CHOICES_DAYS,
    ALERT_RETENTION_DAYS,
    ALERT_RETENTION_TAG,
    AUDIT_RETENTION_DAYS,
    BUILD_RESERVED_CONCURRENCY,
    CROP_DLQ_RETENTION_S,
    CROP_MAX_RECEIVE_COUNT,
    CROP_QUEUE_RETENTION_S,
    DEFAULT_STACK_NAME,
    MATCH_BATCH_SIZE,
    MATCH_MAX_CONCURRENCY,
    MATCH_RESERVED_CONCURRENCY,
    MATCH_TIMEOUT_S,
    MAX_SESSION_DURATION_S,
    METRICS_NAMESPACE,
    OFFICER_API_RESERVED_CONCURRENCY,
    SERVICE_NAME,
    SESSION_RESERVED_CONCURRENCY,
)
from infra.stack import LfrStack
from lambda_target import LAMBDA_RUNTIME_NAME, LAYER_MODEL_DIR

pytestmark = pytest.mark.usefixtures("built_assets")


@pytest.fixture(scope="module")
def app_and_stack(built_assets: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[App, LfrStack]:
    app = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = app.node.find_child(DEFAULT_STACK_NAME)
    assert isinstance(stack, LfrStack)
    app.synth()  # runs the cdk-nag aspect
    return app, stack


@pytest.fixture(scope="module")
def template(app_and_stack: tuple[App, LfrStack]) -> Template:
    return Template.from_stack(app_and_stack[1])


def _definition(template: Template) -> dict[str, Any]:
    (sm,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    parts = sm["Properties"]["DefinitionString"]["Fn::Join"][1]
    # Token parts (function ARNs) are dicts; substitute a string so the JSON parses.
    return json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))


def test_match_event_source_reports_batch_item_failures(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"FunctionResponseTypes": ["ReportBatchItemFailures"], "BatchSize": MATCH_BATCH_SIZE},
    )


def test_crop_queue_encrypted_bounded_and_redriven(template: Template) -> None:
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "RedrivePolicy": {"maxReceiveCount": CROP_MAX_RECEIVE_COUNT, "deadLetterTargetArn": Match.any_value()},
            "KmsMasterKeyId": Match.any_value(),
            "MessageRetentionPeriod": CROP_QUEUE_RETENTION_S,
            "VisibilityTimeout": 6 * MATCH_TIMEOUT_S,
        },
    )
    assert CROP_QUEUE_RETENTION_S <= 900
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {"MessageRetentionPeriod": CROP_DLQ_RETENTION_S, "KmsMasterKeyId": Match.any_value()},
    )


def test_buckets_encrypted_and_private(template: Template) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 4  # watchlist, alerts, access logs, audit
    for b in buckets.values():
        props = b["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        if "ObjectLockEnabled" not in props:
            assert "VersioningConfiguration" not in props  # deletes are real
    # Every bucket refuses non-TLS access.
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 4
    for p in policies.values():
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        )


def test_alerts_bucket_expires_after_retention(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"ExpirationInDays": ALERT_RETENTION_DAYS, "Status": "Enabled"})]
                )
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like({"ServerSideEncryptionByDefault": Match.object_like({"SSEAlgorithm": "aws:kms"})})
                ]
            },
        },
    )


def test_tables(template: Template) -> None:
    common = {
        "BillingMode": "PAY_PER_REQUEST",
        # On the customer-managed data key, like the buckets and queues (revocable, in CloudTrail).
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
    }
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {**common, "TimeToLiveSpecification": {"AttributeName": "expires_at_epoch", "Enabled": True}},
    )
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {**common, "KeySchema": [{"AttributeName": "deployment_id", "KeyType": "HASH"}],
         "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}},
    )
    template.resource_count_is("AWS::DynamoDB::Table", 3)  # + officers (tests/infra/test_officers_template.py)
    for t in template.find_resources("AWS::DynamoDB::Table").values():
        assert Match.object_like(common).test(t["Properties"]).fail_count == 0


def test_alert_records_are_not_restorable_past_their_retention(template: Template) -> None:
    """"31 days, never longer": PITR would keep an expired alert record restorable for up to 35 more days,
    so the one table with a retention promise (the TTL-expired alerts) has none; the others keep theirs."""
    tables = template.find_resources("AWS::DynamoDB::Table")
    (alerts,) = [t["Properties"] for t in tables.values()
                 if t["Properties"].get("TimeToLiveSpecification", {}).get("AttributeName") == "expires_at_epoch"]
    pitr = alerts.get("PointInTimeRecoverySpecification", {})
    assert pitr.get("PointInTimeRecoveryEnabled") in (None, False), pitr
    assert "RecoveryPeriodInDays" not in pitr
    assert not template.find_resources("AWS::Backup::BackupPlan")  # nor a backup copy elsewhere
    others = [t["Properties"] for t in tables.values() if t["Properties"] is not alerts]
    assert all("TimeToLiveSpecification" not in t for t in others)  # nothing else promises an end
    assert all(t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True for t in others)


def test_every_function_has_reserved_concurrency_and_the_trigger_a_cap(template: Template) -> None:
    fns = template.find_resources("AWS::Lambda::Function")
    reserved = {f["Properties"]["Handler"]: f["Properties"].get("ReservedConcurrentExecutions") for f in fns.values()}
    assert reserved == {
        "functions.handlers.match.handler": MATCH_RESERVED_CONCURRENCY,
        "functions.handlers.build_watchlist.handler": BUILD_RESERVED_CONCURRENCY,
        "functions.handlers.session.handler": SESSION_RESERVED_CONCURRENCY,
        "functions.handlers.officer_api.handler": OFFICER_API_RESERVED_CONCURRENCY,
    }
    # The SQS poller never invokes into throttling (a throttled batch counts a receive towards the DLQ).
    (esm,) = template.find_resources("AWS::Lambda::EventSourceMapping").values()
    cap = esm["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    assert cap == MATCH_MAX_CONCURRENCY and 2 <= cap <= MATCH_RESERVED_CONCURRENCY
    # Lambda keeps 100 of the account's concurrency unreserved.
    assert sum(reserved.values()) + 100 <= 1000


def test_log_groups_and_secret_on_the_data_key_which_lets_cloudwatch_logs_use_it(template: Template) -> None:
    # The data key (the alarm topic has a key of its own: CloudWatch may use that one, never this).
    (key_id,) = [k for k in template.find_resources("AWS::KMS::Key") if k.startswith("DataKey")]
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(groups) == 6
    for g in groups.values():
        assert g["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (secret,) = template.find_resources("AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    statements = template.find_resources("AWS::KMS::Key")[key_id]["Properties"]["KeyPolicy"]["Statement"]
    (logs_stmt,) = [s for s in statements if s.get("Sid") == "AllowCloudWatchLogsOfThisAccount"]
    assert "kms:GenerateDataKey*" in logs_stmt["Action"] and "kms:Decrypt*" in logs_stmt["Action"]
    assert "kms:EncryptionContext:aws:logs:arn" in logs_stmt["Condition"]["ArnLike"]


def test_state_machine_states(template: Template) -> None:
    template.resource_count_is("AWS::StepFunctions::StateMachine", 1)
    states = _definition(template)["States"]
    assert _definition(template)["StartAt"] == "Validate"
    assert states["Validate"]["Parameters"]["Payload"] == {"action": "validate", "deployment_id.$": "$.deployment_id"}
    assert states["Validate"]["Next"] == "BuildWatchlist"
    assert states["Validate"]["Catch"][0]["Next"] == "MarkFailed"  # refused -> FAILED + purge + Fail
    assert states["MarkFailed"]["Parameters"]["Payload"]["error.$"] == "$.error"  # the reason is recorded
    for name in ("BuildWatchlist", "Activate", "CheckActive", "IsActive", "WaitABit", "Purge", "Close"):
        assert name in states, name
    assert {"MarkFailed", "PurgeAfterFailure", "PurgeFailed", "SessionFailed"} <= set(states)
    assert states["WaitABit"]["SecondsPath"] == "$.check.wait_s"
    assert states["CheckActive"]["ResultPath"] == "$.check"
    assert states["Activate"]["Parameters"]["Payload"] == {"action": "activate", "deployment_id.$": "$.deployment_id"}
    for purge in ("Purge", "PurgeAfterFailure"):
        assert any("PurgeIncompleteError" in r["ErrorEquals"] for r in states[purge]["Retry"])
        assert states[purge]["Catch"][0]["Next"] == "PurgeFailed"
    assert states["PurgeFailed"]["Type"] == "Fail"
    assert states["BuildWatchlist"]["Catch"][0]["Next"] == "MarkFailed"


def test_state_machine_failure_alarm(template: Template) -> None:
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "ExecutionsFailed", "Namespace": "AWS/States", "Threshold": 1}
    )


def test_topic_encrypted(template: Template) -> None:
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_functions_runtime_layer_and_handlers(template: Template) -> None:
    fns = template.find_resources("AWS::Lambda::Function")
    assert len(fns) == 4  # + the officers' API (tests/infra/test_officers_template.py)
    handlers = set()
    for f in fns.values():
        props = f["Properties"]
        assert props["Runtime"] == "python3.12" == LAMBDA_RUNTIME_NAME
        assert props["Architectures"] == ["x86_64"]
        assert len(props["Layers"]) == 1
        handlers.add(props["Handler"])
    assert handlers == set(ENV_MODELS)


# Each handler's env model (functions/models/env.py); the handler reads exactly these at cold start.
ENV_MODELS: dict[str, type[FunctionEnv]] = {
    "functions.handlers.match.handler": MatchEnv,
    "functions.handlers.build_watchlist.handler": BuildWatchlistEnv,
    "functions.handlers.session.handler": SessionEnv,
    "functions.handlers.officer_api.handler": OfficerApiEnv,
}


def test_each_function_is_given_exactly_its_env_model(template: Template) -> None:
    """Every variable a handler requires is set (so none is optional in its model), and nothing else:
    the template's environment parses with the model, tokens standing for the resources' names."""
    for f in template.find_resources("AWS::Lambda::Function").values():
        props = f["Properties"]
        model = ENV_MODELS[props["Handler"]]
        env = props["Environment"]["Variables"]
        assert set(env) == {str(field.alias) for field in model.model_fields.values()}, props["Handler"]
        parsed = model.from_environ({k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()})
        assert parsed.service_name == SERVICE_NAME and parsed.metrics_namespace == METRICS_NAMESPACE
        if "model_dir" in model.model_fields:
            assert env["MODEL_DIR"] == LAYER_MODEL_DIR


def test_outputs(template: Template) -> None:
    from infra import constants

    names = {v for k, v in vars(constants).items() if k.startswith("OUTPUT_")}
    assert names <= set(template.find_outputs("*"))


def test_no_unsuppressed_nag_findings(app_and_stack: tuple[App, LfrStack]) -> None:
    annotations = Annotations.from_stack(app_and_stack[1])
    errors = annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == [], [f"{e.id}: {str(e.entry.data)[:160]}" for e in errors]
    warnings = annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert warnings == [], [f"{w.id}: {str(w.entry.data)[:160]}" for w in warnings]


# -- retention, audit Object Lock, queue retention, session limits -------------------------


def test_retention_settings(template: Template) -> None:
    """Alert records expire by TTL, crops by lifecycle (with shorter per-deployment rules), queues in minutes."""
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"TimeToLiveSpecification": {"AttributeName": "expires_at_epoch", "Enabled": True},
         "KeySchema": Match.array_with([{"AttributeName": "alert_id", "KeyType": "RANGE"}])},
    )
    (alerts_bucket,) = [
        b["Properties"] for b in template.find_resources("AWS::S3::Bucket").values()
        if any(r.get("Id") == "ExpireAlertCrops"
               for r in b["Properties"].get("LifecycleConfiguration", {}).get("Rules", []))
    ]
    rules = alerts_bucket["LifecycleConfiguration"]["Rules"]
    default = [r for r in rules if "TagFilters" not in r]
    assert [r["ExpirationInDays"] for r in default] == [ALERT_RETENTION_DAYS]
    tagged = {r["TagFilters"][0]["Value"]: r["ExpirationInDays"] for r in rules if "TagFilters" in r}
    assert tagged == {str(d): d for d in ALERT_RETENTION_CHOICES_DAYS if d < ALERT_RETENTION_DAYS}
    assert all(r["TagFilters"][0]["Key"] == ALERT_RETENTION_TAG for r in rules if "TagFilters" in r)
    assert all(d <= ALERT_RETENTION_DAYS for d in tagged.values())  # only ever shorter
    # Queues hold crops for minutes, never SQS's 4-day default; the DLQ outlasts the queue only a little.
    queues = template.find_resources("AWS::SQS::Queue").values()
    periods = sorted(q["Properties"]["MessageRetentionPeriod"] for q in queues)
    assert periods == [CROP_QUEUE_RETENTION_S, CROP_DLQ_RETENTION_S]
    assert CROP_QUEUE_RETENTION_S <= CROP_DLQ_RETENTION_S <= 30 * 60
    assert MAX_SESSION_DURATION_S == 12 * 3600


def test_audit_bucket_object_lock(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": {
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": AUDIT_RETENTION_DAYS}},
            },
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )
    # Deletes denied to everyone, and PutObject only as a conditional create (no overwrite).
    statements = [
        s for p in template.find_resources("AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    deny_delete = [s for s in statements if s.get("Sid") == "DenyAuditDeletes"]
    assert deny_delete and deny_delete[0]["Effect"] == "Deny" and "s3:DeleteObjectVersion" in deny_delete[0]["Action"]
    deny_put = [s for s in statements if s.get("Sid") == "DenyOverwrites"]
    assert deny_put and deny_put[0]["Condition"] == {"Null": {"s3:if-none-match": "true"}}


def test_session_and_match_functions_can_append_audit_and_purge_queues(template: Template) -> None:
    fns = {f["Properties"]["Handler"]: f["Properties"]
           for f in template.find_resources("AWS::Lambda::Function").values()}
    session_env = fns["functions.handlers.session.handler"]["Environment"]["Variables"]
    assert {AUDIT_BUCKET, CROP_QUEUE_URL, CROP_DLQ_URL} <= set(session_env)
    assert AUDIT_BUCKET in fns["functions.handlers.match.handler"]["Environment"]["Variables"]
    policies = json.dumps(template.find_resources("AWS::IAM::Policy"))
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert action in policies
    states = _definition(template)["States"]
    for purge in ("Purge", "PurgeAfterFailure"):
        (retry,) = [r for r in states[purge]["Retry"] if "PurgeIncompleteError" in r["ErrorEquals"]]
        assert {"PurgeIncompleteError", "TransientStorageError", "AuditAppendError"} <= set(retry["ErrorEquals"])


def test_match_timeout_fits_a_batch_and_the_function_may_ack_its_own_records(template: Template) -> None:
    """A crashed batch waits out the visibility timeout (6x the match timeout) before its retry, so the
    timeout is sized to a batch; the function deletes/releases records itself (functions/logic/sqs_batch.py)."""
    from infra.constants import MATCH_ALERT_WRITES_MS, MATCH_CROP_INFERENCE_MS
    from lfr_core.contracts import MAX_TRACK_CROPS

    worst_batch_ms = MATCH_BATCH_SIZE * (MAX_TRACK_CROPS * MATCH_CROP_INFERENCE_MS + MATCH_ALERT_WRITES_MS)
    assert 4 * worst_batch_ms <= MATCH_TIMEOUT_S * 1000  # headroom: record by record, a loaded machine
    assert 6 * MATCH_TIMEOUT_S <= 60  # a retried record is back within a minute
    assert CROP_MAX_RECEIVE_COUNT >= 5  # AWS's guidance for Lambda consumers
    (match_id,) = [k for k, f in template.find_resources("AWS::Lambda::Function").items()
                   if f["Properties"]["Handler"] == "functions.handlers.match.handler"]
    role = template.find_resources("AWS::Lambda::Function")[match_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    queues = template.find_resources("AWS::SQS::Queue").items()
    (queue_id,) = [k for k, q in queues if "RedrivePolicy" in q["Properties"]]
    actions: set[str] = set()
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if st["Effect"] == "Allow" and {"Fn::GetAtt": [queue_id, "Arn"]} in (
                st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            ):
                actions |= set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    assert {"sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"} <= actions


def test_every_session_task_names_a_session_action_and_every_action_has_a_task(template: Template) -> None:
    from lfr_core.lifecycle import SessionAction

    states = _definition(template)["States"]
    payloads = {name: s["Parameters"]["Payload"] for name, s in states.items() if s["Type"] == "Task"}
    actions = {name: p["action"] for name, p in payloads.items() if "action" in p}
    assert set(payloads) - set(actions) == {"BuildWatchlist"}  # the build function takes no action
    assert set(actions.values()) == {str(a) for a in SessionAction}
    assert actions["CheckActive"] == actions["CheckAfterFault"] == SessionAction.CHECK
    assert actions["MarkFailed"] == SessionAction.FAIL
    assert actions["Purge"] == actions["PurgeAfterFailure"] == SessionAction.PURGE
