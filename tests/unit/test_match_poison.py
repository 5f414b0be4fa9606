"""Poison records mixed with listed people's crops, through the match handler with the REAL model.

The finding reproduced: one hostile crop (a DDS header, a PNG, a cut JPEG, ...) made the whole SQS
batch fail, so listed people in it never alerted. Every poison record must be consumed alone with
a reason metric, every listed track must alert once, and nothing of the poison may be stored.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from lfr_core.contracts import Alert
from lfr_core.layout import alert_crop_key, watchlist_index_key
from tests.unit import poison
from tests.unit import test_match_logic as match_world
from tests.unit.functions_support import (
    LogCapture,
    capture_logs,
    crop_jpeg,
    crop_message,
    lfw_image,
    single_image_people,
    sqs_record,
)
from tests.unit.test_match_logic import DEP, WATCHLIST, World

# The match-logic tests' world (real model, in-memory stores, the real handler), reused as is.
index_npz = match_world.index_npz
world = match_world.world

LISTED_PROBES = [(name, k) for name in WATCHLIST for k in (2, 3)]  # each >= 0.59 vs its entry (real model)
ROUNDS = 2  # each poison kind this many times, each time made from another listed person's crop
SQS_BATCH = 10  # the event-source mapping's batch size


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    yield from capture_logs()


def _poison_body(jpeg_bytes: bytes, track_id: str) -> str:
    """A crop message as a hostile sender would write it: the contract's shape, the poison inline."""
    good = json.loads(crop_message(DEP, b"\xff\xd8", track_id=track_id).model_dump_json())
    good["image"]["jpeg_b64"] = base64.b64encode(jpeg_bytes).decode("ascii")
    return json.dumps(good)


def test_poison_of_every_kind_never_costs_a_listed_alert(world: World, captured_logs: LogCapture) -> None:
    listed = {f"listed-{n}-{k}": crop_jpeg(lfw_image(n, k)) for n, k in LISTED_PROBES}
    strangers = {f"stranger-{i}": crop_jpeg(lfw_image(p, 1)) for i, p in enumerate(single_image_people(2))}
    records: list[dict[str, Any]] = []
    expected_reasons: Counter[str] = Counter()
    poison_b64: list[str] = []
    sources = list(listed.values())
    for r in range(ROUNDS):
        for i, (kind, (make, reason)) in enumerate(sorted(poison.POISON.items())):
            bad = make(sources[(r * len(poison.POISON) + i) % len(sources)])
            body = _poison_body(bad, f"poison-{kind}-{r}")
            records.append(sqs_record(f"poison-{kind}-{r}", body))
            expected_reasons[reason] += 1
            if bad:
                poison_b64.append(base64.b64encode(bad).decode("ascii"))
    for track, jpeg in {**listed, **strangers}.items():
        records.append(sqs_record(track, crop_message(DEP, jpeg, track_id=track).model_dump_json()))
    random.Random(10).shuffle(records)
    batches = [records[i : i + SQS_BATCH] for i in range(0, len(records), SQS_BATCH)]
    assert all(any(r["messageId"].startswith("poison") for r in b) for b in batches)  # poison in every batch

    failures = [world.run({"Records": b}) for b in batches]

    # No batch item failure: nothing is retried, nothing reaches the DLQ.
    assert failures == [[] for _ in batches]
    # Every listed track alerted, exactly once: as the first or a later sighting of its person's one
    # encounter (functions/logic/encounters.py); no stranger, no poison.
    alerts = world.alerts.list_for_deployment(DEP)
    assert sorted(t.split("/", 1)[1] for a in alerts for t in a.tracks) == sorted(listed)  # camera/track
    for a in alerts:
        assert {t.split("/", 1)[1].split("-")[1] for t in a.tracks} == {a.watchlist_label}
    people = {n for n, _ in LISTED_PROBES}
    assert sorted(a.watchlist_label for a in alerts) == sorted(people)  # one encounter per person
    # One sounding push per person (revision 1); later sightings only update it.
    pushed = [Alert.model_validate_json(body) for body, _ in world.publisher.published]
    assert sorted(p.watchlist_label for p in pushed if p.revision == 1) == sorted(people)
    # Each poison record consumed with its reason.
    rejected = Counter({dict(d)["reason"]: int(v) for (n, d), v in world.metrics.counts.items()
                        if n == "CropsRejected"})
    assert rejected == expected_reasons
    assert sum(rejected.values()) == ROUNDS * len(poison.POISON)
    # Nothing of the poison is stored: the alerts bucket holds exactly the listed crops, as sent.
    assert world.alerts_bucket.objects == {
        alert_crop_key(DEP, a.alert_id): listed[a.track_id] for a in alerts
    }
    assert set(world.watchlist_bucket.objects) == {watchlist_index_key(DEP)}
    # Only the valid crops reached the model.
    assert sum(world.embedder.calls) == len(listed) + len(strangers)
    # Logs name records and reasons, never content.
    for b64 in poison_b64:
        assert b64[:40] not in captured_logs.text
    for kind in poison.POISON:
        assert any(f"poison-{kind}-0" in line and "crop rejected" in line for line in captured_logs.lines), kind
    print(f"\npoison: records={len(records)} poison={sum(rejected.values())} rejected_by_reason={dict(rejected)} "
          f"listed_tracks={len(listed)} alerted={len(alerts)} lost=0 batches={len(batches)}")


def test_an_unforeseen_decoder_exception_rejects_only_its_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop: should the decoder ever raise something untyped, that record alone is consumed."""
    from functions.logic import match as match_logic

    bomb = crop_jpeg(lfw_image("Ariel_Sharon", 2))
    real_decode = match_logic.decode_jpeg

    def decode(data: bytes, expect_size: tuple[int, int] | None = None) -> Any:
        if data == bomb:
            raise RecursionError("a decoder bug")
        return real_decode(data, expect_size=expect_size)

    monkeypatch.setattr(match_logic, "decode_jpeg", decode)
    ok = crop_message(DEP, crop_jpeg(lfw_image("Colin_Powell", 2)), track_id="ok")
    assert world.run({"Records": [sqs_record("bomb", crop_message(DEP, bomb, track_id="b").model_dump_json()),
                                  sqs_record("ok", ok.model_dump_json())]}) == []
    assert [a.track_id for a in world.alerts.list_for_deployment(DEP)] == ["ok"]
    assert world.metrics.counts[("CropsRejected", (("reason", "undecodable"),))] == 1
