"""The evaluation datasets: the shared ones beside the repo (never copied into it; `LFR_DATASETS`
overrides), and any identity-labelled folder (LFW's layout: <root>[/images]/<identity>/<files>,
genders from <root>/manifest.csv if present) with reviewed errata applied to it."""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_uploader.pipeline import IMAGE_SUFFIXES
from lfr_core.errors import DatasetNotFoundError
from lfr_eval.errata import Errata, load_errata

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LfwImage:
    identity: str
    file: str
    path: Path
    n_images: int
    gender: str


def datasets_root() -> Path:
    value = os.environ.get("LFR_DATASETS")
    root = Path(value) if value else REPO_ROOT.parent / "shared" / "datasets"
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"datasets directory {root} not found (set LFR_DATASETS to the directory holding lfw-dev/)"
        )
    return root


def lfw_root() -> Path:
    root = datasets_root() / "lfw-dev"
    if not (root / "manifest.csv").is_file():
        raise DatasetNotFoundError(f"{root}/manifest.csv not found: is lfw-dev present under {root.parent}?")
    return root


def read_lfw_manifest() -> list[LfwImage]:
    """Every lfw-dev image, in manifest order (identity, then file)."""
    root = lfw_root()
    with (root / "manifest.csv").open(newline="") as f:
        return [
            LfwImage(
                identity=row["identity"],
                file=row["file"],
                path=root / "images" / row["identity"] / row["file"],
                n_images=int(row["n_images_of_identity"]),
                gender=row["gender"],
            )
            for row in csv.DictReader(f)
        ]


def read_lfw_pairs() -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """pairsDevTrain.txt as (same-person pairs, different-person pairs) of image paths."""
    root = lfw_root()

    def img(identity: str, n: str) -> Path:
        return root / "images" / identity / f"{identity}_{int(n):04d}.jpg"

    lines = (root / "pairsDevTrain.txt").read_text().split("\n")
    n_same = int(lines[0].strip())
    rows = [ln.split("\t") for ln in lines[1:] if ln.strip()]
    same = [(img(r[0], r[1]), img(r[0], r[2])) for r in rows[:n_same]]
    diff = [(img(r[0], r[1]), img(r[2], r[3])) for r in rows[n_same:]]
    return same, diff


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
