"""Reading what reached a queue, for tests that check delivery."""

from __future__ import annotations

from typing import Any

from lfr_core.contracts import CropMessage


def drain(client: Any, url: str) -> list[CropMessage]:
    """Every crop message currently visible on the queue, deleted as read."""
    out: list[CropMessage] = []
    while msgs := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            out.append(CropMessage.model_validate_json(m["Body"]))
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out
