"""SNS adapter for the alert topic."""

from __future__ import annotations

from typing import Any

from functions.dal._aws import LazyClient, transient
from functions.dal.ports import AlertPublisher
from lfr_core.contracts import Alert


class SnsAlertPublisher(AlertPublisher):
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self._sns = LazyClient("sns", client)

    def publish(self, alert: Alert) -> str:
        with transient("sns.publish"):
            resp = self._sns.client.publish(
                TopicArn=self.topic_arn,
                Message=alert.model_dump_json(),
                # Subscribers (officers' devices) filter on this attribute.
                MessageAttributes={
                    "deployment_id": {"DataType": "String", "StringValue": alert.deployment_id}
                },
            )
        return str(resp["MessageId"])
