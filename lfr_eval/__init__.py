"""Evaluation of the face path: a library the `lfr eval`, `lfr eval-video`, `lfr calibrate` and
`lfr scenario` commands (lfr_cli) print from. Never shipped to Lambda (layers/build.py copies
lfr_core and functions only; tests/unit/test_lambda_imports.py checks).

- datasets: the shared datasets and identity-labelled folders; errata: reviewed label corrections applied to them
- degrade: CCTV-like probe degradation; embeddings: the production-path embedding cache
- identification: the open-set protocol (watchlist splits, mated/non-mated searches, variants)
- fusion: candidate track fusion rules (feature-level, quality-weighted) measured beside production's
- metrics: TPIR/FPIR with exact intervals, thresholds at a target FPIR; report: tables, DET plots
- calibrate: building the calibration table that lfr_core.calibration reads
- scenario: synthetic walk-by videos and their truth; tracks: tracker fragmentation on them;
  video: one decision per edge track on a walk-by
Alert decisions go through `lfr_core.matching.decide`/`reaches`, the match function's own rule.
"""
