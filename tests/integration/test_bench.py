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

from aws_emulation.runtime import CONTAINERS_OVER_CORES

pytestmark = pytest.mark.integration


def test_quick_bench_reports_every_measurement(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lfr_cli.main", "bench", "--quick", "--json", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1500,
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
    scan = report["search"][-1]
    assert scan["scan_build_s"] > 0 and scan["scan_artifact_mib"] > scan["artifact_mib"]
    assert scan["scan_ms_per_crop_batch"] > 0 and scan["scan_ms_per_crop_alone"] > 0
    # The int8 scan's error bound keeps the exact best entry a candidate: recall and the decisions
    # are exact search's, on real mated photos, not merely close to it.
    assert scan["scan_recall_of_exact_best"] == 1.0 and scan["scan_decisions_equal_exact"] == 1.0
    assert 1 <= scan["scan_candidates_p50"] <= scan["scan_candidates_p99"] < 1000
    assert report["search"][0]["scan_recall_of_exact_best"] is None  # 1k: measured exact only
    assert scan["scan_read_floor_ms"] > 0
    # The rejected approximate index, measured beside the scan: probing more of its lists finds
    # the exact best more often, and the search itself, probing all of them, is exact search.
    ivf = scan["ivf"]
    assert ivf["lists"] == 100 and ivf["build_s"] > 0  # sqrt of 10,000 entries
    assert ivf["probe_shares"][-1] == 1.0 and len(ivf["recall_of_exact_best"]) == len(ivf["probe_shares"])
    assert ivf["recall_of_exact_best"] == sorted(ivf["recall_of_exact_best"])
    assert all(0 <= r <= 1 for r in ivf["recall_of_exact_best"] + ivf["timed_found_exact_best"])
    assert ivf["timed_found_exact_best"][-1] == 1.0
    assert all(ms > 0 for ms in ivf["ms_per_crop_alone"])
    assert report["search"][0]["ivf"] is None

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

    # Throughput on the embedded stack: the ceiling, then each quick rate (2 messages/s and 1.2x the
    # ceiling, which must saturate). Shape and the facts that do not depend on the machine's speed.
    tp = report["throughput"]
    ceiling = tp["ceiling"]
    assert ceiling["processes"] >= 1 and len(ceiling["crops_per_s_each"]) == ceiling["processes"]
    assert ceiling["crops_per_s"] == pytest.approx(sum(ceiling["crops_per_s_each"]))
    assert ceiling["messages_per_s"] == pytest.approx(ceiling["crops_per_s"] / 3)
    # One process per core measures the ceiling; the stack runs one container more, so one
    # waiting on an AWS call leaves no core idle (aws_emulation.runtime.CONTAINERS_OVER_CORES).
    assert tp["stack"]["match_workers"] == ceiling["processes"] + CONTAINERS_OVER_CORES
    assert tp["watchlist_size"] == 20
    rates = tp["rates"]
    assert [r["rate"] for r in rates] == ["2", "1.2x"]
    assert rates[0]["offered_per_s"] == 2.0
    assert rates[1]["offered_per_s"] == pytest.approx(1.2 * ceiling["messages_per_s"])
    for r in rates:
        planned = round(r["offered_per_s"] * r["seconds"])
        assert r["messages_sent"] == planned or (r["backlog_capped"] and 0 < r["messages_sent"] < planned)
        assert r["drained"] and r["end_to_end_ms"]["finished"] == r["messages_sent"]  # every one finished
        e2e = r["end_to_end_ms"]
        assert 0 <= e2e["p50"] <= e2e["p95"] <= e2e["max"]
        assert r["max_depth"] >= 0 and r["max_age_s"] >= 0
        assert r["fraction_of_ceiling"] == pytest.approx(r["crops_per_s"] / ceiling["crops_per_s"])
        assert r["cpu"]["wall_s"] > 0 and r["cpu"]["stack_process_cpu_s"] > 0
    assert tp["saturation"]["offered_per_s"] == rates[1]["offered_per_s"]
    # Listed people's other photos raise alerts, each with the function's queue-to-publish figure.
    assert sum(r["queue_to_publish_ms"]["n"] for r in rates) >= 1
    checks = tp["checks"]
    # Every message was compared with the watchlist once (the deployment's counter), none failed or
    # reached the DLQ, the session closed with its watchlist purged, and nothing of a stranger's
    # face is anywhere in the stack (buckets, tables, queues, executions, function logs).
    assert checks["faces_seen"] == checks["messages_sent"]
    assert checks["dlq_messages"] == 0 and checks["crop_queue_messages"] == 0
    assert checks["failed_invocations"] == 0
    assert checks["final_state"] == "CLOSED" and checks["objects_remaining"] == 0
    assert checks["leak_findings"] == []

