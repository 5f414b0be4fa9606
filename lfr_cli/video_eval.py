"""`lfr eval-video`: printing over `lfr_eval.video` (walk-by videos, one decision per track)."""

from __future__ import annotations

import json
from pathlib import Path

from lfr_eval.datasets import REPO_ROOT
from lfr_eval.metrics import Rate
from lfr_eval.video import measure_video

DEFAULT_OUT = REPO_ROOT / "build" / "eval"


def run_eval_video(
    watchlist_size: int, listed_walkers: int, strangers: int, seed: int, target_fpir: float,
    out: Path, as_json: bool,
) -> int:
    got = measure_video(watchlist_size, listed_walkers, strangers, seed, target_fpir)
    summary = got.summary
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"eval-video-s{seed}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    crops_hist = {int(k): v for k, v in summary["crops_per_track"].items()}
    print(f"{summary['watchlist_size']} listed; {listed_walkers} of them and {strangers} strangers walked past; "
          f"{summary['tracks']} tracks (crops per track {crops_hist}); target FPIR {target_fpir:g}")
    for r in got.results:
        tp, fa, found = Rate(r.hits, r.mated), Rate(r.false, r.non_mated), Rate(len(r.found), got.listed_walked)
        print(f"  {r.name:52s} TPIR {tp}  false alerts {fa}  listed walkers found {found}  (t {r.threshold})")
    print(f"wrote {path}")
    if as_json:
        print(json.dumps(summary, separators=(",", ":")))
    return 0
