"""The watchlist index: an npz artifact of normalised embeddings, and top-1 cosine search over it.

Track decisions (`fused_top1_batch`) are exact: one matrix product per batch. For very large
watchlists the artifact also carries an int8 copy of the gallery (`lfr_core.ann`, built with the
watchlist, never in a cold start) whose scan proposes candidate persons with a proven error bound;
they are then re-scored exactly, so the decision is exact search's.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, overload, runtime_checkable

import numpy as np

from lfr_core import npz
from lfr_core.ann import QuantisedScan, ScanBounds
from lfr_core.contracts import MAX_TRACK_CROPS
from lfr_core.errors import InvalidIndexError
from lfr_core.layout import MODEL_SFACE

EMBEDDING_DIM = 128
INDEX_FORMAT_VERSION = 1
_NORM_TOLERANCE = 1e-3
_KEYS = frozenset({"format_version", "entry_ids", "labels", "embeddings", "model"})
# Optional: a large watchlist's int8 scan (`lfr_core.ann`), its blocks and the bounds of its error.
_SCAN_BLOCKS_KEY = "scan_blocks"
_SCAN_BOUNDS_KEY = "scan_bounds"
FusionMode = Literal["max", "mean"]
FUSION_MODES: tuple[FusionMode, ...] = ("max", "mean")
# How production fuses a track's crops (README "Accuracy", "Track fusion" says why this one).
PRODUCTION_FUSION: FusionMode = "max"
# How a person's enrolment photos become index entries: "each" photo its own entry (a crop is
# held to the person's best photo), or their "mean", one entry per person (README "Accuracy",
# "Production": +0.19 TPIR at FPIR 2e-4 on held-apart people for 3 photos over 1).
TemplateMode = Literal["each", "mean"]
TEMPLATE_MODES: tuple[TemplateMode, ...] = ("each", "mean")
PRODUCTION_TEMPLATE: TemplateMode = "mean"
# Production embeds every crop and enrolment photo with its mirror image (flip test-time
# augmentation, `FaceEmbedder(flip_tta=...)`): twice the model's cost for +0.04 TPIR under CCTV
# conditions. The calibration table must be made the same way (`lfr_core.calibration.shipped_table`).
PRODUCTION_FLIP_TTA = True
# The edge's quality gate (`Quality.score`, edge_uploader/quality.py): 0 keeps every face that has
# at least `MIN_INTEROCULAR_PX` between the eyes. Chosen by measurement, not guessed: on held-apart
# people, at the same false alerts per stranger walking past, every higher gate found fewer listed
# people, clean and under CCTV conditions, and its low-quality strangers added no false alert at
# the table's threshold (README "Accuracy", "The quality gate"). The table is made at this gate.
PRODUCTION_MIN_QUALITY = 0.0


@runtime_checkable
class Searcher(Protocol):
    """Top-1 search over a fixed set of L2-normalised embeddings."""

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """queries (M, D) normalised -> (index (M,) int64, cosine (M,) float32) of the best entry."""
        ...


class ExactSearcher:
    """Brute-force cosine: at watchlist sizes of thousands this is one small BLAS call."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self._embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self._embeddings.T
        idx = np.argmax(scores, axis=1)
        best = scores[np.arange(scores.shape[0]), idx]
        return idx.astype(np.int64), best.astype(np.float32)


def _check_embeddings(emb: np.ndarray, what: str) -> np.ndarray:
    """Shape and finiteness; returns each row's squared norm (a non-finite value makes its row's
    sum non-finite, so one pass checks both: at 1M entries that is 0.1 s of a cold start, not 2)."""
    if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM:
        raise InvalidIndexError(f"{what} must be (N, {EMBEDDING_DIM}), got {emb.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        squared = np.einsum("ij,ij->i", emb, emb)
    if not np.all(np.isfinite(squared)):
        raise InvalidIndexError(f"{what} contain non-finite values")
    return squared


def _distinct(strings: np.ndarray) -> bool:
    """Whether a 1-D fixed-width unicode array holds no value twice: a 64-bit hash of each row's
    code points, two at a time (vectorised over strided views of the array, nothing copied: 1M
    ids in ~0.05 s, where a set of their Python strings takes 0.27 s), then an exact check among
    the rows whose hashes collide."""
    n = len(strings)
    if n < 2:
        return True
    units = np.ascontiguousarray(strings).view(np.uint8).reshape(n, -1)  # UCS-4: 4 bytes a character
    whole = units.shape[1] // 8 * 8
    columns: list[np.ndarray] = list(units[:, :whole].view(np.uint64).T)
    if whole < units.shape[1]:  # an odd number of characters: the last one alone
        columns.append(units[:, whole:].view(np.uint32)[:, 0])
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    word = np.empty(n, dtype=np.uint64)
    for column in columns:  # FNV-1a over 8-byte words, in place; uint64 arithmetic wraps
        np.copyto(word, column)
        h ^= word
        h *= np.uint64(0x100000001B3)
        np.right_shift(h, np.uint64(29), out=word)
        h ^= word
    ordered = np.sort(h)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size == 0:
        return True
    suspects = strings[np.isin(h, repeated)].tolist()
    return len(set(suspects)) == len(suspects)


class StringColumn(Sequence[str]):
    """A loaded index's entry ids or labels: a read-only sequence of str over the artifact's
    fixed-width string array, so loading a 1M-entry list does not build two million Python
    strings (0.13-0.2 s of a cold start) to name the few entries a search reports."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        if array.dtype.kind != "U" or array.ndim != 1:
            raise InvalidIndexError("a string column must be a 1-D unicode array")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return list(self.array[i].tolist())
        return str(self.array[i])

    def __iter__(self) -> Iterator[str]:
        return iter(self.array.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringColumn):
            return bool(np.array_equal(self.array, other.array))
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares by value, like the list it stands for

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} values)"


def _string_array(values: Sequence[str]) -> np.ndarray:
    return values.array if isinstance(values, StringColumn) else np.array(values, dtype=np.str_)


def _one_person_per_entry(n: int) -> tuple[np.ndarray, int]:
    """`WatchlistIndex._persons`' codes when every label is distinct: entry i is person i."""
    return np.arange(n, dtype=np.int64), n


def fuse_scores(scores: np.ndarray, mode: str) -> np.ndarray:
    """Track fusion of per-crop score matrices (T, N_crops, N_entries) -> (T, N_entries).

    "max": the best crop decides (most sensitive; a track is as risky as its worst crop).
    "mean": the average over crops per entry (one look-alike frame cannot alert alone).
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 3:
        raise ValueError(f"expected (tracks, crops, entries), got {s.shape}")
    if mode == "max":
        return s.max(axis=1)
    if mode == "mean":
        return s.mean(axis=1)
    raise ValueError(f"unknown fusion mode {mode!r} (max, mean)")


@dataclass(frozen=True)
class Thresholds:
    """The thresholds one deployment decides at: `one_crop` for a single crop, `tracks[n - 2]` for
    the fused score of a track of n crops (n = 2..MAX_TRACK_CROPS, calibrated for that many crops).
    No `tracks` (a deployment from before fusion): every track size is held to `one_crop`."""

    one_crop: float
    tracks: tuple[float, ...] = ()

    def for_crops(self, n_crops: int) -> float:
        if n_crops <= 1 or not self.tracks:
            return self.one_crop
        return self.tracks[min(n_crops, MAX_TRACK_CROPS) - 2]


@dataclass(frozen=True)
class Decision:
    alert: bool
    threshold: float  # the one the score was held to (an alert records it)


def reaches(scores: np.ndarray | float, threshold: float) -> np.ndarray:
    """Which (fused) scores alert at `threshold`: a score exactly at the threshold alerts. The
    element-wise form of `decide`, for evaluations that sweep one threshold over many searches."""
    return np.greater_equal(scores, threshold)


def decide(fused_score: float, n_crops: int, thresholds: Thresholds) -> Decision:
    """The alert rule, in one place: a track's fused score (one crop: its score) against the
    threshold calibrated for that many crops. The match function and both evaluators use it."""
    t = thresholds.for_crops(n_crops)
    return Decision(bool(reaches(fused_score, t)), t)


def _as_queries(queries: np.ndarray) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        raise ValueError("queries must be (M, 128); wrap a single query as queries[None]")
    if q.ndim != 2 or q.shape[1] != EMBEDDING_DIM or not np.all(np.isfinite(q)):
        raise ValueError(f"queries must be finite (M, {EMBEDDING_DIM}), got {q.shape}")
    # Normalise defensively: a score is only a cosine if both sides are unit length.
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def person_templates(
    entry_ids: Sequence[str], labels: Sequence[str], embeddings: np.ndarray, mode: TemplateMode
) -> tuple[list[str], list[str], np.ndarray]:
    """Index entries from enrolment embeddings: unchanged ("each"), or one per person ("mean"): the
    re-normalised mean of the person's photos, under the entry id of their first photo."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if mode == "each":
        return list(entry_ids), list(labels), emb
    if mode != "mean":
        raise ValueError(f"unknown template mode {mode!r} ({', '.join(TEMPLATE_MODES)})")
    if not len(entry_ids) == len(labels) == emb.shape[0]:
        raise InvalidIndexError(f"{emb.shape[0]} embeddings but {len(entry_ids)} entry ids and {len(labels)} labels")
    first: dict[str, int] = {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
    person = {label: k for k, label in enumerate(first)}
    codes = np.array([person[label] for label in labels], dtype=np.int64)
    sums = np.zeros((len(first), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, emb)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise InvalidIndexError("a person's enrolment embeddings cancel out: no mean template")
    return [entry_ids[i] for i in first.values()], list(first), (sums / norms).astype(np.float32)


@dataclass(frozen=True)
class Hit:
    """The best watchlist entry for one query."""

    index: int
    entry_id: str
    label: str
    score: float


@dataclass(frozen=True)
class ConfusablePair:
    """Two entries of different people who score as one person would (`confusable_pairs`)."""

    entry_id: str
    label: str
    other_entry_id: str
    other_label: str
    similarity: float


@dataclass
class WatchlistIndex:
    entry_ids: Sequence[str]  # a list, or a StringColumn when loaded from an artifact
    labels: Sequence[str]
    embeddings: np.ndarray
    # Which model made the embeddings: scores from different models are not comparable.
    model: str = MODEL_SFACE
    _searcher: Searcher | None = field(default=None, init=False, repr=False, compare=False)
    # Each entry's person as an integer, for fusing per person (built once, on first use).
    _codes: tuple[np.ndarray, int] | None = field(default=None, init=False, repr=False, compare=False)
    _order: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _bounds: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    # Candidates for very large watchlists (None: every decision is one float32 product).
    scan: QuantisedScan | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        read_from: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(self.entry_ids, StringColumn) and isinstance(self.labels, StringColumn):
            # Loaded from an artifact: a large list's uniqueness checks hash the fixed-width
            # arrays in numpy, never a million Python strings.
            read_from = (self.entry_ids.array, self.labels.array)
        else:
            self.entry_ids = list(map(str, self.entry_ids))
            self.labels = list(map(str, self.labels))
        emb = np.asarray(self.embeddings)
        if not np.issubdtype(emb.dtype, np.floating):
            raise InvalidIndexError(f"embeddings must be floating point, got {emb.dtype}")
        self.embeddings = np.ascontiguousarray(emb, dtype=np.float32)
        squared_norms = _check_embeddings(self.embeddings, "embeddings")
        n = self.embeddings.shape[0]
        if n == 0:
            raise InvalidIndexError("a watchlist index needs at least one entry")
        if len(self.entry_ids) != n or len(self.labels) != n:
            raise InvalidIndexError(f"{n} embeddings but {len(self.entry_ids)} entry ids and {len(self.labels)} labels")
        ids_distinct = _distinct(read_from[0]) if read_from is not None else len(set(self.entry_ids)) == n
        if not ids_distinct:
            raise InvalidIndexError("entry ids are not unique")
        if read_from is not None and _distinct(read_from[1]):
            self._codes = _one_person_per_entry(n)  # known now: the first search builds nothing
        if np.any(np.abs(np.sqrt(squared_norms) - 1.0) > _NORM_TOLERANCE):
            raise InvalidIndexError("embeddings are not L2-normalised")
        if not self.model:
            raise InvalidIndexError("model name is empty")

    def __len__(self) -> int:
        return len(self.entry_ids)

    def use_searcher(self, searcher: Searcher) -> None:
        """Replace the exact search (e.g. with an ANN index built over `self.embeddings`)."""
        self._searcher = searcher

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 over the watchlist: (index into entry_ids (M,), cosine (M,) float32)."""
        q = _as_queries(queries)
        if q.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self._searcher is None:
            self._searcher = ExactSearcher(self.embeddings)
        return self._searcher.search(q)

    def top1(self, queries: np.ndarray) -> list[Hit]:
        """`search` with the entry id and label resolved, one Hit per query row."""
        idx, score = self.search(queries)
        return [
            Hit(index=int(i), entry_id=self.entry_ids[i], label=self.labels[i], score=float(s))
            for i, s in zip(idx, score, strict=True)
        ]

    def fused_top1(self, crops: np.ndarray, mode: str) -> Hit:
        """One decision from several crops of one track: the best person and their fused score.

        Per person (label), each crop's score is that person's best template; the crops' scores are
        fused (`fuse_scores`: "mean" or "max") and the person with the highest fused score wins.
        Exact over every entry (whatever searcher is set): fusing needs each crop's score for the
        same person, not only each crop's own top-1. One crop gives the same answer as `top1`.
        """
        return self.fused_top1_batch([crops], mode)[0]

    def fused_top1_batch(self, tracks: Sequence[np.ndarray], mode: str) -> list[Hit]:
        """`fused_top1` for every track of a batch with ONE matrix product over all their crops.

        A batch of 10 tracks of 3 crops is one (30, N) product rather than ten passes over the
        gallery; the per-person reduction is skipped when every person has one template.
        """
        blocks = [_as_queries(t) for t in tracks]
        if any(b.shape[0] == 0 for b in blocks):
            raise ValueError("a track decision needs at least one crop")
        if not blocks:
            return []
        if self.scan is not None:
            return [self._fused_top1_candidates(b, mode) for b in self._candidate_blocks(blocks)]
        scores = np.concatenate(blocks) @ self.embeddings.T  # (all crops, entries)
        per_person = self.per_person(scores)  # (all crops, persons)
        codes, _, unique = self._persons()
        hits: list[Hit] = []
        start = 0
        for block in blocks:
            rows = slice(start, start + block.shape[0])
            start = rows.stop
            fused = fuse_scores(per_person[rows][None], mode)[0]
            best = int(np.argmax(fused))
            if unique:
                entry = best
            else:
                # The template that agrees best with the track across its crops names the entry.
                mine = np.flatnonzero(codes == best)
                entry = int(mine[np.argmax(scores[rows][:, mine].sum(axis=0))])
            hits.append(
                Hit(index=entry, entry_id=self.entry_ids[entry], label=self.labels[entry], score=float(fused[best]))
            )
        return hits

    def confusable_pairs(self, threshold: float, block: int = 2048) -> list[ConfusablePair]:
        """Every pair of entries of DIFFERENT people scoring at least `threshold`: one person
        enrolled under two names, or look-alikes that will be taken for each other at the operating
        threshold. Each unordered pair once, highest first. Exact at every size: a large list's
        int8 scan proposes every pair that may reach the threshold, and each is re-scored."""
        codes = self._persons()[0]
        best: dict[tuple[int, int], float] = {}
        for start in range(0, len(self), block):
            rows = np.arange(start, min(start + block, len(self)))
            if self.scan is not None:
                r, c = self.scan.at_least(self.embeddings[rows], threshold)
                r = rows[r]
                pair_scores = np.einsum("pd,pd->p", self.embeddings[r], self.embeddings[c])
            else:
                scores = self.embeddings[rows] @ self.embeddings.T
                r, c = np.nonzero(scores >= threshold)
                pair_scores = scores[r, c]
                r = rows[r]
            other = (codes[r] != codes[c]) & (pair_scores >= threshold)  # same person: fine
            for a, b, sc in zip(r[other], c[other], pair_scores[other], strict=True):
                key = (min(int(a), int(b)), max(int(a), int(b)))
                best[key] = max(best.get(key, -np.inf), float(sc))
        return [
            ConfusablePair(self.entry_ids[a], self.labels[a], self.entry_ids[b], self.labels[b], score)
            for (a, b), score in sorted(best.items(), key=lambda kv: -kv[1])
        ]

    def _candidate_blocks(self, blocks: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each track's crops with the entries of every person the scan proposes for any crop."""
        assert self.scan is not None
        proposed = self.scan.candidates(np.concatenate(blocks))
        codes, _, unique = self._persons()
        out: list[tuple[np.ndarray, np.ndarray]] = []
        start = 0
        for block in blocks:
            persons = np.unique(codes[np.concatenate(proposed[start : start + block.shape[0]])])
            start += block.shape[0]
            if unique:
                entries = persons  # entry i is person i
            else:
                order, bounds = self._person_bounds()
                entries = np.concatenate([order[bounds[p] : bounds[p + 1]] for p in persons])
            out.append((block, entries))
        return out

    def _fused_top1_candidates(self, item: tuple[np.ndarray, np.ndarray], mode: str) -> Hit:
        """The exact fused decision restricted to the candidates' persons (all their templates)."""
        crops, entries = item
        scores = crops @ self.embeddings[entries].T  # (crops, candidate entries)
        codes = self._persons()[0][entries]
        persons = np.unique(codes)
        grouped = np.argsort(codes, kind="stable")
        per_person = np.maximum.reduceat(scores[:, grouped], np.searchsorted(codes[grouped], persons), axis=1)
        fused = fuse_scores(per_person[None], mode)[0]
        best = int(np.argmax(fused))
        mine = np.flatnonzero(codes == persons[best])
        entry = int(entries[mine[np.argmax(scores[:, mine].sum(axis=0))]])
        return Hit(index=entry, entry_id=self.entry_ids[entry], label=self.labels[entry], score=float(fused[best]))

    def per_person(self, scores: np.ndarray) -> np.ndarray:
        """(queries, entries) -> (queries, persons): each person's best template per query, the
        persons in `person_codes` order."""
        if self._persons()[2]:
            return scores  # entry i is person i: nothing to reduce
        order, bounds = self._person_bounds()  # cached: not re-derived on every batch
        return np.maximum.reduceat(scores[:, order], bounds[:-1], axis=1)

    def person_codes(self) -> np.ndarray:
        """Each entry's person as an integer (the column of `per_person` that holds them)."""
        return self._persons()[0]

    def _persons(self) -> tuple[np.ndarray, int, bool]:
        """Each entry's person as an integer (first appearance order), their count, and
        whether every person has exactly one template (then codes == arange)."""
        if self._codes is None:
            if len(set(self.labels)) == len(self.labels):
                # One template per person (production's mean templates): entry i is person i, and a
                # 1M-entry list skips a second of dictionary building in its first search.
                self._codes = _one_person_per_entry(len(self.labels))
            else:
                names = {label: i for i, label in enumerate(dict.fromkeys(self.labels))}
                codes = np.array([names[label] for label in self.labels], dtype=np.int64)
                self._codes = codes, len(names)
        codes, n = self._codes
        return codes, n, n == len(codes)

    def _person_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """`_person_order`, and where each person's templates start in it (person p: bounds[p]:bounds[p+1])."""
        if self._bounds is None:
            codes, n, _ = self._persons()
            self._bounds = np.searchsorted(codes[self._person_order()], np.arange(n + 1))
        return self._person_order(), self._bounds

    def _person_order(self) -> np.ndarray:
        """A stable sort of the entries by person, so each person's templates are contiguous."""
        if self._order is None:
            self._order = np.argsort(self._persons()[0], kind="stable")
        return self._order

    def with_scan(self) -> WatchlistIndex:
        """Add the int8 scan (at build time, so no match cold start pays for quantising)."""
        self.scan = QuantisedScan.build(self.embeddings)
        return self

    def to_npz_bytes(self) -> bytes:
        # Fixed-width unicode arrays, so loading never needs pickle.
        arrays: dict[str, Any] = {
            "format_version": np.int64(INDEX_FORMAT_VERSION),
            "entry_ids": _string_array(self.entry_ids),
            "labels": _string_array(self.labels),
            "embeddings": self.embeddings,
            "model": np.array(self.model, dtype=np.str_),
        }
        if self.scan is not None:
            arrays[_SCAN_BLOCKS_KEY] = self.scan.blocks
            arrays[_SCAN_BOUNDS_KEY] = self.scan.bounds.as_array()
        return npz.write(arrays)

    @classmethod
    def from_npz_file(cls, path: Path) -> WatchlistIndex:
        """`from_npz_bytes` over a memory-mapped artifact file: an index on the function's own
        storage, read by the page cache as the checks and searches touch it, never copied."""
        with path.open("rb") as f:
            try:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as e:  # an empty file cannot be mapped
                raise InvalidIndexError(f"empty index artifact: {e}") from e
        return cls.from_npz_bytes(mapped)  # the arrays keep the mapping alive; the file may close

    @classmethod
    def from_npz_bytes(cls, data: bytes | mmap.mmap) -> WatchlistIndex:
        """Parse and validate an index artifact; any defect raises InvalidIndexError."""
        if not len(data):
            raise InvalidIndexError("empty index artifact")
        try:
            members = npz.read(data)  # read-only views of `data`: a 1M-entry list is not copied
        except npz.NpzError as e:
            raise InvalidIndexError(f"unreadable index artifact: {e}") from e
        missing = _KEYS - set(members)
        if missing:
            raise InvalidIndexError(f"index artifact lacks {sorted(missing)}")
        arrays = {k: members[k] for k in _KEYS}
        scan_keys = {_SCAN_BLOCKS_KEY, _SCAN_BOUNDS_KEY} & set(members)
        if scan_keys and len(scan_keys) != 2:
            raise InvalidIndexError(f"index artifact has {sorted(scan_keys)} without the other scan array")
        scan_arrays = [members[_SCAN_BLOCKS_KEY], members[_SCAN_BOUNDS_KEY]] if scan_keys else None

        version = arrays["format_version"]
        if version.shape != () or int(version) != INDEX_FORMAT_VERSION:
            raise InvalidIndexError(f"unsupported index format version {version!r}")
        for key in ("entry_ids", "labels"):
            if arrays[key].dtype.kind != "U" or arrays[key].ndim != 1:
                raise InvalidIndexError(f"{key} must be a 1-D string array")
        if arrays["model"].dtype.kind != "U" or arrays["model"].shape != ():
            raise InvalidIndexError("model must be a string")
        emb = arrays["embeddings"]
        if emb.dtype != np.float32:
            raise InvalidIndexError(f"embeddings must be float32, got {emb.dtype}")
        index = cls(
            entry_ids=StringColumn(arrays["entry_ids"]),
            labels=StringColumn(arrays["labels"]),
            embeddings=emb,
            model=str(arrays["model"]),
        )
        if scan_arrays is not None:
            blocks, bounds = scan_arrays
            index.scan = QuantisedScan(blocks, len(index), ScanBounds.from_array(bounds))
            if blocks.shape[1] != index.embeddings.shape[1]:
                raise InvalidIndexError(f"int8 scan has dimension {blocks.shape[1]}, index {index.embeddings.shape[1]}")
            index.scan.check_codes(index.embeddings)
        return index
