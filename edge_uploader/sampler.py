"""Which crops of a track leave the van, and when: one bundle of up to K crops per track.

The cloud makes one decision per track from all the crops it sends (track fusion, lfr_core/matching.py), so
the crops of a track travel together in one message. Per track (only gate-passing crops are
offered, and only once the track is confirmed by `min_hits` detections):
- a crop is taken at most every `min_interval_s` (the best offered since the last take): crops
  a second apart differ more than consecutive frames, so fusing them adds evidence; once
  `best_k` are held, a later take replaces the held crop of lowest quality if it is better
  (a walker's face is best close to the camera, at the end of the walk);
- the bundle leaves `max_wait_s` after its first crop while the track is still in view, or when
  the track ends (with the best crop still waiting, if it beats a held one), whichever comes
  first. That bounds how long an alert waits for evidence;
- after its bundle has left, a track's further crops are discarded (one decision per track).
Held crops live only in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edge_uploader.pipeline import Crop
from edge_uploader.sources import Frame
from edge_uploader.tracker import Track
from lfr_core.contracts import MAX_TRACK_CROPS

DEFAULT_BEST_K = MAX_TRACK_CROPS
DEFAULT_MIN_INTERVAL_S = 1.0
DEFAULT_MIN_HITS = 2
DEFAULT_MAX_WAIT_S = 3.0


@dataclass(frozen=True)
class SamplingPolicy:
    best_k: int = DEFAULT_BEST_K
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    min_hits: int = DEFAULT_MIN_HITS
    max_wait_s: float = DEFAULT_MAX_WAIT_S

    def __post_init__(self) -> None:
        if not 1 <= self.best_k <= MAX_TRACK_CROPS:
            raise ValueError(f"best_k must be 1..{MAX_TRACK_CROPS} (crops one track decision may fuse)")
        if self.min_interval_s < 0 or self.min_hits < 1 or self.max_wait_s < 0:
            raise ValueError("min_interval_s >= 0, min_hits >= 1 and max_wait_s >= 0 are required")


Taken = tuple[Crop, Frame]


@dataclass
class _TrackState:
    taken: list[Taken] = field(default_factory=list)
    first_taken_t: float = float("inf")
    last_taken_t: float = float("-inf")
    last_idx: int = 0  # which held crop came from the last take
    pending: Taken | None = None
    done: bool = False  # its bundle has left
    sent: int = 0  # crops in the bundle that left


@dataclass(frozen=True)
class Bundle:
    """The crops of one track that go out together, best quality first."""

    track_id: str
    crops: tuple[Taken, ...]
    why: Literal["waited", "ended"]

    @property
    def best(self) -> Taken:
        return self.crops[0]


class TrackSampler:
    def __init__(self, policy: SamplingPolicy) -> None:
        self.policy = policy
        self._state: dict[str, _TrackState] = {}
        self.discarded = 0  # gate-passing crops never sent (not the best in an interval, or after the bundle)

    def offer(self, track: Track, crop: Crop, frame: Frame) -> None:
        st = self._state.setdefault(track.track_id, _TrackState())
        if st.done:
            self.discarded += 1
            return
        if st.pending is None or crop.quality.score > st.pending[0].quality.score:
            if st.pending is not None:
                self.discarded += 1
            st.pending = (crop, frame)
        else:
            self.discarded += 1

    def due(self, tracks: dict[str, Track], t: float) -> list[Bundle]:
        """Bundles whose time has come, at frame time `t`."""
        out: list[Bundle] = []
        for tid, st in self._state.items():
            tr = tracks.get(tid)
            if st.done or tr is None or tr.hits < self.policy.min_hits:
                continue
            if st.pending is not None and (not st.taken or t - st.last_taken_t >= self.policy.min_interval_s):
                self._take(st)
                st.first_taken_t = min(st.first_taken_t, t)
                st.last_taken_t = t
            if st.taken and t - st.first_taken_t >= self.policy.max_wait_s:
                out.append(self._bundle(tid, st, "waited"))
        return out

    def crops_for(self, track_id: str) -> int:
        """Crops taken for the track so far (held, or sent in its bundle)."""
        st = self._state.get(track_id)
        return (st.sent or len(st.taken)) if st else 0

    def end(self, track: Track) -> Bundle | None:
        """The track left view: its bundle, if it has crops that have not left yet."""
        st = self._state.pop(track.track_id, None)
        if st is None or st.done:
            return None
        if st.pending is not None and track.hits >= self.policy.min_hits:
            if st.taken and st.pending[1].t - st.last_taken_t < self.policy.min_interval_s:
                # Same interval as the last take: keep the better of the two, so crops stay spaced.
                if st.pending[0].quality.score > st.taken[st.last_idx][0].quality.score:
                    st.taken[st.last_idx] = st.pending
                self.discarded += 1
                st.pending = None
            else:
                self._take(st)
        if st.pending is not None:
            self.discarded += 1
        return self._bundle(track.track_id, st, "ended") if st.taken else None

    def _take(self, st: _TrackState) -> None:
        """Hold the pending crop: added while fewer than K are held, else in place of a worse one."""
        assert st.pending is not None
        if len(st.taken) < self.policy.best_k:
            st.taken.append(st.pending)
            st.last_idx = len(st.taken) - 1
        else:
            worst = min(range(len(st.taken)), key=lambda i: st.taken[i][0].quality.score)
            if st.pending[0].quality.score > st.taken[worst][0].quality.score:
                st.taken[worst] = st.pending
                st.last_idx = worst
            self.discarded += 1  # one of the two is dropped either way
        st.pending = None

    def _bundle(self, track_id: str, st: _TrackState, why: Literal["waited", "ended"]) -> Bundle:
        st.done = True
        if st.pending is not None:
            self.discarded += 1
            st.pending = None
        crops = tuple(sorted(st.taken, key=lambda c: -c[0].quality.score))
        st.sent, st.taken = len(crops), []
        return Bundle(track_id, crops, why)
