"""The match handler itself (real model, real faces, in-memory adapters) on a redelivered batch:
each redelivered record is embedded and decided alone and deleted as soon as it is done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functions.handlers import match as match_handler
from tests.fakes import InMemoryRecordAcks
from tests.unit import test_match_logic as base
from tests.unit.functions_support import crop_jpeg, crop_message, lfw_image, single_image_people, sqs_event
from tests.unit.test_match_logic import DEP, MATED_PROBE, World

# The match-logic module's fixtures: the real model and a watchlist over in-memory adapters.
index_npz = base.index_npz
world = base.world


@pytest.fixture
def acks() -> Iterator[InMemoryRecordAcks]:
    a = InMemoryRecordAcks()
    match_handler.set_acks(a)
    yield a
    match_handler.set_acks(None)


def _redelivered(event: dict, counts: dict[str, int]) -> dict:
    for r in event["Records"]:
        r["attributes"]["ApproximateReceiveCount"] = str(counts.get(r["messageId"], 1))
    return event


def test_redelivered_records_are_decided_alone_and_deleted_as_done(world: World, acks: InMemoryRecordAcks) -> None:
    listed = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    strangers = [crop_message(DEP, crop_jpeg(lfw_image(p, 1))) for p in single_image_people(3)]
    event = sqs_event([("s1", strangers[0]), ("l", listed), ("s2", strangers[1]), ("s3", strangers[2])])
    failed = world.run(_redelivered(event, {"l": 2, "s2": 2, "s3": 3}))
    assert failed == []
    # The fresh record in one call, then each redelivered one alone.
    assert world.embedder.calls == [1, 1, 1, 1]
    assert acks.deleted == ["s1", "l", "s2", "s3"]  # fresh first; then count 2 by id; then count 3
    assert len(world.publisher.published) == 1 and len(world.alerts.items) == 1


def test_a_redelivery_of_a_finished_alert_publishes_nothing(world: World, acks: InMemoryRecordAcks) -> None:
    msg = crop_message(DEP, crop_jpeg(lfw_image(*MATED_PROBE)))
    assert world.run(sqs_event([("m", msg)])) == []
    # The crash came after the alert was published but before SQS deleted the record.
    assert world.run(_redelivered(sqs_event([("m", msg)]), {"m": 2})) == []
    assert len(world.publisher.published) == 1
    assert acks.deleted == ["m"]
