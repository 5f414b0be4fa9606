"""SNS adapter for the alert topic."""

from __future__ import annotations

from typing import Any

from functions.dal import push
from functions.dal._aws import LazyClient, transient
from functions.dal.ports import AlertPublisher
from lfr_core.contracts import Alert


class SnsAlertPublisher(AlertPublisher):
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self._sns = LazyClient("sns", client)

    def publish(self, alert: Alert) -> str:
        with transient("sns.publish"):
            # One message, a payload per protocol (APNs, FCM, SMS, email; `default` = the Alert
            # JSON); subscribers (officers' devices) filter on the `deployment_id` attribute.
            resp = self._sns.client.publish(
                TopicArn=self.topic_arn,
                Message=push.message(alert),
                MessageStructure="json",
                MessageAttributes=push.message_attributes(alert),
            )
        return str(resp["MessageId"])
