"""A record that crashes the match function is isolated by the function itself, under SQS/Lambda's
semantics: a crashed invocation deletes nothing, every record of it comes back with its receive
count grown, and the redrive policy moves a record to the DLQ after maxReceiveCount receives.

The queue below models exactly that (plus the function's own deletes); the function side is the
real `run_batch` with the real group planning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.dal.ports import RecordAcks
from functions.exceptions import TransientStorageError
from functions.logic.sqs_batch import DEADLINE_RESERVE_MS, plan_groups, receive_count, run_batch
from infra.constants import CROP_MAX_RECEIVE_COUNT, MATCH_BATCH_SIZE
from tests.fakes import InMemoryRecordAcks


class Crash(BaseException):
    """The runtime dying mid-invocation (SIGKILL, segfault, out of memory): nothing returns."""


def record(message_id: str, count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}-{count}",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": str(count)},
        "eventSourceARN": "arn:aws:sqs:eu-west-2:123456789012:crops",
    }


@dataclass
class SimQueue(RecordAcks):
    """An SQS queue with a redrive policy, delivering whole batches to one function."""

    max_receive: int = CROP_MAX_RECEIVE_COUNT
    counts: dict[str, int] = field(default_factory=dict)
    dlq: list[str] = field(default_factory=list)

    def send(self, ids: Sequence[str]) -> None:
        self.counts.update({i: 0 for i in ids})

    def receive(self, n: int) -> list[dict[str, Any]]:
        out = []
        for i in sorted(self.counts)[:n]:
            if self.counts[i] >= self.max_receive:  # the receive that would exceed it moves it
                del self.counts[i]
                self.dlq.append(i)
                continue
            self.counts[i] += 1
            out.append(record(i, self.counts[i]))
        return out

    def delete(self, records: Sequence[Mapping[str, Any]]) -> None:
        for r in records:
            self.counts.pop(str(r["messageId"]), None)

    def release(self, records: Sequence[Mapping[str, Any]]) -> None:
        pass  # visible again at once: the simulation delivers every visible record each round


def run_until_empty(q: SimQueue, poison: set[str], batch: int = MATCH_BATCH_SIZE) -> tuple[list[str], int]:
    """Deliver until the queue is empty; returns (records processed in order, invocations crashed)."""
    done: list[str] = []
    crashes = 0

    def complete_group(group: list[Any]) -> set[str]:
        if poison & {r["messageId"] for r in group}:
            raise Crash  # the group's one model call (or decode) kills the runtime
        done.extend(r["messageId"] for r in group)
        return set()

    for _ in range(100):
        records = q.receive(batch)
        if not records and not q.counts:
            return done, crashes
        try:
            failed = run_batch(records, complete_group, q, lambda: 4000)
        except Crash:
            crashes += 1
            continue
        q.delete([r for r in records if r["messageId"] not in failed])  # the ESM, on success
    raise AssertionError("queue never drained")


@pytest.mark.parametrize("position", range(MATCH_BATCH_SIZE))
def test_one_poison_record_goes_to_the_dlq_alone_wherever_it_sits(position: int) -> None:
    ids = [f"m{i:02d}" for i in range(MATCH_BATCH_SIZE)]
    q = SimQueue()
    q.send(ids)
    done, crashes = run_until_empty(q, {ids[position]})
    assert q.dlq == [ids[position]]
    assert sorted(done) == sorted(set(ids) - {ids[position]})
    assert len(done) == len(set(done))  # each finished once: deleted as soon as it was done
    assert crashes == CROP_MAX_RECEIVE_COUNT  # every delivery of the poison record crashed


def test_without_isolation_the_poison_record_takes_its_batch_to_the_dlq() -> None:
    """The defect this guards against: the same queue, the batch processed as one group."""
    ids = [f"m{i:02d}" for i in range(MATCH_BATCH_SIZE)]
    q = SimQueue()
    q.send(ids)
    for _ in range(CROP_MAX_RECEIVE_COUNT + 1):
        records = q.receive(MATCH_BATCH_SIZE)
        if records and "m03" not in {r["messageId"] for r in records}:
            q.delete(records)
    assert sorted(q.dlq) == ids


def test_first_deliveries_share_one_group_then_each_redelivered_record_alone() -> None:
    records = [record("a"), record("d", 3), record("b", 2), record("c"), record("e", 2), record("f", 3)]
    groups = [[r["messageId"] for r in g] for g in plan_groups(records)]
    # Fresh together; then fewest deliveries first; ascending ids on even counts, descending on odd.
    assert groups == [["a", "c"], ["b"], ["e"], ["f"], ["d"]]
    odd: list[dict[str, Any]] = [record("x", 0), {"attributes": {}}, {}]
    assert [receive_count(r) for r in odd] == [1, 1, 1]


def test_no_redelivery_is_one_call_with_nothing_deleted_by_the_function() -> None:
    calls: list[list[str]] = []
    acks = InMemoryRecordAcks()

    def complete_group(group: list[Any]) -> set[str]:
        calls.append([r["messageId"] for r in group])
        return {"b"}

    failed = run_batch([record("a"), record("b"), record("c")], complete_group, acks, lambda: 4000)
    assert failed == ["b"] and calls == [["a", "b", "c"]]
    assert acks.deleted == [] and acks.released == []  # the ESM deletes on return, as usual


def test_finished_records_are_deleted_group_by_group_and_failures_kept() -> None:
    acks = InMemoryRecordAcks()
    order: list[str] = []

    def complete_group(group: list[Any]) -> set[str]:
        order.append(",".join(r["messageId"] for r in group))
        # The ack of the previous group happened before this group started.
        return {r["messageId"] for r in group if r["messageId"] == "b"}

    records = [record("a"), record("b", 2), record("c", 2), record("z")]
    assert run_batch(records, complete_group, acks, lambda: 4000) == ["b"]
    assert order == ["a,z", "b", "c"]
    assert acks.deleted == ["a", "z", "c"]


def test_when_time_runs_short_the_rest_is_released_not_timed_out() -> None:
    acks = InMemoryRecordAcks()
    remaining = iter([DEADLINE_RESERVE_MS + 5000, DEADLINE_RESERVE_MS - 1])
    processed: list[str] = []

    def complete_group(group: list[Any]) -> set[str]:
        processed.extend(r["messageId"] for r in group)
        return set()

    records = [record("a", 2), record("b", 2), record("c", 2)]
    failed = run_batch(records, complete_group, acks, lambda: next(remaining))
    assert processed == ["a", "b"]
    assert failed == ["c"] and acks.released == ["c"] and acks.deleted == ["a", "b"]


def test_a_failed_acknowledgement_loses_nothing() -> None:
    acks = InMemoryRecordAcks()
    acks.fail("delete", TransientStorageError("sqs.delete: 500"))

    def complete_group(group: list[Any]) -> set[str]:
        return set()

    # Not reported as failed: the record is finished; if SQS redelivers it, it is a duplicate.
    assert run_batch([record("a", 2), record("b", 2)], complete_group, acks, lambda: 4000) == []
    assert acks.deleted == ["b"]
