"""Which crops of a track leave the van: the best K by quality, the first as soon as it passes the gate.

Per track (only crops that passed the quality gate are offered):
- the first crop is sent as soon as the track is confirmed (`min_hits` detections), so an alert is
  not held back to the end of the track;
- after that, a crop is a candidate only if it is better than every crop already sent for the track;
  the best candidate is sent once `min_interval_s` has passed since the track's last send (never more
  than one crop per track per N seconds);
- at most `best_k` crops per track; a candidate still waiting when its track ends is discarded.
Held candidates live only in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_uploader.pipeline import Crop
from edge_uploader.sources import Frame
from edge_uploader.tracker import Track

DEFAULT_BEST_K = 3
DEFAULT_MIN_INTERVAL_S = 1.0
DEFAULT_MIN_HITS = 2


@dataclass(frozen=True)
class SamplingPolicy:
    best_k: int = DEFAULT_BEST_K
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    min_hits: int = DEFAULT_MIN_HITS

    def __post_init__(self) -> None:
        if self.best_k < 1 or self.min_interval_s < 0 or self.min_hits < 1:
            raise ValueError("best_k >= 1, min_interval_s >= 0 and min_hits >= 1 are required")


@dataclass
class _TrackState:
    sent_scores: list[float] = field(default_factory=list)
    last_sent_t: float = float("-inf")
    pending: tuple[Crop, Frame] | None = None


@dataclass(frozen=True)
class Selected:
    track_id: str
    crop: Crop
    frame: Frame
    nth: int  # 1 for the track's first crop


class TrackSampler:
    def __init__(self, policy: SamplingPolicy) -> None:
        self.policy = policy
        self._state: dict[str, _TrackState] = {}
        self.discarded = 0  # candidates never sent (track ended during the interval, or K reached)

    def offer(self, track: Track, crop: Crop, frame: Frame) -> None:
        st = self._state.setdefault(track.track_id, _TrackState())
        if len(st.sent_scores) >= self.policy.best_k:
            self.discarded += 1
            return
        score = crop.quality.score
        if st.sent_scores and score <= max(st.sent_scores):
            self.discarded += 1
            return
        if st.pending is None or score > st.pending[0].quality.score:
            if st.pending is not None:
                self.discarded += 1
            st.pending = (crop, frame)
        else:
            self.discarded += 1

    def due(self, tracks: dict[str, Track], t: float) -> list[Selected]:
        """Candidates whose time has come, at frame time `t`."""
        out: list[Selected] = []
        for tid, st in self._state.items():
            tr = tracks.get(tid)
            if st.pending is None or tr is None or tr.hits < self.policy.min_hits:
                continue
            if st.sent_scores and t - st.last_sent_t < self.policy.min_interval_s:
                continue
            crop, frame = st.pending
            st.pending = None
            st.sent_scores.append(crop.quality.score)
            st.last_sent_t = t
            out.append(Selected(tid, crop, frame, len(st.sent_scores)))
        return out

    def sent_for(self, track_id: str) -> int:
        st = self._state.get(track_id)
        return len(st.sent_scores) if st else 0

    def end(self, track_id: str) -> None:
        st = self._state.pop(track_id, None)
        if st is not None and st.pending is not None:
            self.discarded += 1
