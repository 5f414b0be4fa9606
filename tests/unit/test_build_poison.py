"""Watchlist enrolment meets the same hostile bytes as crops: each bad file is one reject, the build goes on.

Real detector and embedder, real LFW photos (the enrolment path uses the same strict decoder as crops,
widened to progressive JPEG and PNG, which admins' photo folders hold).
"""

from __future__ import annotations

from typing import Any

from functions.logic import watchlist
from lfr_core.layout import watchlist_images_prefix, watchlist_index_key
from tests.unit import poison
from tests.unit import test_build_logic as build_world
from tests.unit.functions_support import lfw_image

setup = build_world.setup  # the build tests' fixture: real models, in-memory stores
DEP = build_world.DEP


def test_poison_enrolment_files_are_rejected_one_by_one(setup: Any) -> None:
    svc, repo, store = setup
    prefix = watchlist_images_prefix(DEP)
    photo = {p: lfw_image(p, 1).read_bytes() for p in ("Colin_Powell", "Ariel_Sharon", "Bill_Clinton")}
    # Good, in the formats an admin's folder holds: baseline JPEG, progressive JPEG, PNG.
    store.objects[prefix + "Colin_Powell_0001.jpg"] = photo["Colin_Powell"]
    store.objects[prefix + "Ariel_Sharon_0001.jpg"] = poison.as_progressive(photo["Ariel_Sharon"])
    store.objects[prefix + "Bill_Clinton_0001.png"] = poison.as_png(photo["Bill_Clinton"])
    bad = {
        "dds.jpg": poison.dds_header(),
        "gif.jpg": poison.as_gif(photo["Colin_Powell"]),
        "tiff.jpg": poison.as_tiff(photo["Colin_Powell"]),
        "cut.jpg": poison.truncated_with_eoi(photo["Colin_Powell"]),
        "cut_progressive.jpg": poison.truncated_with_eoi(poison.as_progressive(photo["Colin_Powell"]), 0.4),
        "random.jpg": poison.random_bytes(b""),
        "empty.jpg": b"",
        "huge.jpg": poison.huge_dimensions(photo["Colin_Powell"]),
        "bomb.png": poison.png_bomb(),
        "trailing.jpg": poison.trailing_payload(photo["Colin_Powell"]),
    }
    for name, data in bad.items():
        store.objects[prefix + name] = data

    result = build_world.build_handler_result(svc, DEP)

    assert result == {"watchlist_size": 3, "rejected": len(bad), "images": 3}
    rec = repo.get(DEP)
    assert rec is not None
    assert {r.file: r.reason for r in rec.enrol_rejects} == dict.fromkeys(bad, "undecodable")
    index = watchlist.load_index(store.get_with_etag(watchlist_index_key(DEP))[0])
    assert sorted(index.labels) == ["Ariel_Sharon", "Bill_Clinton", "Colin_Powell"]
