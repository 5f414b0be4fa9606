"""Watchlist build on the REAL detector/embedder and REAL faces, over in-memory adapters."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from functions.exceptions import DeploymentNotActiveError, NoUsableFacesError
from functions.handlers import build_watchlist as build_handler
from functions.logic import watchlist
from functions.logic.build_watchlist import BuildService, label_for
from lfr_core.contracts import DeploymentState as S
from lfr_core.layout import watchlist_images_prefix, watchlist_index_key
from tests.fakes import InMemoryDeploymentRepository, InMemoryObjectStore
from tests.unit.functions_support import deployment, lambda_context, lfw_image, real_embedder, require_models

DEP = "dep-build"
PEOPLE = ["Colin_Powell", "Ariel_Sharon", "Bill_Clinton"]


@pytest.fixture
def setup() -> tuple[BuildService, InMemoryDeploymentRepository, InMemoryObjectStore]:
    require_models()
    pytest.importorskip("lfr_core.matching")
    from lfr_core.face.detect import FaceDetector

    repo = InMemoryDeploymentRepository()
    repo.create(deployment(DEP, S.PENDING))
    store = InMemoryObjectStore("watchlist")
    return BuildService(repo, store, detector=FaceDetector, embedder=real_embedder), repo, store


def _jpeg(img: np.ndarray) -> bytes:
    return bytes(cv2.imencode(".jpg", img)[1].tobytes())


def test_label_for() -> None:
    assert label_for("Colin_Powell_0001.jpg") == ("Colin_Powell_0001", "Colin_Powell")
    assert label_for("suspect-a.png") == ("suspect-a", "suspect-a")
    assert label_for("sub/Jane_Doe_12.jpeg") == ("Jane_Doe_12", "Jane_Doe")


def test_build_indexes_faces_and_records_rejects(setup) -> None:
    svc, repo, store = setup
    prefix = watchlist_images_prefix(DEP)
    for p in PEOPLE:
        store.objects[prefix + f"{p}_0001.jpg"] = lfw_image(p, 1).read_bytes()
    store.objects[prefix + "broken.jpg"] = b"this is not an image"
    store.objects[prefix + "blank.jpg"] = _jpeg(np.full((200, 200, 3), 128, np.uint8))
    src = cv2.imread(str(lfw_image("Bill_Clinton", 2)))
    assert src is not None
    tiny = cv2.resize(src, (24, 24), interpolation=cv2.INTER_AREA)
    store.objects[prefix + "tiny.jpg"] = _jpeg(tiny)

    result = build_handler_result(svc, DEP)
    assert result == {"watchlist_size": 3, "rejected": 3, "images": 3}

    rec = repo.get(DEP)
    assert rec is not None and rec.state == S.BUILDING  # stays until Activate
    assert rec.watchlist_size == 3
    reasons = {r.file: r.reason for r in rec.enrol_rejects}
    assert reasons["broken.jpg"] == "undecodable"
    assert reasons["blank.jpg"] == "no_face"
    assert reasons["tiny.jpg"] in {"face_too_small", "no_face"}
    data, etag = store.get_with_etag(watchlist_index_key(DEP))
    assert rec.index_etag == etag

    # The index finds each person from ANOTHER photo of them.
    from tests.unit.functions_support import aligned_crop

    index = watchlist.load_index(data)
    probes = real_embedder().embed(np.stack([aligned_crop(lfw_image(p, 2)) for p in PEOPLE]))
    best = index.top1(probes)
    assert [b.label for b in best if b is not None] == PEOPLE
    assert [b.entry_id for b in best if b is not None] == [f"{p}_0001" for p in PEOPLE]


def build_handler_result(svc: BuildService, deployment_id: str) -> dict[str, int]:
    build_handler.set_service(svc)
    try:
        return build_handler.handler({"deployment_id": deployment_id}, lambda_context())
    finally:
        build_handler.set_service(None)


def test_manifest_overrides_labels(setup) -> None:
    svc, _, store = setup
    prefix = watchlist_images_prefix(DEP)
    store.objects[prefix + "a.jpg"] = lfw_image("Colin_Powell", 1).read_bytes()
    store.objects[prefix + "manifest.json"] = json.dumps(
        {"a.jpg": {"entry_id": "wl-001", "label": "Subject A"}}
    ).encode()
    assert svc.build(DEP).watchlist_size == 1
    index = watchlist.load_index(store.objects[watchlist_index_key(DEP)])
    from tests.unit.functions_support import aligned_crop

    (best,) = index.top1(real_embedder().embed([aligned_crop(lfw_image("Colin_Powell", 1))]))
    assert best is not None and (best.entry_id, best.label) == ("wl-001", "Subject A")


def test_no_usable_faces_raises(setup) -> None:
    svc, repo, store = setup
    prefix = watchlist_images_prefix(DEP)
    store.objects[prefix + "broken.jpg"] = b"nope"
    store.objects[prefix + "blank.jpg"] = _jpeg(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(NoUsableFacesError):
        svc.build(DEP)
    assert type(NoUsableFacesError()).__name__ == "NoUsableFacesError"  # the ASL matches this name
    rec = repo.get(DEP)
    assert rec is not None and rec.watchlist_size == 0 and len(rec.enrol_rejects) == 2
    assert watchlist_index_key(DEP) not in store.objects


def test_build_refused_once_active(setup) -> None:
    svc, repo, _ = setup
    repo.update(DEP, {"state": "ACTIVE"})
    with pytest.raises(DeploymentNotActiveError):
        svc.build(DEP)


def test_several_images_of_one_person_enrol_as_one_mean_template(setup) -> None:
    """Multi-image enrolment: a person's photos become one entry, the re-normalised mean of their
    embeddings (README "Accuracy"), under the first photo's entry id; the list's size is people."""
    from tests.unit.functions_support import aligned_crop

    svc, repo, store = setup
    prefix = watchlist_images_prefix(DEP)
    for n in (1, 2, 3):
        store.objects[prefix + f"Colin_Powell_000{n}.jpg"] = lfw_image("Colin_Powell", n).read_bytes()
    store.objects[prefix + "Ariel_Sharon_0001.jpg"] = lfw_image("Ariel_Sharon", 1).read_bytes()
    assert build_handler_result(svc, DEP) == {"watchlist_size": 2, "rejected": 0, "images": 4}
    rec = repo.get(DEP)
    assert rec is not None and rec.watchlist_size == 2

    index = watchlist.load_index(store.get_with_etag(watchlist_index_key(DEP))[0])
    assert sorted(zip(index.labels, index.entry_ids, strict=True)) == [("Ariel_Sharon", "Ariel_Sharon_0001"),
                                                                      ("Colin_Powell", "Colin_Powell_0001")]
    photos = real_embedder().embed(np.stack([aligned_crop(lfw_image("Colin_Powell", n)) for n in (1, 2, 3)]))
    mean = photos.sum(axis=0) / np.linalg.norm(photos.sum(axis=0))
    template = index.embeddings[index.entry_ids.index("Colin_Powell_0001")]
    assert np.allclose(template, mean, atol=1e-3)
    probe = real_embedder().embed(aligned_crop(lfw_image("Colin_Powell", 4))[None])
    (best,) = index.top1(probe)
    assert best.label == "Colin_Powell" and best.entry_id == "Colin_Powell_0001"


def test_build_lists_one_person_enrolled_under_two_names_for_the_admin(setup) -> None:
    svc, repo, store = setup
    prefix = watchlist_images_prefix(DEP)
    for p in PEOPLE:
        store.objects[prefix + f"{p}_0001.jpg"] = lfw_image(p, 1).read_bytes()
    # Colin Powell's second photo under another name: the duplicate LFW itself has (two names, one face).
    store.objects[prefix + "Someone_Else_0001.jpg"] = lfw_image("Colin_Powell", 2).read_bytes()

    build_handler_result(svc, DEP)
    rec = repo.get(DEP)
    assert rec is not None and rec.watchlist_size == 4
    assert rec.confusable_count == 1
    (pair,) = rec.confusable
    assert {pair.label, pair.other_label} == {"Colin_Powell", "Someone_Else"}
    assert pair.similarity >= rec.threshold
    # Different people at the same threshold are not listed.
    assert all({"Ariel_Sharon", "Bill_Clinton"}.isdisjoint({c.label, c.other_label}) for c in rec.confusable)


def test_a_large_list_is_built_with_its_int8_scan_and_loads_with_it(
    monkeypatch: pytest.MonkeyPatch, built_models: Path
) -> None:
    """The scan is made by the build (never in a match cold start) and travels in the artifact."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"e{i}" for i in range(40)]
    assert watchlist.load_index(watchlist.index_bytes(ids, ids, emb)).scan is None
    monkeypatch.setattr(watchlist, "SCAN_MIN_ENTRIES", 40)
    loaded = watchlist.load_index(watchlist.index_bytes(ids, ids, emb))
    assert loaded.scan is not None and len(loaded.scan) == 40
    assert loaded.fused_top1_batch([emb[7:8]], "max")[0].entry_id == "e7"
