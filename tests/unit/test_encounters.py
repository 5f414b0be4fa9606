"""Encounters on the REAL model and faces (the match tests' world): one listed person walking past
is one alert and one push, whatever the tracks and cameras, until the window closes."""

from __future__ import annotations

import json
from typing import Any

from functions.logic.audit_log import AuditLog, read_events
from functions.logic.encounters import encounter_alert_id
from functions.logic.officer_api import DecisionRequest, OfficerApi
from functions.models.records import ENCOUNTER_WINDOW_S, Decision
from lfr_core.contracts import AuditAction, CropMessage
from tests.fakes import InMemoryAuditStore, InMemoryDeploymentRepository
from tests.unit import test_match_logic as match_tests
from tests.unit.functions_support import (
    console_over,
    crop_jpeg,
    crop_message,
    lfw_image,
    single_image_people,
    sqs_event,
)
from tests.unit.test_match_logic import DEP, World

index_npz = match_tests.index_npz
world = match_tests.world


def _walk(w: World, person: str, n: int, track: str, camera: str = "cam-1", sqs_id: str | None = None) -> CropMessage:
    msg = crop_message(DEP, crop_jpeg(lfw_image(person, n)), track_id=track).model_copy(
        update={"camera_id": camera, "captured_at": w.clock()}
    )
    assert w.run(sqs_event([(sqs_id or f"sqs-{camera}-{track}", msg)])) == []
    return msg


def _pushes(w: World) -> list[dict[str, Any]]:
    """Publishes that make a new notification (revision 1); later revisions replace it."""
    return [a for a in _published(w) if a["revision"] == 1]


def _published(w: World) -> list[dict[str, Any]]:
    return [json.loads(body) for body, _ in w.publisher.published]


def test_two_walks_past_within_the_window_are_one_encounter_and_one_push(world: World) -> None:
    _walk(world, "Colin_Powell", 2, "walk-1")
    world.clock.advance(90)  # back again 90 s later: a new track, the same person
    _walk(world, "Colin_Powell", 3, "walk-2")
    world.clock.advance(100)  # the window runs from the LAST sighting
    _walk(world, "Colin_Powell", 4, "walk-3")

    (rec,) = world.alerts.list_for_deployment(DEP)
    assert rec.sightings == 3 and set(rec.tracks) == {"cam-1/walk-1", "cam-1/walk-2", "cam-1/walk-3"}
    assert rec.encounter_window_s == ENCOUNTER_WINDOW_S and rec.cameras == ("cam-1",)
    assert len(_pushes(world)) == 1
    # Only a better crop republished, under the same id (devices collapse it).
    assert {a["alert_id"] for a in _published(world)} == {rec.alert_id}
    assert [a["revision"] for a in _published(world)] == list(range(1, rec.revision + 1))
    assert len(world.alerts_bucket.objects) == 1  # one crop: the encounter's best


def test_two_cameras_are_one_encounter_with_a_silent_update(world: World) -> None:
    first = _walk(world, "Colin_Powell", 2, "t-north", camera="cam-north")
    world.clock.advance(20)
    # Cameras keep their own track ids; the same crop quality, so only the new camera is news.
    again = crop_message(DEP, crop_jpeg(lfw_image("Colin_Powell", 2)), track_id="t-south").model_copy(
        update={"camera_id": "cam-south", "captured_at": world.clock()}
    )
    assert world.run(sqs_event([("sqs-south", again)])) == []

    (rec,) = world.alerts.list_for_deployment(DEP)
    assert rec.cameras == ("cam-north", "cam-south") and rec.sightings == 2
    assert rec.crop_message_id == first.message_id  # not better: the first crop stays
    published = _published(world)
    assert [a["revision"] for a in published] == [1, 2] and len(_pushes(world)) == 1
    assert published[1]["cameras"] == ["cam-north", "cam-south"] and published[1]["sightings"] == 2
    # A replay of either message changes nothing and publishes nothing.
    assert world.run(sqs_event([("replay-1", first), ("replay-2", again)])) == []
    assert len(world.publisher.published) == 2
    (after,) = world.alerts.list_for_deployment(DEP)
    assert after.sightings == 2


def test_after_the_window_a_second_push_and_another_person_their_own(world: World) -> None:
    _walk(world, "Colin_Powell", 2, "walk-1")
    _walk(world, "Ariel_Sharon", 2, "walk-x")  # another person at the same time: their own push
    world.clock.advance(ENCOUNTER_WINDOW_S + 1)
    _walk(world, "Colin_Powell", 3, "walk-2")

    alerts = world.alerts.list_for_deployment(DEP)
    assert len(alerts) == 3
    powell = sorted((a for a in alerts if a.watchlist_label == "Colin_Powell"), key=lambda a: a.alerted_at)
    assert [a.sightings for a in powell] == [1, 1] and powell[0].alert_id != powell[1].alert_id
    assert powell[1].alert_id == encounter_alert_id(DEP, powell[1].watchlist_entry_id, world.clock())
    assert len(_pushes(world)) == 3


def test_window_is_the_deployments_parameter(world: World) -> None:
    rec = world.deployments.items[DEP]
    rec["encounter_window_s"] = 30
    world.service._caches.deployments.clear()
    _walk(world, "Colin_Powell", 2, "walk-1")
    world.clock.advance(45)  # inside the default 120 s, outside this deployment's 30 s
    _walk(world, "Colin_Powell", 3, "walk-2")
    assert len(world.alerts.list_for_deployment(DEP)) == 2 and len(_pushes(world)) == 2


def test_no_encounter_state_for_a_face_that_did_not_match(world: World) -> None:
    (person,) = single_image_people(1)
    stranger = crop_message(DEP, crop_jpeg(lfw_image(person, 1)), track_id="stranger")
    assert world.run(sqs_event([("s", stranger)])) == []
    assert world.alerts.items == {} and world.alerts.encounters == {}
    # The camera's activity is counted (a number and a time), nothing of the face.
    (cam,) = world.alerts.camera_activity(DEP)
    assert cam.camera_id == "cam-1" and cam.messages == 1 and set(cam.model_dump()) == {
        "camera_id", "last_seen", "messages", "per_minute", "queue_lag_ms", "status"}
    assert cam.status is None  # only the edge's own status message sets it (counts and times)


def test_a_decision_applies_to_the_whole_encounter(world: World) -> None:
    _walk(world, "Colin_Powell", 2, "walk-1", camera="cam-north")
    world.clock.advance(10)
    _walk(world, "Colin_Powell", 2, "walk-2", camera="cam-south")
    (rec,) = world.alerts.list_for_deployment(DEP)
    audit_store = InMemoryAuditStore()
    api = OfficerApi(
        deployments=InMemoryDeploymentRepository(), alerts=world.alerts, officers=None,  # type: ignore[arg-type]
        links=None, key=lambda: b"k", alerts_bucket="a", watchlist_bucket="w",  # type: ignore[arg-type]
        audit=AuditLog(audit_store), clock=world.clock,
        console=console_over(InMemoryDeploymentRepository(), world.alerts, None, world.clock),
    )
    from functions.models.officers import Claims

    claims = Claims(officer_id="pc-1", deployment_id=DEP, expires_at=world.clock(), via="token")
    resp = api.decide(claims, DEP, rec.alert_id, DecisionRequest.model_validate({"decision": "confirmed_engaged"}))
    assert resp.status_code == 200
    published = len(world.publisher.published)
    # Seen again within the window, by a third camera with a better crop: still the decided encounter.
    world.clock.advance(30)
    _walk(world, "Colin_Powell", 3, "walk-3", camera="cam-east")
    (after,) = world.alerts.list_for_deployment(DEP)
    assert after.alert_id == rec.alert_id and after.decision == Decision.CONFIRMED and after.sightings == 3
    assert len(world.publisher.published) == published  # no push, no update after a decision
    (event,) = [e.parsed_event() for e in read_events(audit_store)
                if e.parsed_event().action == AuditAction.ADJUDICATION]
    assert event.details["alert_id"] == rec.alert_id
