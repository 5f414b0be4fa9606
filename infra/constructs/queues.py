"""SQS: the crop queue (face crops from cameras) and its dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constants import (
    CROP_DLQ_RETENTION_S,
    CROP_MAX_RECEIVE_COUNT,
    CROP_QUEUE_RETENTION_S,
    MATCH_TIMEOUT_S,
)
from infra.constructs.nag import acknowledge

# AWS's guidance for Lambda consumers: visibility >= 6x the function timeout, so a
# retried batch is not redelivered while a throttled invocation still holds it. The
# visibility timeout is also how long a crashed or timed-out batch waits before its retry,
# so it is kept short by keeping the function timeout short: 6 x MATCH_TIMEOUT_S (5 s, sized
# from measured per-crop inference in infra/constants.py) = 30 s.
VISIBILITY_FACTOR = 6


class Queues(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self,
            "CropDlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            retention_period=Duration.seconds(CROP_DLQ_RETENTION_S),
            enforce_ssl=True,
        )
        acknowledge(self.dlq, "AwsSolutions-SQS3", "This queue is the crop queue's dead-letter queue.")
        self.crops = sqs.Queue(
            self,
            "CropQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            # Bounded so a face crop never outlives its usefulness as a live alert.
            retention_period=Duration.seconds(CROP_QUEUE_RETENTION_S),
            visibility_timeout=Duration.seconds(VISIBILITY_FACTOR * MATCH_TIMEOUT_S),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=CROP_MAX_RECEIVE_COUNT),
            enforce_ssl=True,
        )
