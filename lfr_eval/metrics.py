"""Open-set 1:N identification metrics (ISO/IEC 19795-1, as NIST FRVT 1:N and NPL report them).

Inputs are the top-1 result of each search, nothing else:
- a mated search (its person is on the watchlist) is a hit at threshold t when its top-1 entry is
  that person and the score is >= t; TPIR(t) = hits / mated searches, FNIR(t) = 1 - TPIR(t);
- a non-mated search (its person is not on the list) is a false positive when its top-1 score is
  >= t; FPIR(t) = false positives / non-mated searches.
A mated search that acquired no face (no detection, or below the quality gate) is passed with
score -inf: it counts as a miss, never silently dropped. Non-mated failures to acquire are left out
of the FPIR denominator by the caller, which can only make FPIR larger (the conservative side).

Intervals are 95% two-sided: Clopper-Pearson (exact, used for every reported rate because false
positive counts are often 0..5, where normal approximations fail) and Wilson (for comparison).
Pure numpy and math; the alert rule itself is `lfr_core.matching.reaches`, the one the match
function decides with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lfr_core.calibration import fpir_key
from lfr_core.matching import reaches

Z95 = 1.959963984540054
REPORT_FPIRS: tuple[float, ...] = (1e-2, 1e-3, 2e-4, 1e-4)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: Rate, b: Rate, z: float = Z95) -> tuple[float, float, float]:
    """The gain a - b of two rates with its 95% interval: (gain, low, high).

    Newcombe's hybrid score interval (1998, method 10), built from each rate's Wilson interval.
    It treats the two as independent samples; for two variants measured on the same searches the
    samples are positively correlated, so the true interval is narrower (this one is conservative).
    """
    if not a.n or not b.n:
        raise ValueError("a difference of rates needs searches on both sides")
    p1, p2 = a.k / a.n, b.k / b.n
    l1, u1 = wilson_interval(a.k, a.n, z)
    l2, u2 = wilson_interval(b.k, b.n, z)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P[X <= k] for X ~ Bin(n, p), summed in log space (stable for n in the millions at small k)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lg_n = math.lgamma(n + 1)
    terms = [lg_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * math.fsum(math.exp(t - m) for t in terms))


def _bisect(below: Callable[[float], bool], lo: float, hi: float) -> float:
    """The boundary p where `below(p)` turns from True to False."""
    for _ in range(200):
        mid = (lo + hi) / 2
        if below(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for k successes in n trials.

    lower: the p with P[X >= k | p] = alpha/2; upper: the p with P[X <= k | p] = alpha/2.
    Solved by bisection on the binomial CDF, so no scipy is needed.
    """
    _check_counts(k, n)
    if n == 0:
        return 0.0, 1.0
    a = alpha / 2
    if k == 0:
        lower = 0.0
        upper = 1.0 - a ** (1.0 / n)
    elif k == n:
        lower = a ** (1.0 / n)
        upper = 1.0
    else:
        # P[X >= k | p] increases with p: lower bound is where it crosses alpha/2.
        lower = _bisect(lambda p: 1.0 - _binom_cdf(k - 1, n, p) < a, 0.0, 1.0)
        # P[X <= k | p] decreases with p: upper bound is where it crosses alpha/2.
        upper = _bisect(lambda p: _binom_cdf(k, n, p) > a, 0.0, 1.0)
    return lower, upper


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k} n={n}")


@dataclass(frozen=True)
class Rate:
    """k of n, with its exact 95% interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return clopper_pearson(self.k, self.n)

    def to_dict(self) -> dict[str, object]:
        lo, hi = self.ci
        return {"rate": _round(self.value), "k": self.k, "n": self.n, "ci95": [_round(lo), _round(hi)]}

    def __str__(self) -> str:
        lo, hi = self.ci
        return f"{self.value:.4g} ({self.k}/{self.n}, 95% CI {lo:.3g}-{hi:.3g})"


def _round(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x


def threshold_at_fpir(non_mated_scores: np.ndarray, target_fpir: float) -> float:
    """The lowest threshold whose empirical FPIR is <= target: at most floor(target * n) scores reach it.

    With k = floor(target * n) and scores sorted descending s[0] >= s[1] >= ..., any t > s[k] lets
    at most k through (ties at s[k] stay below), so the threshold is the next float above s[k].
    When target * n < 1 this is just above the highest non-mated score: the FPIR measured there is
    0/n, whose interval (not the point) says what the data can support.
    """
    s = np.asarray(non_mated_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("need a non-empty 1-D array of non-mated scores")
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
    k = math.floor(target_fpir * s.size + 1e-9)
    s_desc = np.sort(s)[::-1]
    return float(np.nextafter(s_desc[k], np.inf)) if k < s.size else float(s_desc[-1])


@dataclass(frozen=True)
class OperatingPoint:
    target_fpir: float
    threshold: float
    fpir: Rate
    tpir: Rate

    @property
    def fnir(self) -> Rate:
        return Rate(self.tpir.n - self.tpir.k, self.tpir.n)

    def to_dict(self) -> dict[str, object]:
        return {
            "target_fpir": self.target_fpir,
            "threshold": _round(self.threshold),
            "fpir": self.fpir.to_dict(),
            "tpir": self.tpir.to_dict(),
            "fnir": self.fnir.to_dict(),
            # Below 1/n the target cannot be shown by these data, only bounded by the interval.
            "resolvable": self.target_fpir * self.fpir.n >= 1.0,
        }


@dataclass(frozen=True)
class OpenSetResult:
    """Top-1 results of one open-set evaluation: the whole of what the metrics need."""

    mated_scores: np.ndarray  # (M,) top-1 score; -inf where no face was acquired
    mated_correct: np.ndarray  # (M,) bool: top-1 entry is the searched person
    non_mated_scores: np.ndarray  # (F,) top-1 score of each acquired non-mated search

    def __post_init__(self) -> None:
        ms = np.asarray(self.mated_scores, dtype=np.float64)
        mc = np.asarray(self.mated_correct, dtype=bool)
        nm = np.asarray(self.non_mated_scores, dtype=np.float64)
        if ms.shape != mc.shape or ms.ndim != 1 or nm.ndim != 1:
            raise ValueError("mated scores/correct must be equal-length 1-D arrays, non-mated 1-D")
        if np.any(np.isnan(ms)) or not np.all(np.isfinite(nm)):
            raise ValueError("scores must be finite (mated failures to acquire as -inf)")
        object.__setattr__(self, "mated_scores", ms)
        object.__setattr__(self, "mated_correct", mc & np.isfinite(ms))
        object.__setattr__(self, "non_mated_scores", nm)

    @property
    def n_mated(self) -> int:
        return int(self.mated_scores.size)

    @property
    def n_non_mated(self) -> int:
        return int(self.non_mated_scores.size)

    def tpir(self, threshold: float) -> Rate:
        hits = int(np.sum(self.mated_correct & reaches(self.mated_scores, threshold)))
        return Rate(hits, self.n_mated)

    def fpir(self, threshold: float) -> Rate:
        return Rate(int(np.sum(reaches(self.non_mated_scores, threshold))), self.n_non_mated)

    def rank1(self) -> Rate:
        """Closed-set rank-1 identification rate over mated searches (no threshold)."""
        return Rate(int(np.sum(self.mated_correct)), self.n_mated)

    def at_threshold(self, threshold: float, target_fpir: float = float("nan")) -> OperatingPoint:
        return OperatingPoint(target_fpir, threshold, self.fpir(threshold), self.tpir(threshold))

    def at_fpir(self, target_fpir: float) -> OperatingPoint:
        return self.at_threshold(threshold_at_fpir(self.non_mated_scores, target_fpir), target_fpir)

    def det(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, FPIR, FNIR) at every distinct score: the DET curve, FPIR descending."""
        hits = np.sort(self.mated_scores[self.mated_correct])
        nm = np.sort(self.non_mated_scores)
        t = np.unique(np.concatenate([hits, nm]))
        # count(x >= t) = n - searchsorted(x, t, "left")
        fp = (nm.size - np.searchsorted(nm, t, "left")) / max(nm.size, 1)
        tp = (hits.size - np.searchsorted(hits, t, "left")) / max(self.n_mated, 1)
        return t, fp, 1.0 - tp


def summarise(result: OpenSetResult, fpirs: Sequence[float] = REPORT_FPIRS) -> dict[str, object]:
    """The issue's table as a JSON-able dict: counts, rank-1, and TPIR/threshold per target FPIR."""
    points = {fpir_key(f): result.at_fpir(f) for f in fpirs}
    return {
        "mated": result.n_mated,
        "non_mated": result.n_non_mated,
        "rank1": _round(result.rank1().value),
        "tpir_at_fpir": {k: _round(p.tpir.value) for k, p in points.items()},
        "rank1_detail": result.rank1().to_dict(),
        "operating_points": {k: p.to_dict() for k, p in points.items()},
    }
