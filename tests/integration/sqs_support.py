"""Reading what reached a queue, for tests that check delivery."""

from __future__ import annotations

from typing import Any

from lfr_core.contracts import CAMERA_STATUS_KIND, MESSAGE_KIND_ATTRIBUTE, CameraStatus, CropMessage


def drain(client: Any, url: str) -> list[CropMessage]:
    """Every crop message currently visible on the queue, deleted as read. The edge's camera
    statuses share the queue (marked by their `kind` attribute, as the match function tells them
    apart): each must parse as a `CameraStatus`, and none is returned as a crop."""
    out: list[CropMessage] = []
    while msgs := client.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=[MESSAGE_KIND_ATTRIBUTE]
    ).get("Messages", []):
        for m in msgs:
            kind = m.get("MessageAttributes", {}).get(MESSAGE_KIND_ATTRIBUTE, {}).get("StringValue")
            if kind == CAMERA_STATUS_KIND:
                CameraStatus.model_validate_json(m["Body"])
            else:
                out.append(CropMessage.model_validate_json(m["Body"]))
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out
