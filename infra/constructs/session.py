"""Step Functions: the session lifecycle (build -> active loop -> purge -> close).

Written for AWS Step Functions; the local stack runs the same definition on moto's ASL engine.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from cdk_nag import RegexAppliesTo
from constructs import Construct

from infra.constructs.nag import acknowledge

PURGE_INCOMPLETE_ERROR = "PurgeIncompleteError"  # raised by the session fn (functions/exceptions.py)
# A purge attempt whose storage or audit write failed transiently is retried the same way.
PURGE_RETRY_ERRORS = [PURGE_INCOMPLETE_ERROR, "TransientStorageError", "AuditAppendError"]
PURGE_RETRY = {"interval": Duration.seconds(2), "backoff_rate": 2.0, "max_attempts": 6}
SESSION_LOG_RETENTION = logs.RetentionDays.ONE_YEAR


def _payload(action: str | None) -> sfn.TaskInput:
    body: dict[str, Any] = {"deployment_id": sfn.JsonPath.string_at("$.deployment_id")}
    if action is not None:
        body = {"action": action, **body}
    if action == "fail":
        # The caught {"Error", "Cause"}: the reason recorded (and audited) for the failure.
        body["error"] = sfn.JsonPath.object_at("$.error")
    return sfn.TaskInput.from_object(body)


class SessionStateMachine(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        build_fn: lambda_.IFunction,
        session_fn: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)

        def invoke(
            state_id: str,
            fn: lambda_.IFunction,
            action: str | None,
            result_path: str,
            selector: dict[str, str] | None = None,
        ) -> tasks.LambdaInvoke:
            # Results go under their own key so $.deployment_id survives every step.
            return tasks.LambdaInvoke(
                self,
                state_id,
                lambda_function=fn,
                payload=_payload(action),
                result_selector=selector or {"result.$": "$.Payload"},
                result_path=result_path,
            )

        purge_failed = sfn.Fail(
            self,
            "PurgeFailed",
            error="PurgeFailed",
            cause="Watchlist data could not be verified deleted; alarmed for manual purge",
        )
        build_failed = sfn.Fail(
            self,
            "SessionFailed",
            error="SessionFailed",
            cause="The session failed before completion; its watchlist data was purged",
        )

        def purge(state_id: str) -> tasks.LambdaInvoke:
            task = invoke(state_id, session_fn, "purge", "$.purge")
            task.add_retry(errors=PURGE_RETRY_ERRORS, **PURGE_RETRY)  # type: ignore[arg-type]
            task.add_catch(purge_failed, errors=[sfn.Errors.ALL], result_path="$.error")
            return task

        # First step: authorisation, watchlist size and duration are checked by the machine itself,
        # so no client can start an unauthorised session; a refusal fails and purges (below).
        validate = invoke("Validate", session_fn, "validate", "$.validate")
        build = invoke("BuildWatchlist", build_fn, None, "$.build")
        activate = invoke("Activate", session_fn, "activate", "$.activate")
        check = invoke(
            "CheckActive",
            session_fn,
            "check",
            "$.check",
            {"active.$": "$.Payload.active", "wait_s.$": "$.Payload.wait_s"},
        )
        wait = sfn.Wait(self, "WaitABit", time=sfn.WaitTime.seconds_path("$.check.wait_s"))
        is_active = sfn.Choice(self, "IsActive")
        close = invoke("Close", session_fn, "close", "$.close")
        normal_purge = purge("Purge")

        # Any failure before the purge still purges: no watchlist outlives its session.
        mark_failed = invoke("MarkFailed", session_fn, "fail", "$.fail")
        failure_purge = purge("PurgeAfterFailure")
        mark_failed.add_catch(failure_purge, errors=[sfn.Errors.ALL], result_path="$.fail_error")
        mark_failed.next(failure_purge)
        failure_purge.next(build_failed)
        for step in (validate, build, activate, check):
            step.add_catch(mark_failed, errors=[sfn.Errors.ALL], result_path="$.error")

        definition = (
            validate.next(build)
            .next(activate)
            .next(check)
            .next(
                is_active.when(sfn.Condition.boolean_equals("$.check.active", True), wait.next(check)).otherwise(
                    normal_purge.next(close)
                )
            )
        )

        log_group = logs.LogGroup(self, "Logs", retention=SESSION_LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            # Execution data is only ids, states and counts (never images or embeddings).
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )
        acknowledge(
            self.state_machine,
            "AwsSolutions-IAM5",
            "CDK's LambdaInvoke grant covers the function's versions/aliases (arn:*); X-Ray and"
            " CloudWatch Logs delivery APIs do not support resource-level permissions (Resource::*).",
            applies_to=[
                RegexAppliesTo(regex=r"/^Resource::<Functions(BuildWatchlist|Session)[0-9A-F]+\.Arn>:\*$/g"),
                "Resource::*",
            ],
        )
        self.failed_alarm = cloudwatch.Alarm(
            self,
            "ExecutionsFailed",
            metric=self.state_machine.metric_failed(period=Duration.minutes(1), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="A session failed: check PurgeFailed (data may remain) or SessionFailed",
        )
