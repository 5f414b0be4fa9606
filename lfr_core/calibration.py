"""Thresholds from a target FPIR and the watchlist size, via the calibration table shipped with the model.

FPIR grows with the watchlist: every listed person is one more chance for a stranger's face to
look like someone. So a deployment states the false-alert rate it accepts (e.g. 2e-4, about the
1 in 6,000 NPL measured for the Met) and its list size, and the threshold comes from
`calibration.json`, which `lfr calibrate` rebuilds from an identity-labelled folder (the building
is `lfr_eval.calibrate`: evaluation code, not shipped to Lambda; this module only reads the table):

- for each watchlist size, R random lists (seeded) of people, each enrolled from one image through
  the production build path; non-mated searches = every acquired image (edge path, wire JPEG) of
  the people not on that list; the top-1 scores of all R lists are pooled;
- threshold(target, size) = the lowest threshold whose pooled empirical FPIR is <= target;
- thresholds are made non-decreasing in size (a bigger list never gets a lower threshold), so
  sampling noise can only err towards fewer false alerts;
- the same for tracks ("fused"), for each track size n = 2..MAX_TRACK_CROPS: the fused score (the
  table's `fusion_mode`) of a track of n crops of one non-listed person, each crop a different
  image (see README "Accuracy" for why the production mode is the one that stays safe when a
  video track's crops are nearly the same picture).

Between tabulated sizes and targets the threshold is interpolated linearly in log(size) and
log(target); outside the table it refuses (CalibrationError) rather than extrapolate a guess.
The table holds thresholds and counts only: no embeddings, scores of individuals or images.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lfr_core.contracts import MAX_TRACK_CROPS
from lfr_core.errors import CalibrationError
from lfr_core.matching import (
    FUSION_MODES,
    PRODUCTION_FLIP_TTA,
    PRODUCTION_MIN_QUALITY,
    PRODUCTION_TEMPLATE,
    FusionMode,
)

TABLE_PATH = Path(__file__).with_name("calibration.json")
FORMAT_VERSION = 2  # 2: fused thresholds per track size (2..MAX_TRACK_CROPS) and one fusion mode


def fpir_key(fpir: float) -> str:
    """The JSON key for a target FPIR: 0.0002 -> "0.0002" (never "2e-04")."""
    return np.format_float_positional(fpir, trim="-")


@dataclass(frozen=True)
class Curve:
    """Thresholds for one kind of decision (single crop or fused track) over sizes x targets."""

    sizes: tuple[int, ...]
    targets: tuple[float, ...]
    thresholds: Mapping[str, tuple[float, ...]]  # fpir_key(target) -> threshold per size
    searches: tuple[int, ...]  # pooled non-mated searches per size (what the thresholds rest on)
    lists: tuple[int, ...] = ()  # random lists pooled per size (empty: not recorded)

    def threshold(self, target_fpir: float, watchlist_size: int) -> float:
        if watchlist_size < 1:
            raise CalibrationError(f"watchlist size must be >= 1, got {watchlist_size}")
        if watchlist_size > self.sizes[-1]:
            raise CalibrationError(
                f"watchlist size {watchlist_size} is above the largest calibrated size {self.sizes[-1]}: "
                "run `lfr calibrate` with larger sizes"
            )
        lo_t, hi_t = min(self.targets), max(self.targets)
        if not lo_t <= target_fpir <= hi_t:
            raise CalibrationError(f"target FPIR {target_fpir} outside the calibrated range {lo_t}..{hi_t}")
        targets = sorted(self.targets)
        # Sizes below the smallest tabulated one use its threshold (conservative: FPIR falls with size).
        size = max(watchlist_size, self.sizes[0])

        def at_size(t: float) -> float:
            row = self.thresholds[fpir_key(t)]
            return _interp(math.log(size), [math.log(s) for s in self.sizes], list(row))

        return _interp(math.log(target_fpir), [math.log(t) for t in targets], [at_size(t) for t in targets])

    def fpir_at(self, threshold: float, watchlist_size: int) -> float:
        """The inverse of `threshold` at one size: the target FPIR whose threshold is `threshold`,
        clamped to the tabulated targets (thresholds fall as the target FPIR rises)."""
        lo_t, hi_t = min(self.targets), max(self.targets)
        if threshold >= self.threshold(lo_t, watchlist_size):
            return lo_t
        if threshold <= self.threshold(hi_t, watchlist_size):
            return hi_t
        lo, hi = math.log(lo_t), math.log(hi_t)
        for _ in range(60):  # bisection in log FPIR; the curve is monotone in the target
            mid = (lo + hi) / 2
            if self.threshold(min(max(math.exp(mid), lo_t), hi_t), watchlist_size) > threshold:
                lo = mid
            else:
                hi = mid
        return min(max(math.exp((lo + hi) / 2), lo_t), hi_t)

    def at_least(self, other: Curve) -> Curve:
        """This curve, raised wherever `other` (same sizes and targets) has a higher threshold."""
        if other.sizes != self.sizes or set(other.thresholds) != set(self.thresholds):
            raise CalibrationError("curves of different sizes or targets cannot be compared")
        raised = {k: tuple(max(a, b) for a, b in zip(row, other.thresholds[k], strict=True))
                  for k, row in self.thresholds.items()}
        return Curve(self.sizes, self.targets, raised, self.searches, self.lists)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": list(self.sizes),
            "targets": [fpir_key(t) for t in self.targets],
            "thresholds": {k: [round(v, 6) for v in row] for k, row in self.thresholds.items()},
            "non_mated_searches": list(self.searches),
            **({"lists": list(self.lists)} if self.lists else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Curve:
        try:
            sizes = tuple(int(s) for s in d["sizes"])
            targets = tuple(float(t) for t in d["targets"])
            thresholds = {fpir_key(float(k)): tuple(float(v) for v in row) for k, row in d["thresholds"].items()}
            searches = tuple(int(n) for n in d["non_mated_searches"])
            lists = tuple(int(n) for n in d.get("lists", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed calibration curve: {type(exc).__name__}: {exc}") from exc
        if not sizes or list(sizes) != sorted(set(sizes)):
            raise CalibrationError("calibration sizes must be strictly increasing")
        for t in targets:
            row = thresholds.get(fpir_key(t))
            if row is None or len(row) != len(sizes):
                raise CalibrationError(f"calibration row for FPIR {t} missing or of the wrong length")
        return cls(sizes, targets, thresholds, searches, lists)


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) == 1:
        return float(ys[0])
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    x0, x1 = xs[i], xs[i + 1]
    w = 0.0 if x1 == x0 else min(max((x - x0) / (x1 - x0), 0.0), 1.0)
    return float(ys[i] + w * (ys[i + 1] - ys[i]))


@dataclass(frozen=True)
class CalibrationTable:
    model: str
    pipeline: Mapping[str, Any]  # the options the scores were made with (flip TTA, quality gate)
    single: Curve
    fused: Mapping[int, Curve]  # crops per track (2..MAX_TRACK_CROPS) -> thresholds for the fused score
    fusion_mode: FusionMode  # how a track's crops are fused: deployments take it from here
    provenance: Mapping[str, Any]

    def with_track_floor(self) -> CalibrationTable:
        """Each track size held to at least the threshold of one fewer crop (and so of one crop).

        The fused curves are measured on tracks of *different* photos. A camera's track may be
        nearly one picture n times, and then its fused score is just one crop's score: a lower
        threshold than one crop's would let it alert more often than one crop may. (Pooled lfw-dev
        needs this at large lists, where the track pool lacks the look-alike pairs that set the
        one-crop tail.)"""
        fused: dict[int, Curve] = {}
        below = self.single
        for n in sorted(self.fused):
            below = fused[n] = self.fused[n].at_least(below)
        return replace(self, fused=fused)

    def curve(self, crops: int = 1) -> Curve:
        if crops <= 1:
            return self.single
        curve = self.fused.get(crops)
        if curve is None:
            raise CalibrationError(f"the calibration table has no thresholds for tracks of {crops} crops")
        return curve

    def threshold(self, target_fpir: float, watchlist_size: int, crops: int = 1) -> float:
        return self.curve(crops).threshold(target_fpir, watchlist_size)

    def track_thresholds(self, threshold: float, watchlist_size: int) -> list[float]:
        """Thresholds for tracks of 2..MAX_TRACK_CROPS crops that keep the FPIR a single-crop
        `threshold` has at this size (read off the single-crop curve, clamped to the table's range):
        each track size is held to the same false-alert rate as one crop."""
        size = min(max(watchlist_size, 1), self.single.sizes[-1])
        fpir = self.single.fpir_at(threshold, size)
        out = []
        for n in range(2, MAX_TRACK_CROPS + 1):
            # The single curve at the clamped FPIR may differ from `threshold` (outside the table's
            # range): carry that difference over, so a stricter manual threshold stays stricter.
            shift = threshold - self.single.threshold(fpir, size)
            out.append(round(min(1.0, self.curve(n).threshold(fpir, size) + shift), 6))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "pipeline": dict(self.pipeline),
            "provenance": dict(self.provenance),
            "single": self.single.to_dict(),
            "fusion_mode": self.fusion_mode,
            "fused": {str(n): c.to_dict() for n, c in sorted(self.fused.items())},
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationTable:
        version = d.get("format_version") if isinstance(d, Mapping) else None
        if version != FORMAT_VERSION:
            raise CalibrationError(f"unsupported calibration table (format_version {version!r})")
        try:
            fused = {int(n): Curve.from_dict(c) for n, c in dict(d["fused"]).items()}
            mode = str(d["fusion_mode"])
            if mode not in FUSION_MODES:
                raise ValueError(f"unknown fusion mode {mode!r}")
            table = cls(
                model=str(d["model"]),
                pipeline=dict(d["pipeline"]),
                single=Curve.from_dict(d["single"]),
                fused=fused,
                fusion_mode="max" if mode == "max" else "mean",
                provenance=dict(d.get("provenance") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration table: {type(exc).__name__}: {exc}") from exc
        if sorted(fused) != list(range(2, MAX_TRACK_CROPS + 1)):
            raise CalibrationError(f"the table needs fused thresholds for tracks of 2..{MAX_TRACK_CROPS} crops")
        return table

    @classmethod
    def load(cls, path: Path = TABLE_PATH) -> CalibrationTable:
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise CalibrationError(f"no calibration table at {path}: run `lfr calibrate`") from exc
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"unreadable calibration table {path}: {exc}") from exc
        return cls.from_dict(raw)


def production_pipeline() -> dict[str, Any]:
    """What a table's scores must have been made with for production's thresholds to hold: the
    match function's flip TTA, the watchlist build's template rule and the edge's quality gate
    (`lfr_core.matching`)."""
    return {"flip_tta": PRODUCTION_FLIP_TTA, "template": PRODUCTION_TEMPLATE, "min_quality": PRODUCTION_MIN_QUALITY}


@lru_cache(maxsize=1)
def shipped_table() -> CalibrationTable:
    """The table deployments take their thresholds from; refused if its scores were made another
    way than production makes them (a threshold is only a false-alert rate for the same scores)."""
    table = CalibrationTable.load(TABLE_PATH)
    differs = {k: table.pipeline.get(k) for k, v in production_pipeline().items() if table.pipeline.get(k) != v}
    if differs:
        raise CalibrationError(f"the shipped table was made with {differs}, production uses "
                               f"{production_pipeline()}: rebuild it (`lfr calibrate`)")
    return table


def threshold_for(target_fpir: float, watchlist_size: int, crops: int = 1) -> float:
    """The cosine threshold that keeps FPIR at or below `target_fpir` for a list of `watchlist_size`.

    `crops` > 1: the threshold for the fused score of a track of that many crops (the table's
    `fusion_mode`), so that a track decision has the same FPIR as a one-crop decision.
    """
    return shipped_table().threshold(target_fpir, watchlist_size, crops)
