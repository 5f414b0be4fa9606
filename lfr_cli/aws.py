"""How the admin CLI reaches AWS: real AWS, or the local embedded stack.

The CLI finds the stack's resources through its CloudFormation outputs, exactly as an
admin's laptop would against a real account, so the local stack is not special-cased.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from infra.constants import DEFAULT_STACK_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_ENDPOINT_FILE = REPO_ROOT / "build" / "local" / "endpoint.json"


class StackNotFoundError(Exception):
    pass


@dataclass
class AwsContext:
    region: str
    endpoint_url: str | None = None
    profile: str | None = None
    stack_name: str = DEFAULT_STACK_NAME
    _session: Any = field(default=None, repr=False)
    _outputs: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def discover(cls, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, stack_name: str = DEFAULT_STACK_NAME) -> AwsContext:
        """Explicit flags, then the environment, then a running `lfr local up`."""
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        reg = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint is None and LOCAL_ENDPOINT_FILE.exists() and profile is None:
            local = json.loads(LOCAL_ENDPOINT_FILE.read_text())
            endpoint, reg = local["endpoint"], reg or local.get("region")
        return cls(region=reg or "eu-west-2", endpoint_url=endpoint, profile=profile, stack_name=stack_name)

    @property
    def session(self) -> Any:
        if self._session is None:
            if self.endpoint_url and self.profile is None:
                # The local emulator accepts any credentials; never use an admin's real ones against it.
                self._session = boto3.Session(
                    aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.region
                )
            else:
                self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
        return self._session

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    @property
    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
            except Exception as exc:
                raise StackNotFoundError(
                    f"stack {self.stack_name!r} not found at {self.endpoint_url or 'AWS'} "
                    f"(run `lfr local up` or deploy with CDK): {exc}"
                ) from exc
            self._outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return self._outputs


# -- what `lfr deployment status` shows of the stack's health (alarms and the raw numbers) ------------

QUEUE_COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
QUEUE_AGE_METRIC = ("AWS/SQS", "ApproximateAgeOfOldestMessage")


def alarm_states(ctx: AwsContext) -> list[dict[str, Any]]:
    """Every alarm that notifies the stack's ops topic (infra/constructs/alarms.py), with its state.

    Found by its action (the alarm topic) rather than by name, so alarms defined elsewhere that
    notify ops (the session machine's failed-execution alarm) are listed too.
    """
    from infra.constants import ALARM_NAME_PREFIX, OUTPUT_ALARM_TOPIC_ARN

    topic = ctx.outputs.get(OUTPUT_ALARM_TOPIC_ARN)
    prefix = ALARM_NAME_PREFIX.format(stack_name=ctx.stack_name)
    query = {"ActionPrefix": topic} if topic else {"AlarmNamePrefix": prefix}
    out: list[dict[str, Any]] = []
    for page in ctx.client("cloudwatch").get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"], **query):
        for a in page.get("MetricAlarms", []):
            out.append({
                "name": a["AlarmName"],
                "state": a.get("StateValue"),
                "since": str(a.get("StateUpdatedTimestamp", "")) or None,
                "metric": f"{a.get('Namespace')}/{a.get('MetricName')}",
                "threshold": f"{a.get('ComparisonOperator')} {a.get('Threshold')}",
            })
    return sorted(out, key=lambda a: (a["state"] != "ALARM", a["name"]))


def queue_counts(ctx: AwsContext) -> dict[str, dict[str, int]]:
    """Messages waiting and in flight in the crop queue and its DLQ (all deployments: SQS counts
    per queue; counting one deployment's messages would mean receiving them, i.e. touching faces)."""
    from infra.constants import OUTPUT_CROP_DLQ_URL, OUTPUT_CROP_QUEUE_URL

    sqs = ctx.client("sqs")
    out: dict[str, dict[str, int]] = {}
    for name, key in (("crop_queue", OUTPUT_CROP_QUEUE_URL), ("dlq", OUTPUT_CROP_DLQ_URL)):
        attrs = sqs.get_queue_attributes(QueueUrl=ctx.outputs[key], AttributeNames=list(QUEUE_COUNTS))["Attributes"]
        out[name] = {"waiting": int(attrs.get(QUEUE_COUNTS[0], 0)), "in_flight": int(attrs.get(QUEUE_COUNTS[1], 0))}
    return out


def metric_sums(
    ctx: AwsContext, namespace: str, names: list[str], dimensions: dict[str, str], since: datetime, until: datetime
) -> dict[str, float]:
    """Sum of each metric over [since, until] (the series the alarms watch), 0 where there is no data."""
    cw = ctx.client("cloudwatch")
    dims = [{"Name": k, "Value": v} for k, v in dimensions.items()]
    seconds = max(60, int((until - since).total_seconds()))
    period = max(60, -(-seconds // 60) * 60)  # one bucket for the whole window, a multiple of 60 s
    out: dict[str, float] = {}
    for name in names:
        points = cw.get_metric_statistics(
            Namespace=namespace, MetricName=name, Dimensions=dims, StartTime=since, EndTime=until,
            Period=period, Statistics=["Sum"],
        ).get("Datapoints", [])
        out[name] = float(sum(p.get("Sum", 0.0) for p in points))
    return out


def queue_oldest_age_s(ctx: AwsContext, since: datetime, until: datetime) -> float | None:
    """The crop queue's ApproximateAgeOfOldestMessage, latest datapoint (None: no data, e.g. locally)."""
    from infra.constants import OUTPUT_CROP_QUEUE_URL

    name = ctx.outputs[OUTPUT_CROP_QUEUE_URL].rstrip("/").rsplit("/", 1)[-1]
    points = ctx.client("cloudwatch").get_metric_statistics(
        Namespace=QUEUE_AGE_METRIC[0], MetricName=QUEUE_AGE_METRIC[1],
        Dimensions=[{"Name": "QueueName", "Value": name}], StartTime=since, EndTime=until,
        Period=60, Statistics=["Maximum"],
    ).get("Datapoints", [])
    if not points:
        return None
    return float(max(points, key=lambda p: p["Timestamp"])["Maximum"])
