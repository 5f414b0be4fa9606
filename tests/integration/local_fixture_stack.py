"""A small CDK stack of the local-runtime test's own: queue + DLQ, one Lambda, a small state machine
whose task retries a transient error (interval, backoff, max delay) and catches a function error."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from infra.constructs.lambda_function import LAMBDA_RUNTIME

FIXTURE_DIR = Path(__file__).parent / "fixture_lambda"
STACK_NAME = "lfr-fixture"


def build_fixture_app(outdir: str | Path | None = None) -> cdk.App:
    app = cdk.App(outdir=str(outdir) if outdir else None)
    stack = cdk.Stack(app, STACK_NAME)
    table = dynamodb.Table(
        stack,
        "Table",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
    )
    dlq = sqs.Queue(stack, "Dlq", retention_period=cdk.Duration.hours(1))
    queue = sqs.Queue(
        stack,
        "Queue",
        visibility_timeout=cdk.Duration.seconds(4),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=2),
    )
    fn = lambda_.Function(
        stack,
        "Fixture",
        runtime=LAMBDA_RUNTIME,  # the lfr functions' pin
        handler="fixture_handler.handler",
        code=lambda_.Code.from_asset(str(FIXTURE_DIR)),
        timeout=cdk.Duration.seconds(3),
        environment={"FIXTURE_TABLE": table.table_name, "MODEL_DIR": "/opt/models"},
    )
    fn.add_event_source(sources.SqsEventSource(queue, batch_size=5, report_batch_item_failures=True))
    first = tasks.LambdaInvoke(
        stack,
        "First",
        lambda_function=fn,
        payload=sfn.TaskInput.from_object({"step": "first", "input.$": "$"}),
        result_selector={"out.$": "$.Payload"},
        result_path="$.first",
    )
    # 3 retries; delays 1 s, then min(1 * 3, 2) = 2 s and 2 s: MaxDelaySeconds caps the backoff.
    first.add_retry(
        errors=["FlakyError"], interval=cdk.Duration.seconds(1), backoff_rate=3.0, max_attempts=3,
        max_delay=cdk.Duration.seconds(2),
    )
    first.add_catch(sfn.Pass(stack, "Recovered"), errors=["FixtureError"], result_path="$.error")
    check = sfn.Choice(stack, "IsCounted")
    done = sfn.Succeed(stack, "Done")
    failed = sfn.Fail(stack, "Failed", error="NotCounted", cause="count missing")
    definition = first.next(check.when(sfn.Condition.is_present("$.first.out.count"), done).otherwise(failed))
    machine = sfn.StateMachine(stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(definition))
    cdk.CfnOutput(stack, "QueueUrl", value=queue.queue_url)
    cdk.CfnOutput(stack, "DlqUrl", value=dlq.queue_url)
    cdk.CfnOutput(stack, "FunctionName", value=fn.function_name)
    cdk.CfnOutput(stack, "StateMachineArn", value=machine.state_machine_arn)
    return app


def synth(outdir: str | Path) -> Path:
    """Same contract as `infra.app.synth`: synthesise into `outdir`, return the assembly directory."""
    return Path(build_fixture_app(outdir).synth().directory)
