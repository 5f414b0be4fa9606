"""Identity-labelled image folders for the evaluations, and the reviewed errata applied to them.

Layout (LFW's): <root>[/images]/<identity>/<files>; genders from <root>/manifest.csv if present.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_uploader.pipeline import IMAGE_SUFFIXES
from lfr_core.errors import DatasetNotFoundError
from lfr_eval.datasets import REPO_ROOT
from lfr_eval.errata import Errata, load_errata


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    gender: str = "unknown"
    extra: bool = False  # from --non-mated: never on the watchlist


def _natural(p: Path) -> tuple[Any, ...]:
    """1.pgm, 2.pgm, ..., 10.pgm (ORL) in numeric order; zero-padded LFW names sort as before."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)


def load_folder(root: Path, extra: bool = False) -> list[Sample]:
    """LFW layout: <root>[/images]/<identity>/<files>; genders from <root>/manifest.csv if present."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder {root} not found")
    images = root / "images" if (root / "images").is_dir() else root
    genders: dict[str, str] = {}
    if (root / "manifest.csv").is_file():
        with (root / "manifest.csv").open(newline="") as f:
            genders = {r["identity"]: r.get("gender") or "unknown" for r in csv.DictReader(f)}
    people = sorted(p for p in images.iterdir() if p.is_dir())
    samples: list[Sample] = []
    if not people and extra:
        # A flat folder of non-mated images: each file its own (unlisted) person.
        samples = [Sample(f"extra:{p.stem}", p, extra=True) for p in _images(images)]
    for person in people:
        ident = f"extra:{person.name}" if extra else person.name
        samples += [Sample(ident, p, genders.get(person.name, "unknown"), extra) for p in _images(person)]
    if not samples:
        raise DatasetNotFoundError(f"no images under {images}")
    return samples


LFW_DEV_ERRATA = REPO_ROOT / "docs" / "accuracy" / "lfw-dev-errata.toml"


def resolve_errata(errata: str | None, dataset: Path | None) -> Errata | None:
    """`--errata FILE` | `--errata none`; by default the project's reviewed file for lfw-dev (the
    default dataset) and none for any other folder."""
    if errata is not None:
        return None if errata == "none" else load_errata(Path(errata))
    return load_errata(LFW_DEV_ERRATA) if dataset is None else None




def errata_note(
    errata: Errata | None, labelled: Sequence[Sample] = (), fixed: Sequence[Sample] = ()
) -> dict[str, Any] | None:
    if errata is None:
        return None
    path = errata.path
    shown = str(path.relative_to(REPO_ROOT)) if path and path.is_relative_to(REPO_ROOT) else str(path)
    note: dict[str, Any] = {"file": shown, "entries": errata.counts()}
    if labelled:
        note["images"] = {"labelled": len(labelled), "after": len(fixed)}
        note["people"] = {"labelled": len({s.identity for s in labelled}), "after": len({s.identity for s in fixed})}
    return note



def singletons(samples: Sequence[Sample]) -> set[str]:
    count: dict[str, int] = defaultdict(int)
    for s in samples:
        count[s.identity] += 1
    return {p for p, n in count.items() if n < 2}



def lfw() -> Path:
    from lfr_eval.datasets import lfw_root

    return lfw_root()

