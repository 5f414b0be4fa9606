"""How the match function runs one SQS batch so that a record which crashes it is isolated.

What AWS does (and the local ESM, lfr_cli/local/esm.py, does the same): when an invocation
crashes or times out, Lambda deletes nothing; every record of the batch comes back after the
queue's visibility timeout with its `ApproximateReceiveCount` grown by one, and the redrive
policy moves a record to the DLQ after `maxReceiveCount` receives. SQS pollers never split a
failed batch. So a record that kills the runtime (a decoder bug, an out-of-memory image) would
take every neighbour it is batched with to the DLQ: listed people lost, and crops kept.

The function therefore isolates by itself, from the receive count alone:
- A batch whose records are all on their first delivery is one group: one model call for all.
- A record delivered before ("suspect": its earlier invocation failed, crashed or timed out)
  is processed ALONE, after the first-delivery records, fewest deliveries first. Each group's
  finished records are deleted from the queue at once (`RecordAcks.delete`), so a crash later
  in the invocation cannot send them back.
- Suspects with the same receive count are taken in message-id order, ascending on even counts
  and descending on odd ones: a crash on record P at one delivery leaves only P and the records
  after it; at the next delivery those come before P. A batch of neighbours is cleared in two
  deliveries after the crash; P alone goes on to the DLQ (`CROP_MAX_RECEIVE_COUNT`).
- If the invocation's remaining time will not cover another group, the rest are released
  (visible again at once) and reported as failures instead of timing out, which would cost a
  cold start and the whole visibility timeout.
Nothing here is local-only: it is the function's own behaviour under Lambda's semantics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from functions.dal.ports import RecordAcks
from functions.exceptions import TransientStorageError
from functions.observability import logger

Record = Mapping[str, Any]
# Never start a group with less than this left: the group's alert writes and the response must fit.
DEADLINE_RESERVE_MS = 1000


def receive_count(record: Record) -> int:
    raw = (record.get("attributes") or {}).get("ApproximateReceiveCount")
    try:
        return max(1, int(str(raw)))
    except (TypeError, ValueError):
        return 1


def _id(record: Record) -> str:
    return str(record.get("messageId", ""))


def plan_groups(records: Sequence[Record]) -> list[list[Record]]:
    """First deliveries as one group, then each suspect alone (see the module docstring)."""
    fresh = [r for r in records if receive_count(r) == 1]
    groups: list[list[Record]] = [fresh] if fresh else []
    by_count: dict[int, list[Record]] = {}
    for r in records:
        if receive_count(r) > 1:
            by_count.setdefault(receive_count(r), []).append(r)
    for count in sorted(by_count):
        same = sorted(by_count[count], key=_id, reverse=count % 2 == 1)
        groups.extend([r] for r in same)
    return groups


def run_batch(
    records: Sequence[Record],
    complete_group: Callable[[list[Record]], set[str]],
    acks: RecordAcks | None,
    remaining_ms: Callable[[], int],
    monotonic: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Process the batch group by group; returns the message ids to report as batch item failures.

    `complete_group(records)` processes one group and returns the ids of its failed records.
    """
    groups = plan_groups(records)
    if len(groups) <= 1 and all(receive_count(r) == 1 for r in records):
        return sorted(complete_group(list(records))) if records else []  # no suspect: one group
    suspects = sum(1 for r in records if receive_count(r) > 1)
    logger.info("isolating redelivered records", extra={"records": len(records), "suspects": suspects})
    failed: list[str] = []
    slowest_ms = 0.0
    for i, group in enumerate(groups):
        if i > 0 and remaining_ms() < DEADLINE_RESERVE_MS + slowest_ms:
            rest = [r for g in groups[i:] for r in g]
            logger.warning("time short: records released untried", extra={"records": len(rest)})
            _ack(acks.release if acks else None, rest)
            failed.extend(_id(r) for r in rest)
            break
        started = monotonic()
        bad = complete_group(group)
        slowest_ms = max(slowest_ms, (monotonic() - started) * 1000.0)
        failed.extend(_id(r) for r in group if _id(r) in bad)
        # Done is done: a crash on a later group must not send these back (and toward the DLQ).
        _ack(acks.delete if acks else None, [r for r in group if _id(r) not in bad])
    return failed


def _ack(operation: Callable[[Sequence[Record]], None] | None, records: list[Record]) -> None:
    if operation is None or not records:
        return
    try:
        operation(records)
    except TransientStorageError as exc:
        # Not fatal: a finished record redelivered is a duplicate the alert logic absorbs; an
        # unreleased one returns after the visibility timeout. Ids only in the log.
        logger.warning(
            "sqs acknowledgement failed",
            extra={"error": str(exc), "sqs_message_ids": [_id(r) for r in records]},
        )
