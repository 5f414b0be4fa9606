"""The shared evaluation datasets beside the repo (never copied into it). `LFR_DATASETS` overrides."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from lfr_core.errors import DatasetNotFoundError

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
