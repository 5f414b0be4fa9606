"""`lfr scenario tracks`: printing over `lfr_eval.tracks` (tracker fragmentation on walk-bys)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from lfr_core.face.detect import FaceDetector
from lfr_eval.tracks import STANDARD_SCENARIOS, bytetrack_available, measure, scenario_detections, trackers

__all__ = ["STANDARD_SCENARIOS", "main_tracks"]


def main_tracks(scenarios: Sequence[tuple[int, int, float]] = STANDARD_SCENARIOS) -> str:
    detector = FaceDetector()
    lines = []
    if not bytetrack_available():
        lines.append("bytetrack: not installed (supervision with ByteTrack); measuring the edge tracker only")
    with tempfile.TemporaryDirectory(prefix="lfr-tracks-") as tmp:
        for people, seed, fps in scenarios:
            frames, truth = scenario_detections(people, seed, fps, Path(tmp), detector)
            lines.append(f"scenario {people} people, seed {seed}, {fps:g} fps ({len(frames)} frames; "
                         f"detector {truth['detect_fps']:.1f} fps):")
            for r in measure(frames, truth, trackers()):
                f = r.frag
                lines.append(f"  {r.tracker:9s} drops={r.drops:10s} crossings={f.crossings} tracks={f.tracks} "
                             f"tracks/crossing={f.tracks_per_crossing:.3f} switches={f.switches} "
                             f"unplaced={f.unplaced} tracker {r.ms_per_frame:.2f} ms/frame")
    return "\n".join(lines)
