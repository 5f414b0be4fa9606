"""The default alert threshold (cosine similarity of L2-normalised SFace embeddings).

How it was measured (lfw-dev, 9,525 images of 4,038 people; script logic mirrored by
tests/integration/test_threshold_lfw.py, which re-checks it):
- pipeline: YuNet detection, central face, 5-point alignment to 112x112, SFace fp32 (build/models);
  all 9,525 images gave a face;
- 200 watchlists of 20 people (seeds 0..199), each the first image of 20 people drawn from the
  1,184 people with 2+ images; non-mated searches = every image of people not on that list
  (8,876..9,477 per list, ~1.85M searches in all); mated = the other images of listed people;
- FPIR(t) = fraction of non-mated searches whose best watchlist score is >= t;
  TPIR(t) = fraction of mated searches whose top-1 is the right person with score >= t.

  t     FPIR mean  FPIR p95  FPIR worst list  lists > 1e-3   TPIR mean  TPIR worst list
  0.40  6.1e-3     1.2e-2    2.7e-2           200/200        0.988      0.930
  0.45  7.9e-4     2.5e-3    6.5e-3            30/200        0.967      0.884
  0.50  1.2e-4     4.3e-4    1.9e-3             6/200        0.926      0.740
  0.53  4.6e-5     2.2e-4    7.4e-4             0/200        0.878      0.660
  0.55  2.7e-5     1.1e-4    4.2e-4             0/200        0.842      0.597

0.55 keeps FPIR <= 1e-3 on every one of the 200 lists with >2x margin on the worst. 0.50 meets it on
average but not for 3% of lists, and the tail is driven by which people happen to be listed
(look-alikes), so a per-list guarantee needs the margin. The price is recall: mean TPIR 0.84 on
LFW's unconstrained news photos (expect better on cooperative enrolment photos).

What is left above 0.55: scoring every lfw-dev image against the first image of each of the 1,184
multi-image people, only 8 enrolled people attract any non-mated score >= 0.55, and those are
label noise or kin, not strangers: one person filed under two names (Sepp/Joseph Blatter),
siblings and twins (Williams, Olsen, Moraes, Hentzen), and a photo of two people. Between 0.50 and
0.55 (30 people) unrelated look-alikes appear, which is why the margin is worth its recall cost.

FPIR grows with watchlist size (more candidates per search). At 0.55 a 20-person list is the
design point; for reference at 0.50: 100 people FPIR 5.5e-4, 500 -> 2.5e-3, 1,000 -> 2.8e-3.
Larger lists need their own measurement (and a higher threshold). OpenCV's 1:1 verification
threshold 0.363 gives FPIR ~3e-2 at 20 people and ~0.6 at 1,000: never use it for 1:N.

Tracks: a deployment with this default threshold decides a track of 2 or 3 crops (max fusion)
against the calibration table's threshold for that track size at the FPIR 0.55 has for one crop
(`CalibrationTable.track_thresholds`), so a person walking past is no more likely to raise a false
alert than one crop of them was; each crop alone at 0.55 would have let a track try up to 3 times.

Since production enrols a mean template with flip TTA (`lfr_core.matching`), the table above is
for the earlier pipeline (one photo, no TTA). Under the current one 0.55 stays on the safe side:
the rebuilt calibration table gives 0.492 for FPIR 1e-4 at 20 people, so 0.55 is stricter still and
costs recall. Its track thresholds cost more: 0.55 lies beyond the table's 1e-4 edge, so they are
the 1e-4 cells plus the same margin, and a 20-person track cell at 1e-4 rests on about 3 false
alerts in 33,000 stranger tracks, so it moves between rebuilds (3 crops: 0.562 in the table made
at the earlier 0.3 quality gate, 0.642 in today's; `make demo` found 8 and then 6 of 10 listed
walkers). A deployment should state its
target FPIR (`--target-fpir`) and take the calibrated thresholds instead.

LFW is not representative of the population (few children, older people, women; little ethnic
diversity); these numbers do not establish fitness for operational use.
"""

from __future__ import annotations

DEFAULT_THRESHOLD: float = 0.55
FPIR_TARGET: float = 1e-3
WATCHLIST_SIZE: int = 20  # the watchlist size DEFAULT_THRESHOLD was measured for
