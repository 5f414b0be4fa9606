"""`lfr bench --quick`: runs end to end on the real model and real faces and reports what it measured.

Timings are reported, never asserted (the machine is shared); the report's shape and its
non-timing facts (recall, sizes, no JIT in a cold start) are.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_quick_bench_reports_every_measurement(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lfr_cli.main", "bench", "--quick", "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "search-scaling.png").stat().st_size > 10_000

    model = report["model"]
    assert model["ms_per_crop_batch_1"] > 0 and model["ms_per_crop_batch_10"] > 0

    sizes = [p["entries"] for p in report["search"]]
    assert sizes == [1_000, 10_000]
    for point in report["search"]:
        assert point["exact_ms_per_crop_batch"] > 0 and point["exact_load_s"] > 0
        # Real mated photos mostly find their own enrolment (SFace's rank-1 on lfw-dev is ~0.97; the quick
        # run's distractors are drawn from a Gaussian fitted to only 200 photos, so they crowd those people).
        assert 0.6 <= point["exact_rank1_own"] <= 1.0
    graph = report["search"][-1]
    assert graph["graph_build_s"] > 0 and graph["graph_artifact_mib"] > graph["artifact_mib"]
    assert 0.9 <= graph["graph_recall_of_exact_best"] <= 1.0

    cold = report["cold_start"]
    assert cold["jit_imported"] is False
    assert math.isclose(
        cold["total_s"], cold["import_s"] + cold["model_first_embed_s"] + cold["index_load_first_search_s"]
    )

    # Lower-precision galleries: float32 is the reference (nothing changes against itself); the
    # rounding error is bounded by the format (float16 ~1e-4, int8 ~1e-2 on unit vectors).
    storage = {st["dtype"]: st for st in report["storage"]}
    assert set(storage) == {"float32", "float16", "int8"}
    assert storage["float32"]["max_score_error"] == 0
    assert set(storage["float32"]["decisions_changed"].values()) == {0}
    assert 0 < storage["float16"]["max_score_error"] < 1e-3 < storage["int8"]["max_score_error"] < 5e-2

    cost = report["cost_per_camera_hour"]
    rates = cost["rates"]
    assert [r["messages_per_s"] for r in rates] == [1.0, 5.0, 10.0]
    # More traffic costs more, and every rate is far below searching each track on Rekognition.
    totals = [r["usd_total"] for r in rates]
    assert totals == sorted(totals) and all(t > 0 for t in totals)
    assert all(r["usd_total"] < r["rekognition_usd"] for r in rates)
    assert rates[0]["rekognition_usd"] == pytest.approx(3.6)
