"""Step Functions: the session lifecycle (build -> active loop -> purge -> close).

Written for AWS Step Functions; the local stack runs the same definition on moto's ASL engine.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from cdk_nag import RegexAppliesTo
from constructs import Construct

from functions.exceptions import terminal_error_names, transient_error_names
from functions.observability import METRIC_SESSION_STEP_ERRORS
from infra.constants import METRICS_NAMESPACE, SERVICE_NAME
from infra.constructs.nag import acknowledge
from lfr_core.lifecycle import SessionAction

# Retry and Catch come from the one classification of errors (functions/exceptions.py):
# transient errors are retried with exponential back-off, capped; terminal ones end the session.
TRANSIENT = transient_error_names()
TERMINAL = terminal_error_names()
# Before the deployment is live (validate, build, activate, and recording a failure): ~2.5 min
# (2+4+8+16+30x4 s) of retries, then the failure path, which records the reason and purges.
PRE_LIVE_RETRY = {"interval": Duration.seconds(2), "backoff_rate": 2.0, "max_delay": Duration.seconds(30),
                  "max_attempts": 8}
# Live: CheckActive retries quickly (1, 2, 4 s), then the machine keeps re-checking every
# LIVE_FAULT_WAIT_S (the back-off's cap) for as long as now < expires_at (its own copy, from
# Activate: it needs no storage to know the authorised window); past it, the normal purge.
LIVE_RETRY = {"interval": Duration.seconds(1), "backoff_rate": 2.0, "max_delay": Duration.seconds(4),
              "max_attempts": 3}
LIVE_FAULT_WAIT_S = 10
# Purge and close: retried for 24 h (2, 4, ... 60, 60 ... s), alarmed from the first error
# (metric SessionStepErrors, Action=purge); then PurgeFailed (alarm ExecutionsFailed).
CLEANUP_RETRY = {"interval": Duration.seconds(2), "backoff_rate": 2.0, "max_delay": Duration.seconds(60),
                 "max_attempts": 24 * 60 + 5}
SESSION_LOG_RETENTION = logs.RetentionDays.ONE_YEAR
# The session function's error metric (functions/handlers/session.py): one per failed step.
STEP_ERRORS_METRIC = METRIC_SESSION_STEP_ERRORS


def _payload(action: SessionAction | None, **paths: str) -> sfn.TaskInput:
    body: dict[str, Any] = {"deployment_id": sfn.JsonPath.string_at("$.deployment_id")}
    if action is not None:
        body = {"action": str(action), **body}
    for key, path in paths.items():
        # A caught {"Error", "Cause"} (the reason recorded and audited) or a context value.
        body[key] = sfn.JsonPath.object_at(path) if path.startswith("$.") else sfn.JsonPath.number_at(path)
    return sfn.TaskInput.from_object(body)


class SessionStateMachine(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        build_fn: lambda_.IFunction,
        session_fn: lambda_.IFunction,
        log_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        def invoke(
            state_id: str,
            fn: lambda_.IFunction,
            action: SessionAction | None,
            result_path: str,
            selector: dict[str, str] | None = None,
            retry: dict[str, Any] | None = None,
            paths: dict[str, str] | None = None,
        ) -> tasks.LambdaInvoke:
            # Results go under their own key so $.deployment_id survives every step.
            task = tasks.LambdaInvoke(
                self,
                state_id,
                lambda_function=fn,
                payload=_payload(action, **(paths or {})),
                result_selector=selector or {"result.$": "$.Payload"},
                result_path=result_path,
                # Lambda's own service errors are in TRANSIENT, retried with the step's policy.
                retry_on_service_exceptions=False,
            )
            if retry is not None:
                task.add_retry(errors=TRANSIENT, **retry)
            return task

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

        def purge(state_id: str, paths: dict[str, str] | None = None) -> tasks.LambdaInvoke:
            task = invoke(state_id, session_fn, SessionAction.PURGE, "$.purge", retry=CLEANUP_RETRY, paths=paths)
            task.add_catch(purge_failed, errors=[sfn.Errors.ALL], result_path="$.purge_error")
            return task

        # First step: authorisation, watchlist size and duration are checked by the machine itself,
        # so no client can start an unauthorised session; a refusal fails and purges (below).
        validate = invoke("Validate", session_fn, SessionAction.VALIDATE, "$.validate", retry=PRE_LIVE_RETRY)
        build = invoke("BuildWatchlist", build_fn, None, "$.build", retry=PRE_LIVE_RETRY)
        activate = invoke("Activate", session_fn, SessionAction.ACTIVATE, "$.activate", retry=PRE_LIVE_RETRY)
        check_selector = {"active.$": "$.Payload.active", "wait_s.$": "$.Payload.wait_s"}
        check = invoke(
            "CheckActive", session_fn, SessionAction.CHECK, "$.check", check_selector, retry=LIVE_RETRY,
            paths={"retry_count": "$$.State.RetryCount"},
        )
        # After CheckActive's quick retries: re-check every LIVE_FAULT_WAIT_S while inside the window.
        # No Retry here, so a success knows the error it recovered from ($.check_error) and audits it.
        check_after_fault = invoke(
            "CheckAfterFault", session_fn, SessionAction.CHECK, "$.check", check_selector,
            paths={"fault": "$.check_error", "retry_count": "$$.State.RetryCount"},
        )
        live_fault = sfn.Pass(
            self, "LiveFault", parameters={"now.$": "$$.State.EnteredTime"}, result_path="$.fault_clock"
        )
        within_window = sfn.Choice(self, "WithinWindow")
        wait_after_fault = sfn.Wait(
            self, "WaitAfterFault", time=sfn.WaitTime.duration(Duration.seconds(LIVE_FAULT_WAIT_S))
        )
        wait = sfn.Wait(self, "WaitABit", time=sfn.WaitTime.seconds_path("$.check.wait_s"))
        is_active = sfn.Choice(self, "IsActive")
        close = invoke("Close", session_fn, SessionAction.CLOSE, "$.close", retry=CLEANUP_RETRY)
        normal_purge = purge("Purge")

        # Any terminal failure still purges: no watchlist outlives its session. MarkFailed records
        # the reason; if even that cannot be written, the failure purge writes it with PURGING.
        mark_failed = invoke(
            "MarkFailed", session_fn, SessionAction.FAIL, "$.fail", retry=PRE_LIVE_RETRY, paths={"error": "$.error"}
        )
        failure_purge = purge("PurgeAfterFailure", paths={"error": "$.error"})
        mark_failed.add_catch(failure_purge, errors=[sfn.Errors.ALL], result_path="$.fail_error")
        mark_failed.next(failure_purge)
        failure_purge.next(build_failed)
        for step in (validate, build, activate):
            step.add_catch(mark_failed, errors=[sfn.Errors.ALL], result_path="$.error")
        for step in (check, check_after_fault):
            # Only a real end (an error that no retry can cure) fails a live deployment; anything
            # else is retried within the window. States.ALL last and alone, as ASL requires.
            step.add_catch(mark_failed, errors=TERMINAL, result_path="$.error")
            step.add_catch(live_fault, errors=[sfn.Errors.ALL], result_path="$.check_error")
        live_fault.next(
            within_window.when(
                sfn.Condition.timestamp_less_than_json_path("$.fault_clock.now", "$.activate.result.expires_at"),
                wait_after_fault.next(check_after_fault),
            ).otherwise(normal_purge)
        )
        check_after_fault.next(is_active)

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

        log_group = logs.LogGroup(
            self, "Logs", retention=SESSION_LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY, encryption_key=log_key
        )
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

        def step_errors_alarm(construct_id: str, action: SessionAction, description: str) -> cloudwatch.Alarm:
            metric = cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name=STEP_ERRORS_METRIC,
                dimensions_map={"Action": str(action), "service": SERVICE_NAME},  # Powertools adds `service`
                period=Duration.minutes(1),
                statistic="Sum",
            )
            return cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )

        # Visible while the machine is still retrying, not only once it has given up. (A retried
        # purge is the Alarms construct's PurgeIncomplete, from the same failed step.)
        self.check_failing_alarm = step_errors_alarm(
            "LiveCheckFailing", SessionAction.CHECK,
            "CheckActive failed and is being retried: a live session cannot currently see a stop or expiry",
        )
        # A killed or timed-out session function reports no metric of its own: Lambda's does.
        self.function_errors_alarm = cloudwatch.Alarm(
            self,
            "SessionFunctionErrors",
            metric=session_fn.metric_errors(period=Duration.minutes(1), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="A session step failed (crash, timeout or error); the machine retries it",
        )


def grant_queue_purge(fn: lambda_.Function, key: kms.IKey, crop: sqs.IQueue, dlq: sqs.IQueue) -> None:
    """The session function's purge removes its deployment's crops from the crop queue and the DLQ."""
    fn.add_to_role_policy(
        iam.PolicyStatement(
            # GetQueueAttributes: purge verifies a queue drained by its own counts.
            actions=[
                "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
            ],
            resources=[crop.queue_arn, dlq.queue_arn],
        )
    )
    fn.add_to_role_policy(iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]))
