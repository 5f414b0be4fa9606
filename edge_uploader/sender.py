"""Delivery of crop messages to the deployment's SQS queue, in batches, with retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lfr_core.contracts import CAMERA_STATUS_KIND, MESSAGE_KIND_ATTRIBUTE, CameraStatus, CropMessage

log = logging.getLogger(__name__)

SQS_BATCH = 10  # SQS SendMessageBatch maximum
# What travels on the crop queue: a track's crops, or the camera's status (told apart by the
# `kind` message attribute, lfr_core/contracts.py).
QueueMessage = CropMessage | CameraStatus


def message_attributes(m: QueueMessage) -> dict[str, dict[str, str]]:
    # deployment_id lets the consumer count and refuse without parsing the body.
    attrs = {"deployment_id": {"DataType": "String", "StringValue": m.deployment_id}}
    if isinstance(m, CameraStatus):
        attrs[MESSAGE_KIND_ATTRIBUTE] = {"DataType": "String", "StringValue": CAMERA_STATUS_KIND}
    return attrs


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # message ids + reasons, never the crop
    # Ids given up on after every attempt (network, throttling): worth keeping for later, unlike sender faults.
    gave_up: list[str] = field(default_factory=list)


class SqsSender:
    """Sends `CropMessage`s (and `CameraStatus`es) with SendMessageBatch; retries failed entries with
    exponential back-off."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        *,
        max_attempts: int = 5,
        base_delay_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._sleep = sleep

    def send(self, messages: Iterable[QueueMessage]) -> SendReport:
        report = SendReport()
        batch: list[QueueMessage] = []
        for msg in messages:
            batch.append(msg)
            if len(batch) == SQS_BATCH:
                self._send_batch(batch, report)
                batch = []
        if batch:
            self._send_batch(batch, report)
        return report

    def _send_batch(self, batch: Sequence[QueueMessage], report: SendReport) -> None:
        pending = {m.message_id: m for m in batch}
        last_error = ""
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(self._base_delay_s * 2 ** (attempt - 1))
            entries = [
                {
                    "Id": m.message_id,
                    "MessageBody": m.model_dump_json(),
                    "MessageAttributes": message_attributes(m),
                }
                for m in pending.values()
            ]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as exc:  # network or service error: the whole batch is retried
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning("SQS batch send failed (attempt %d): %s", attempt + 1, last_error)
                continue
            for ok in resp.get("Successful", []):
                pending.pop(ok["Id"], None)
                report.sent += 1
            failed = resp.get("Failed", [])
            # Sender faults (malformed entry) will not succeed on retry.
            for f in [f for f in failed if f.get("SenderFault")]:
                pending.pop(f["Id"], None)
                report.failed += 1
                report.failures.append(f"{f['Id']}: {f.get('Code')} {f.get('Message', '')}")
            if not pending:
                return
            last_error = "; ".join(f"{f['Id']}: {f.get('Code')}" for f in failed)
        for mid in pending:
            report.failed += 1
            report.gave_up.append(mid)
            report.failures.append(f"{mid}: gave up after {self._max_attempts} attempts ({last_error})")
