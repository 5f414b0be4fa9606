"""`lfr scenario make`: a walk-by video and its ground truth, from `lfr_eval.scenario`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lfr_eval.scenario import (
    DEFAULT_CONCURRENT,
    DEFAULT_FPS,
    ScenarioError,
    make_scenario,
    people_from_dirs,
    people_from_lfw,
)

__all__ = ["ScenarioError", "main_make"]


def main_make(identities: Sequence[Path] | None, from_lfw: int | None, out: Path, truth: Path,
              seed: int = 0, fps: float = DEFAULT_FPS, concurrent: int = DEFAULT_CONCURRENT) -> str:
    if bool(identities) == (from_lfw is not None):
        raise ScenarioError("give exactly one of --identities DIR... or --from-lfw N")
    people = people_from_dirs(identities) if identities else people_from_lfw(from_lfw or 0, seed)
    doc = make_scenario(people, out, truth, seed=seed, fps=fps, concurrent=concurrent)
    return (f"wrote {out} ({doc['n_frames']} frames, {doc['width']}x{doc['height']} @ {doc['fps']:g} fps, "
            f"{len(people)} people) and {truth}")
