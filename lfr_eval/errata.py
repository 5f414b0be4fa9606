"""Label errata for an LFW-layout dataset: which images are wrong, which names are one person.

An errata file is TOML (format in docs/accuracy/ERRATA.md); `lfr eval --errata FILE` applies it
to the images before any protocol is drawn. Three kinds of entry, each a label fix, never a
judgement about how hard a face is:

- `wrong_image`: the image does not show the person it is filed under: it is dropped (from
  enrolment, mated and non-mated searches alike). It is not relabelled: the evidence that it shows
  someone else is recorded, and dropping needs no second judgement.
- `same_person`: two or more names are one person: their images become one identity (the first
  name's; its images first, so enrolment stays the first name's first image).
- `two_people_one_name`: one name holds two people: `groups` splits it (the first group keeps the
  name, the others become `<name>#2`, ...), `drop` removes images instead; every image of the name
  must be in exactly one group or in `drop`.

Siblings and look-alikes are different people and do not belong here.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

KINDS = ("wrong_image", "same_person", "two_people_one_name")
FORMAT_VERSION = 1


class ErrataError(ValueError):
    """An errata file that cannot be read or does not fit the dataset it is applied to."""


class Labelled(Protocol):
    """What errata act on: an image path filed under an identity (the folder name)."""

    @property
    def identity(self) -> str: ...

    @property
    def path(self) -> Path: ...


S = TypeVar("S", bound=Labelled)


@dataclass(frozen=True)
class Entry:
    kind: str
    images: tuple[str, ...] = ()  # wrong_image: "<identity>/<file>"
    people: tuple[str, ...] = ()  # same_person: names, the first kept; two_people_one_name: the one name
    groups: tuple[tuple[str, ...], ...] = ()  # two_people_one_name: file names per real person
    drop: tuple[str, ...] = ()  # two_people_one_name: file names dropped instead of split
    shows: str = ""  # who the image really shows, where known (a record only: never relabelled)
    source: str = ""
    evidence: str = ""


@dataclass(frozen=True)
class Errata:
    entries: tuple[Entry, ...]
    dataset: str = ""
    path: Path | None = None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for e in self.entries:
            out[e.kind] += 1
        return out

    def apply(self, samples: Sequence[S]) -> list[S]:
        """The samples with every entry applied; refuses (ErrataError) an entry naming what is not there."""
        return apply_errata(self, samples)


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ErrataError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def parse_errata(data: Mapping[str, Any], path: Path | None = None) -> Errata:
    where = f"errata {path}" if path else "errata"
    if data.get("format_version") != FORMAT_VERSION:
        raise ErrataError(f"{where}: format_version must be {FORMAT_VERSION}, got {data.get('format_version')!r}")
    raw = data.get("entry", [])
    if not isinstance(raw, list):
        raise ErrataError(f"{where}: [[entry]] tables expected")
    entries: list[Entry] = []
    for i, e in enumerate(raw, 1):
        at = f"{where}, entry {i}"
        if not isinstance(e, dict):
            raise ErrataError(f"{at}: not a table")
        kind = e.get("kind")
        if kind not in KINDS:
            raise ErrataError(f"{at}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not str(e.get("evidence", "")).strip() or not str(e.get("source", "")).strip():
            raise ErrataError(f"{at}: every entry needs its source and the evidence seen")
        known = {"kind", "source", "evidence", "shows", {
            "wrong_image": "images", "same_person": "people", "two_people_one_name": "person"}[kind],
            *(("groups", "drop") if kind == "two_people_one_name" else ())}
        if extra := set(e) - known:
            raise ErrataError(f"{at}: unknown keys {sorted(extra)} for kind {kind}")
        src, ev, shows = str(e["source"]), str(e["evidence"]), str(e.get("shows", ""))
        if kind == "wrong_image":
            images = _strs(e.get("images"), f"{at}: images")
            for im in images:
                if im.count("/") != 1:
                    raise ErrataError(f"{at}: image {im!r} must be <identity>/<file>")
            entries.append(Entry(kind, images=images, shows=shows, source=src, evidence=ev))
        elif kind == "same_person":
            people = _strs(e.get("people"), f"{at}: people")
            if len(set(people)) < 2 or len(set(people)) != len(people):
                raise ErrataError(f"{at}: same_person needs two or more different names")
            entries.append(Entry(kind, people=people, shows=shows, source=src, evidence=ev))
        else:
            person = e.get("person")
            if not isinstance(person, str) or not person:
                raise ErrataError(f"{at}: person must be a name")
            groups = tuple(_strs(g, f"{at}: groups[{j}]") for j, g in enumerate(e.get("groups", [])))
            drop = _strs(e.get("drop", []), f"{at}: drop") if e.get("drop") else ()
            if not groups and not drop:
                raise ErrataError(f"{at}: two_people_one_name needs groups (to split) or drop")
            entries.append(
                Entry(kind, people=(person,), groups=groups, drop=drop, shows=shows, source=src, evidence=ev)
            )
    return Errata(tuple(entries), str(data.get("dataset", "")), path)


def load_errata(path: Path) -> Errata:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ErrataError(f"errata file {path} not found") from exc
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ErrataError(f"errata file {path}: {exc}") from exc
    return parse_errata(data, path)


def apply_errata(errata: Errata, samples: Sequence[S]) -> list[S]:
    """Drop, merge and split as the entries say. Every image and name an entry gives must exist in
    `samples` and no image may be claimed by two entries, so a file written for another dataset (or
    a typo) is refused rather than silently doing nothing."""
    files: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        files[s.identity].add(s.path.name)
    claimed: dict[str, int] = {}

    def claim(key: str, i: int) -> None:
        if key in claimed:
            raise ErrataError(f"errata entries {claimed[key]} and {i} both name {key}")
        claimed[key] = i

    def need_person(name: str, i: int) -> None:
        if name not in files:
            raise ErrataError(f"errata entry {i}: no person {name!r} in the dataset")

    dropped: set[tuple[str, str]] = set()
    rename: dict[tuple[str, str], str] = {}  # (identity, file) -> new identity (splits)
    merge: dict[str, str] = {}  # identity -> identity it is merged into
    order: dict[str, list[str]] = {}  # merged identity -> names in order
    for i, e in enumerate(errata.entries, 1):
        if e.kind == "wrong_image":
            for im in e.images:
                person, name = im.split("/")
                need_person(person, i)
                if name not in files[person]:
                    raise ErrataError(f"errata entry {i}: no image {im!r} in the dataset")
                claim(im, i)
                dropped.add((person, name))
        elif e.kind == "same_person":
            for p in e.people:
                need_person(p, i)
                claim(f"{p}/*", i)
                merge[p] = e.people[0]
            order[e.people[0]] = list(e.people)
        else:
            person = e.people[0]
            need_person(person, i)
            claim(f"{person}/*", i)
            seen: list[str] = [f for g in e.groups for f in g] + list(e.drop)
            if len(seen) != len(set(seen)):
                raise ErrataError(f"errata entry {i}: an image of {person} is in two groups")
            if missing := set(seen) - files[person]:
                raise ErrataError(f"errata entry {i}: no images {sorted(missing)} under {person}")
            if left := files[person] - set(seen):
                raise ErrataError(f"errata entry {i}: images {sorted(left)} of {person} in no group, not dropped")
            for f in seen:
                claim(f"{person}/{f}", i)
            dropped.update((person, f) for f in e.drop)
            for j, g in enumerate(e.groups):
                for f in g:
                    rename[(person, f)] = person if j == 0 else f"{person}#{j + 1}"
    rank = {p: k for names in order.values() for k, p in enumerate(names)}
    keyed: list[tuple[str, int, int, S]] = []
    for n, s in enumerate(samples):
        key = (s.identity, s.path.name)
        if key in dropped:
            continue
        ident = rename.get(key, merge.get(s.identity, s.identity))
        # Merged names: the kept name's images first, then the others' in the entry's order.
        keyed.append((ident, rank.get(s.identity, 0), n, s if ident == s.identity else _relabel(s, ident)))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


def _relabel(s: S, identity: str) -> S:
    try:
        return replace(s, identity=identity)  # type: ignore[type-var]
    except TypeError as exc:
        raise ErrataError(f"cannot relabel {type(s).__name__}: errata need dataclass samples") from exc
