"""The crop queue's depth for the van's console: SQS queue attributes only, never a message
(receiving one would read a face)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from functions.dal._aws import LazyClient, transient

_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


class QueueStats(ABC):
    @abstractmethod
    def depth(self) -> dict[str, Any]:
        """{"waiting": messages not yet received, "in_flight": received, not yet deleted}."""


class SqsQueueStats(QueueStats):
    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        self._sqs = LazyClient("sqs", client)

    def depth(self) -> dict[str, Any]:
        with transient("sqs.get_queue_attributes"):
            attrs = self._sqs.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=_ATTRIBUTES)
        a = attrs.get("Attributes", {})
        return {"waiting": int(a.get(_ATTRIBUTES[0], 0)), "in_flight": int(a.get(_ATTRIBUTES[1], 0))}
