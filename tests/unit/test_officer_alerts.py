"""One alert per track on the REAL model and faces, and the push payloads officers' phones get."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from functions.dal import push
from functions.models.records import Decision
from lfr_core.contracts import Alert
from lfr_core.layout import alert_crop_key, watchlist_entries_key
from tests.unit import test_match_logic as match_tests
from tests.unit.functions_support import crop_jpeg, crop_message, lfw_image, sqs_event
from tests.unit.test_match_logic import DEP, World

# The match tests' fixtures (real model, real faces, in-memory adapters), reused here.
index_npz = match_tests.index_npz
world = match_tests.world

ENTRIES = {"Colin_Powell_0001": {"file": "Colin_Powell_0001.jpg", "reference": "WL-0042", "reason": "Warrant: test"}}


def _similarity(w: World, jpeg: bytes, track: str) -> float:
    w.run(sqs_event([(f"probe-{track}", crop_message(DEP, jpeg, track_id=track))]))
    (rec,) = w.alerts.list_for_deployment(DEP)
    w.alerts.items.clear()
    w.alerts.encounters.clear()  # measured apart: each probe its own encounter
    return rec.similarity


@pytest.fixture
def ranked(world: World) -> tuple[bytes, bytes]:
    """Two crops of the same watchlisted person as (lower, higher) similarity, measured on the real model."""
    a, b = crop_jpeg(lfw_image("Colin_Powell", 2)), crop_jpeg(lfw_image("Colin_Powell", 3))
    sa, sb = _similarity(world, a, "measure-a"), _similarity(world, b, "measure-b")
    assert sa != sb
    world.alerts.items.clear()
    world.alerts.encounters.clear()
    world.alerts_bucket.objects.clear()
    world.publisher.published.clear()
    return (a, b) if sa < sb else (b, a)


def test_one_track_one_alert_updated_only_by_a_better_crop(world: World, ranked: tuple[bytes, bytes]) -> None:
    world.watchlist_bucket.put_object(watchlist_entries_key(DEP), json.dumps(ENTRIES).encode())
    world.service._caches.entries.clear()
    low, high = ranked
    first = crop_message(DEP, low, track_id="walker")
    assert world.run(sqs_event([("s1", first)])) == []
    (rec,) = world.alerts.list_for_deployment(DEP)
    assert rec.revision == 1 and rec.watchlist_reference == "WL-0042" and rec.watchlist_reason == "Warrant: test"
    assert rec.watchlist_image_key and rec.watchlist_image_key.endswith("Colin_Powell_0001.jpg")

    # A better crop of the same walk: same alert id, revision 2, crop replaced, republished.
    better = crop_message(DEP, high, track_id="walker")
    assert world.run(sqs_event([("s2", better)])) == []
    (rec2,) = world.alerts.list_for_deployment(DEP)
    assert rec2.alert_id == rec.alert_id and rec2.revision == 2 and rec2.similarity > rec.similarity
    assert rec2.crop_message_id == better.message_id and rec2.published_at is not None
    assert world.alerts_bucket.objects == {alert_crop_key(DEP, rec.alert_id): high}
    assert [json.loads(b)["revision"] for b, _ in world.publisher.published] == [1, 2]

    # A worse crop later in the walk, and a replay of the current one: nothing published, nothing kept.
    worse = crop_message(DEP, low, track_id="walker")
    assert world.run(sqs_event([("s3", worse), ("s4", better)])) == []
    assert len(world.publisher.published) == 2
    assert world.alerts_bucket.objects == {alert_crop_key(DEP, rec.alert_id): high}
    assert world.alerts.list_for_deployment(DEP)[0].crop_message_id == better.message_id


def test_decided_alert_is_not_reopened_by_a_better_crop(world: World, ranked: tuple[bytes, bytes]) -> None:
    low, high = ranked
    world.run(sqs_event([("s1", crop_message(DEP, low, track_id="t"))]))
    (rec,) = world.alerts.list_for_deployment(DEP)
    assert world.alerts.set_decision(DEP, rec.alert_id, Decision.NOT_A_MATCH, "officer:x", rec.alerted_at)
    world.run(sqs_event([("s2", crop_message(DEP, high, track_id="t"))]))
    (after,) = world.alerts.list_for_deployment(DEP)
    assert after.revision == 1 and after.decision == Decision.NOT_A_MATCH
    assert len(world.publisher.published) == 1
    assert world.alerts_bucket.objects == {alert_crop_key(DEP, rec.alert_id): low}


def _alert(**kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        alert_id="0b5e8f3e-6a57-4c6e-9d0c-1f2a7c1e4b9d", deployment_id="dep-x", camera_id="cam-7",
        track_id="t1", crop_message_id="m" * 12, captured_at="2026-05-01T12:34:56+00:00",
        alerted_at="2026-05-01T12:34:57+00:00", watchlist_entry_id="e1", watchlist_label="Jane Doe",
        similarity=0.61234, threshold=0.55, watchlist_reference="WL-7", watchlist_reason="Missing person",
        revision=2, page_url="https://api.example/prod/alert/dep-x/a?exp=1&sig=s",
    )
    base.update(kw)
    return Alert.model_validate(base)


def test_push_message_has_each_platforms_payload_and_no_biometric() -> None:
    alert = _alert(revision=1)
    doc = json.loads(push.message(alert))
    assert set(doc) == {"default", "APNS", "APNS_SANDBOX", "GCM", "sms", "email"}
    assert all(isinstance(v, str) for v in doc.values())  # SNS requires each value to be a string
    assert Alert.model_validate_json(doc["default"]) == alert

    apns = json.loads(doc["APNS"])
    aps = apns["aps"]
    assert set(aps["alert"]) == {"title", "body"} and aps["sound"] == "default"
    assert aps["thread-id"] == alert.alert_id and aps["mutable-content"] == 1
    assert apns["alert_id"] == alert.alert_id and apns["url"] == alert.page_url
    assert doc["APNS_SANDBOX"] == doc["APNS"]
    assert len(doc["APNS"].encode()) <= 4096  # APNs payload limit

    msg = json.loads(doc["GCM"])["fcmV1Message"]["message"]
    assert set(msg["notification"]) == {"title", "body"}
    assert all(isinstance(v, str) for v in msg["data"].values())  # FCM data values are strings
    assert msg["data"]["deployment_id"] == "dep-x" and msg["data"]["watchlist_reference"] == "WL-7"
    assert msg["android"]["collapse_key"] == alert.alert_id == msg["android"]["notification"]["tag"]

    for text in (doc["sms"], doc["email"], aps["alert"]["body"]):
        assert "cam-7" in text and "WL-7" in text and "0.61" in text
    assert "Missing person" in doc["email"] and alert.page_url in doc["sms"]
    assert len(doc["sms"]) <= push.SMS_MAX_CHARS
    for forbidden in ("jpeg", "crop_key", "embedding", "alerts/dep-x"):
        assert forbidden not in push.message(alert)
    attrs = push.message_attributes(alert)
    assert attrs["deployment_id"]["StringValue"] == "dep-x"


def test_encounter_update_replaces_the_notification_silently() -> None:
    first, update = _alert(revision=1), _alert(revision=3, sightings=4, cameras=("cam-7", "cam-9"))
    a1, a3 = (json.loads(json.loads(push.message(a))["APNS"])["aps"] for a in (first, update))
    assert a1["sound"] == "default" and a1["interruption-level"] == "time-sensitive"
    assert "sound" not in a3 and a3["interruption-level"] == "passive"
    assert a1["thread-id"] == a3["thread-id"] == first.alert_id
    f1, f3 = (json.loads(json.loads(push.message(a))["GCM"])["fcmV1Message"]["message"] for a in (first, update))
    assert f1["android"]["notification"]["sound"] == "default" and "sound" not in f3["android"]["notification"]
    assert f1["android"]["collapse_key"] == f3["android"]["collapse_key"] == first.alert_id
    assert f3["android"]["notification"]["tag"] == first.alert_id
    assert push.message_attributes(update)["AWS.SNS.MOBILE.APNS.COLLAPSE_ID"]["StringValue"] == first.alert_id
    assert "Seen 4x (cameras cam-7, cam-9)" in a3["alert"]["body"] and f3["data"]["sightings"] == "4"


def test_push_default_reason_when_manifest_gives_none() -> None:
    alert = _alert(watchlist_reason=None, watchlist_reference=None, page_url=None)
    doc = json.loads(push.message(alert))
    assert push.DEFAULT_REASON in doc["email"] and "e1" in doc["sms"]
    assert "url" not in json.loads(doc["APNS"])


def test_payload_never_carries_image_bytes(world: World, ranked: tuple[bytes, bytes]) -> None:
    low, _ = ranked
    world.run(sqs_event([("s1", crop_message(DEP, low, track_id="t"))]))
    ((body, _),) = world.publisher.published
    b64 = base64.b64encode(low).decode()
    assert b64[:40] not in push.message(Alert.model_validate_json(body))
