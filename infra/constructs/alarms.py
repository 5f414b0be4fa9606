"""CloudWatch alarms on every way lfr can fail quietly, and the ops team's SNS topic they notify.

One construct for the capability "someone is told": the metric names come from
`functions.observability` (the same constants the functions emit with), the thresholds are
named below with their reasons, and every alarm notifies the one alarm topic (an e-mail
subscription when the CDK context value `lfr:alarmEmail` is given, infra/app.py). `lfr deployment status` reads
these alarms' states (by the name prefix ALARM_NAME_PREFIX) next to the raw numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.observability import (
    METRIC_CROPS_REFUSED,
    METRIC_CROPS_REJECTED,
    METRIC_INDEX_MISSING,
    METRIC_PURGE_INCOMPLETE,
    METRICS_NAMESPACE,
    SERVICE_DIMENSION,
    SERVICE_NAME,
)
from infra.constants import ALARM_NAME_PREFIX

# -- thresholds and their reasons -------------------------------------------------------------
# Any crop in the DLQ is a track that was never decided (a listed person possibly missed) and a
# face kept until the session's purge: one is already an incident.
DLQ_DEPTH_ABOVE = 0
# The edge sends a track at most 3 s after first seeing it and a healthy match publishes within
# seconds; an officer prompted a minute after the person passed may no longer find them. A crop
# still waiting after QUEUE_AGE_ABOVE_S means the matcher is not keeping up, or is retrying
# (a retried crop reappears only after the queue's visibility timeout, well above this).
QUEUE_AGE_ABOVE_S = 60
# One error (an out-of-memory kill, a timeout on a cold start) is retried by SQS without loss;
# this many in one evaluation window is a failing matcher, not a blip.
MATCH_ERRORS_AT_LEAST = 3
# The edge only sends JPEGs it encoded itself, so a rejected crop is a broken camera or uploader,
# or hostile input. A stray one (a corrupted upload) is noise; this many in the window is a pattern.
REJECTED_CROPS_AT_LEAST = 10
# After a stop or expiry an uploader in flight may still deliver a few tracks (its 3 s batching,
# its spool); a sustained stream is a camera still sending for a deployment that is not live.
REFUSED_CROPS_AT_LEAST = 30
# A purge attempt that did not finish leaves watchlist data (or crops) behind: always an incident.
PURGE_INCOMPLETE_AT_LEAST = 1
# Every crop held because the index is unusable is a listed person who cannot alert: alarm at once.
INDEX_MISSING_AT_LEAST = 1
FAST_PERIOD = Duration.minutes(1)  # things that lose alerts or keep faces: the finest standard period
SLOW_PERIOD = Duration.minutes(5)  # counts of bad input: a window long enough to tell noise from a pattern

# Alarm name suffixes; full name = alarm_name_prefix(stack name) + suffix.
ALARM_DLQ_DEPTH = "DlqNotEmpty"
ALARM_QUEUE_AGE = "CropQueueOldestMessage"
ALARM_MATCH_ERRORS = "MatchFunctionErrors"
ALARM_CROPS_REJECTED = "CropsRejected"
ALARM_CROPS_REFUSED = "CropsRefused"
ALARM_PURGE_INCOMPLETE = "PurgeIncomplete"
ALARM_INDEX_MISSING = "IndexMissing"


@dataclass(frozen=True)
class AlarmSources:
    crop_queue: sqs.IQueue
    dlq: sqs.IQueue
    match_fn: lambda_.IFunction
    # Alarms defined by their own constructs that should notify the ops topic as well.
    existing: tuple[cloudwatch.Alarm, ...] = ()


def alarm_name_prefix(stack_name: str) -> str:
    return ALARM_NAME_PREFIX.format(stack_name=stack_name)


def _service_metric(name: str, period: Duration) -> cloudwatch.Metric:
    # The total series: Powertools emits every count with {"service": SERVICE_NAME} (see observability).
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={SERVICE_DIMENSION: SERVICE_NAME},
        statistic="Sum",
        period=period,
    )


class Alarms(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, sources: AlarmSources, alarm_email: str | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        # Its own key: CloudWatch must be allowed to use the key of a topic it publishes to, and
        # that grant does not belong on the data key (faces). Alarms carry names and numbers only.
        self.key = kms.Key(
            self, "TopicKey", description="lfr: ops alarm topic", enable_key_rotation=True,
            pending_window=Duration.days(7),
        )
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        self.key.grant(cloudwatch_principal, "kms:Decrypt", "kms:GenerateDataKey")
        self.topic = sns.Topic(self, "Topic", master_key=self.key, enforce_ssl=True, display_name="lfr alarms")
        stack = Stack.of(self)
        alarms_arn = f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:*"
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"],
                principals=[cloudwatch_principal],
                resources=[self.topic.topic_arn],
                conditions={"ArnLike": {"aws:SourceArn": alarms_arn}},
            )
        )
        if alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(alarm_email))
        action = cw_actions.SnsAction(self.topic)
        prefix = alarm_name_prefix(stack.stack_name)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(
            suffix: str, metric: cloudwatch.IMetric, threshold: float, op: cloudwatch.ComparisonOperator, why: str
        ) -> None:
            a = cloudwatch.Alarm(
                self,
                suffix,
                alarm_name=prefix + suffix,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=op,
                # No data is the healthy case for every metric here (no crop, no error, no fault).
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=why,
            )
            a.add_alarm_action(action)
            self.alarms[suffix] = a

        above = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        at_least = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        alarm(
            ALARM_DLQ_DEPTH,
            sources.dlq.metric_approximate_number_of_messages_visible(period=FAST_PERIOD, statistic="Maximum"),
            DLQ_DEPTH_ABOVE, above,
            "Crops in the DLQ: tracks never decided (listed people possibly missed); faces kept until the purge.",
        )
        alarm(
            ALARM_QUEUE_AGE,
            sources.crop_queue.metric_approximate_age_of_oldest_message(period=FAST_PERIOD, statistic="Maximum"),
            QUEUE_AGE_ABOVE_S, above,
            f"A crop has waited over {QUEUE_AGE_ABOVE_S}s: matching is behind or retrying; alerts come late.",
        )
        alarm(
            ALARM_MATCH_ERRORS,
            sources.match_fn.metric_errors(period=SLOW_PERIOD, statistic="Sum"),
            MATCH_ERRORS_AT_LEAST, at_least,
            "The match function is failing (crash, timeout, init error): crops are retried, then dead-lettered.",
        )
        alarm(
            ALARM_CROPS_REJECTED,
            _service_metric(METRIC_CROPS_REJECTED, SLOW_PERIOD),
            REJECTED_CROPS_AT_LEAST, at_least,
            "Crops rejected as undecodable or invalid (metric dimension `reason`): a broken uploader or hostile input.",
        )
        alarm(
            ALARM_CROPS_REFUSED,
            _service_metric(METRIC_CROPS_REFUSED, SLOW_PERIOD),
            REFUSED_CROPS_AT_LEAST, at_least,
            "Crops keep arriving for a deployment that is not ACTIVE: a camera sending outside its authorisation.",
        )
        alarm(
            ALARM_PURGE_INCOMPLETE,
            _service_metric(METRIC_PURGE_INCOMPLETE, FAST_PERIOD),
            PURGE_INCOMPLETE_AT_LEAST, at_least,
            "A session purge did not finish: watchlist data or crops may remain; it is retried, check it completes.",
        )
        alarm(
            ALARM_INDEX_MISSING,
            _service_metric(METRIC_INDEX_MISSING, FAST_PERIOD),
            INDEX_MISSING_AT_LEAST, at_least,
            "An ACTIVE deployment's watchlist index is missing or unreadable: its crops are held, nobody can alert.",
        )
        for existing in sources.existing:
            existing.add_alarm_action(action)
