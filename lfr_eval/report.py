"""The identification report: the text table rows and the DET plots (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lfr_core.calibration import fpir_key
from lfr_eval.identification import FAIRNESS_FPIRS, OPERATING_FPIR, SearchOutcome
from lfr_eval.metrics import REPORT_FPIRS, OpenSetResult


def table_line(o: SearchOutcome) -> str:
    r = o.result
    pts = {f: r.at_fpir(f) for f in REPORT_FPIRS}
    op = pts[OPERATING_FPIR]
    lo, hi = op.tpir.ci
    cells = " ".join(f"{pts[f].tpir.value:.3f}" for f in REPORT_FPIRS)
    return (
        f"{o.variant.name:44s} {r.n_mated:6d} {r.n_non_mated:6d} {o.fta_mated.value:6.3f} "
        f"{r.rank1().value:6.3f} {cells}  [{lo:.3f}-{hi:.3f}] t={op.threshold:.3f}"
    )


TABLE_HEAD = (
    f"{'variant':44s} {'mated':>6s} {'nonmat':>6s} {'FTA':>6s} {'rank1':>6s} "
    + " ".join(f"{fpir_key(f):>5s}" for f in REPORT_FPIRS)
    + "  TPIR@2e-4 95% CI, threshold"
)


def write_det(outcomes: Sequence[SearchOutcome], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for o in outcomes:
        _, fp, fn = o.result.det()
        keep = fp > 0
        ax.plot(fp[keep], np.maximum(fn[keep], 1e-4), label=o.variant.name, lw=1.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-3, 1)
    ax.axvline(OPERATING_FPIR, color="grey", ls=":", lw=1)
    ax.set_xlabel("FPIR (non-mated searches alerting)")
    ax.set_ylabel("FNIR (mated searches missed)")
    ax.set_title(title, fontsize=9)
    _save(fig, ax, path)


def write_det_by_group(o: SearchOutcome, path: Path, title: str) -> None:
    """One DET curve per gender group (FPIR over that group's non-mated searches, FNIR over its
    mated ones) in one plot, with the one threshold at each operating point marked on each curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = o.result
    m_g, n_g = np.asarray(o.mated_gender), np.asarray(o.non_mated_gender)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    marks = {f: res.at_fpir(f).threshold for f in FAIRNESS_FPIRS}
    for g, name, colour in (("F", "women", "tab:red"), ("M", "men", "tab:blue")):
        sel_m, sel_n = m_g == g, n_g == g
        if not sel_m.any() or not sel_n.any():
            continue
        part = OpenSetResult(res.mated_scores[sel_m], res.mated_correct[sel_m], res.non_mated_scores[sel_n])
        _, fp, fn = part.det()
        keep = fp > 0
        ax.plot(fp[keep], np.maximum(fn[keep], 1e-4), label=f"{name} ({part.n_mated:,} mated, "
                f"{part.n_non_mated:,} non-mated)", lw=1.3, color=colour)
        for f, t in marks.items():
            x, y = part.fpir(t).value, 1 - part.tpir(t).value
            ax.plot([max(x, 1e-5)], [max(y, 1e-4)], "o", color=colour, ms=4)
            if g == "F":
                ax.annotate(f"t@{fpir_key(f)}", (max(x, 1e-5), max(y, 1e-4)), fontsize=6,
                            textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("FPIR within the group (non-mated searches alerting)")
    ax.set_ylabel("FNIR within the group (mated searches missed)")
    ax.set_title(title + "\ndots: the one threshold for everyone at FPIR 1e-2, 1e-3, 2e-4", fontsize=8)
    _save(fig, ax, path)


def _save(fig: Any, ax: Any, path: Path) -> None:
    """Grid, legend, and the figure written to `path` (its folder made)."""
    import matplotlib.pyplot as plt  # matplotlib only where a plot is drawn (slow import)

    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
