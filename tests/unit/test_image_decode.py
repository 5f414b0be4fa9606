"""The strict decoder on real crops and every kind of hostile bytes (decoder level; match level in
test_match_poison.py): one typed rejection with a reason, never another exception."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from lfr_core.errors import InvalidImageError
from lfr_core.face import image as image_mod
from lfr_core.face.image import decode_image, decode_jpeg, verify_jpeg_complete
from tests.unit import poison
from tests.unit.functions_support import crop_jpeg, lfw_image, require_models


@pytest.fixture(scope="module")
def crop() -> bytes:
    require_models()
    return crop_jpeg(lfw_image("Colin_Powell", 2))


def test_dds_header_makes_pillow_raise_what_decode_turns_into_a_rejection(crop: bytes) -> None:
    # What the outside tester hit: Pillow itself raises NotImplementedError, not an OSError.
    with pytest.raises(NotImplementedError), Image.open(io.BytesIO(poison.dds_header())) as im:
        im.load()
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(poison.dds_header(), expect_size=(112, 112))
    assert ei.value.reason == "not_jpeg"


@pytest.mark.parametrize("kind", sorted(poison.POISON))
def test_every_poison_kind_is_one_typed_rejection(crop: bytes, kind: str) -> None:
    make, reason = poison.POISON[kind]
    bad = make(crop)
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(bad, expect_size=(112, 112))
    # "empty" is refused before decoding by the contract; the decoder's own tag is "empty".
    assert ei.value.reason == ("empty" if kind == "empty" else reason)


def test_other_formats_of_a_real_face_are_refused_though_pillow_reads_them(crop: bytes) -> None:
    for make in (poison.as_png, poison.as_gif, poison.as_tiff):
        data = make(crop)
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (112, 112)  # a perfectly good image of the face ...
        with pytest.raises(InvalidImageError) as ei:
            decode_jpeg(data, expect_size=(112, 112))
        assert ei.value.reason == "not_jpeg"  # ... that is not the wire format


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_a_cut_jpeg_with_a_fake_end_marker_is_truncated(crop: bytes, fraction: float) -> None:
    bad = poison.truncated_with_eoi(crop, fraction)
    if fraction >= 0.5:  # (a cut inside the header tables Pillow notices itself)
        with Image.open(io.BytesIO(bad)) as im:
            im.load()  # libjpeg decodes it without a word: the bottom of the face is grey
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(bad, expect_size=(112, 112))
    assert ei.value.reason == "truncated"


def test_truncation_is_refused_even_if_someone_turned_lenient_loading_on(
    crop: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for bad in (crop[: len(crop) // 2], poison.truncated_with_eoi(crop)):
        with pytest.raises(InvalidImageError) as ei:
            decode_jpeg(bad, expect_size=(112, 112))
        assert ei.value.reason == "truncated"
    png = poison.as_png(lfw_image("Colin_Powell", 1).read_bytes())
    for bad in (png[: len(png) // 2], png[: len(png) // 2] + png[-12:]):  # cut; cut with its IEND put back
        with pytest.raises(InvalidImageError) as ei:
            decode_image(bad)
        assert ei.value.reason in {"truncated", "corrupt"}
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was
    assert decode_jpeg(crop, expect_size=(112, 112)).shape == (112, 112, 3)
    assert decode_image(png).ndim == 3


def test_any_exception_inside_the_image_library_is_a_rejection(crop: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    for exc in (NotImplementedError("x"), RuntimeError("x"), MemoryError(), KeyError("x"), struct_error()):
        def boom(*a: object, _e: BaseException = exc, **k: object) -> None:
            raise _e

        monkeypatch.setattr(image_mod.Image, "open", boom)
        with pytest.raises(InvalidImageError) as ei:
            decode_jpeg(crop, expect_size=(112, 112))
        assert ei.value.reason == "corrupt"


def struct_error() -> Exception:
    import struct

    return struct.error("x")


def test_valid_jpeg_variants_decode_and_match_pillow(crop: bytes) -> None:
    ref = decode_jpeg(crop, expect_size=(112, 112))
    with Image.open(io.BytesIO(crop)) as im:
        assert np.array_equal(ref, np.asarray(im.convert("RGB"))[..., ::-1])
    with Image.open(io.BytesIO(crop)) as im:
        rgb = im.convert("RGB")
        for kw in ({"subsampling": "4:4:4"}, {"subsampling": "4:2:2"}, {"optimize": True},
                   {"restart_marker_blocks": 3}, {"restart_marker_rows": 1}):
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=90, **kw)
            assert decode_jpeg(buf.getvalue(), expect_size=(112, 112)).shape == (112, 112, 3), kw
            cut = poison.truncated_with_eoi(buf.getvalue(), 0.6)
            with pytest.raises(InvalidImageError, match="truncated"):
                decode_jpeg(cut, expect_size=(112, 112))
        buf = io.BytesIO()
        rgb.convert("L").save(buf, "JPEG")
        assert decode_jpeg(buf.getvalue()).shape == (112, 112, 3)  # grey is still a JPEG


def test_enrolment_accepts_jpeg_progressive_and_png_but_refuses_other_formats(crop: bytes) -> None:
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    assert decode_image(photo).ndim == 3
    prog = poison.as_progressive(photo)
    assert decode_image(prog).shape == decode_image(photo).shape
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(prog)
    assert ei.value.reason == "not_baseline"  # crops: sequential only
    assert decode_image(poison.as_png(photo)).shape == decode_image(photo).shape
    for bad in (poison.as_gif(photo), poison.as_tiff(photo), poison.dds_header(), b"BM" + photo):
        with pytest.raises(InvalidImageError) as ei:
            decode_image(bad)
        assert ei.value.reason == "unsupported_format"
    # A progressive photo cut between scans (then given an end marker) is refused too.
    with pytest.raises(InvalidImageError) as ei:
        decode_image(poison.truncated_with_eoi(prog, 0.5))
    assert ei.value.reason == "truncated"
    with pytest.raises(InvalidImageError) as ei:
        decode_image(poison.as_png(photo)[:-200])
    assert ei.value.reason in {"truncated", "corrupt"}


def test_huge_dimensions_are_refused_from_the_header_before_any_pixel(crop: bytes) -> None:
    for bad in (poison.huge_dimensions(crop), poison.png_bomb()):
        started = time.perf_counter()
        with pytest.raises(InvalidImageError) as ei:
            decode_image(bad)
        assert ei.value.reason == "too_large"
        assert time.perf_counter() - started < 1.0  # nothing was allocated or decoded
    with pytest.raises(InvalidImageError) as ei:
        decode_jpeg(poison.huge_dimensions(crop), expect_size=(112, 112))
    assert ei.value.reason == "wrong_size"


def test_structure_walk_accepts_every_lfw_dev_photo_it_is_given() -> None:
    require_models()
    from lfr_eval.datasets import read_lfw_manifest

    paths: list[Path] = [r.path for r in read_lfw_manifest()[:150]]
    for p in paths:
        w, h, progressive = verify_jpeg_complete(p.read_bytes())
        assert (w, h) == Image.open(p).size and not progressive
