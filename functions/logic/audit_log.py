"""The append-only audit log: a hash chain of `AuditEvent`s, written by functions and the CLI.

Entry n stores `{"seq": n, "prev_hash": h(n-1), "hash": h(n), "event": {...}}` where
h(n) = sha256(h(n-1) + "\\n" + canonical JSON of {"seq": n, "event": event}). So:
- altering an event (or its sequence number) breaks its own hash and every later link;
- deleting an event leaves a gap in the sequence numbers;
- two writers cannot fork the chain: an entry is created only by a conditional put on its
  sequence number, and the loser re-reads the head and tries the next one.

No biometric data: details are scalars only (the contract's type) and strings are capped,
so neither an embedding nor an image (a few KiB of base64) fits.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.dal.ports import AuditStore
from functions.exceptions import AuditAppendError, AuditRejectedError, ObjectNotFoundError
from lfr_core.contracts import AuditAction, AuditEvent, AuditValue, utcnow

GENESIS_HASH = "0" * 64
MAX_DETAIL_CHARS = 500  # an aligned 112x112 JPEG is ~4 KiB of base64: never fits
MAX_DETAILS = 40
MAX_APPEND_ATTEMPTS = 50


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(prev_hash: str, seq: int, event_json: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(prev_hash.encode("ascii") + b"\n")
    h.update(canonical({"seq": seq, "event": event_json}))
    return h.hexdigest()


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1)
    prev_hash: str = Field(min_length=64, max_length=64)
    hash: str = Field(min_length=64, max_length=64)
    event: dict[str, Any]

    def parsed_event(self) -> AuditEvent:
        return AuditEvent.model_validate(self.event)

    def body(self) -> bytes:
        return canonical(self.model_dump(mode="json"))


def check_event(event: AuditEvent) -> None:
    """Refuse anything that could carry a face: long strings, too many fields."""
    if len(event.details) > MAX_DETAILS:
        raise AuditRejectedError(f"audit event has {len(event.details)} details (max {MAX_DETAILS})")
    for k, v in event.details.items():
        if isinstance(v, str) and len(v) > MAX_DETAIL_CHARS:
            raise AuditRejectedError(f"audit detail {k!r} is {len(v)} chars (max {MAX_DETAIL_CHARS})")
    if len(event.actor) > MAX_DETAIL_CHARS:
        raise AuditRejectedError("audit actor too long")


class AuditLog:
    """Appends events to the chain. One instance per container; it caches the head it last saw."""

    def __init__(
        self,
        store: AuditStore,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self._head: tuple[int, str] | None = None  # (seq, hash) last seen

    def record(
        self, actor: str, action: AuditAction, deployment_id: str | None = None, **details: AuditValue
    ) -> AuditEntry:
        return self.append(
            AuditEvent(actor=actor, action=action, deployment_id=deployment_id, at=self.clock(), details=details)
        )

    def _read_head(self) -> tuple[int, str]:
        after = self._head[0] if self._head else 0
        seq = self.store.last_seq(after)
        if seq == 0:
            return 0, GENESIS_HASH
        if self._head and seq == self._head[0]:
            return self._head
        entry = AuditEntry.model_validate_json(self.store.get_entry(seq))
        return seq, entry.hash

    def append(self, event: AuditEvent) -> AuditEntry:
        check_event(event)
        event_json = event.model_dump(mode="json")
        head = self._head
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if head is None:
                head = self._read_head()
            seq, prev = head[0] + 1, head[1]
            entry = AuditEntry(seq=seq, prev_hash=prev, hash=chain_hash(prev, seq, event_json), event=event_json)
            if self.store.put_new(seq, entry.body()):
                self._head = (seq, entry.hash)
                return entry
            # Another writer took `seq`: re-read the head (forward from what we knew) and retry.
            self._head = head
            head = None
            self.sleep(random.uniform(0, 0.01 * min(attempt + 1, 10)))
        raise AuditAppendError(f"audit chain still contended after {MAX_APPEND_ATTEMPTS} attempts")


# -------------------------------------------------------------------- reading and verifying


@dataclass
class VerifyReport:
    entries: int = 0
    last_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(raw: Iterable[tuple[int, bytes]], anomalies: Iterable[str] = ()) -> VerifyReport:
    """Check every link, every hash and that sequence numbers run 1, 2, ... without a gap."""
    report = VerifyReport()
    prev_seq, prev_hash = 0, GENESIS_HASH
    for key_seq, body in sorted(raw, key=lambda r: r[0]):
        report.entries += 1
        try:
            entry = AuditEntry.model_validate_json(body)
            entry.parsed_event()
        except ValidationError:
            report.problems.append(f"entry {key_seq}: unreadable (altered or not an audit entry)")
            prev_seq, prev_hash = key_seq, "?"
            continue
        if entry.seq != key_seq:
            report.problems.append(f"entry {key_seq}: claims sequence number {entry.seq}")
        if key_seq != prev_seq + 1:
            missing = f"{prev_seq + 1}" if key_seq == prev_seq + 2 else f"{prev_seq + 1}..{key_seq - 1}"
            report.problems.append(f"gap: entry {missing} missing (deleted?)")
        elif prev_hash != "?" and entry.prev_hash != prev_hash:
            report.problems.append(f"entry {key_seq}: does not link to entry {prev_seq} (chain broken)")
        if chain_hash(entry.prev_hash, entry.seq, entry.event) != entry.hash:
            report.problems.append(f"entry {key_seq}: content does not match its hash (altered)")
        prev_seq, prev_hash = key_seq, entry.hash
    report.last_seq = prev_seq
    report.problems.extend(anomalies)
    return report


def read_events(store: AuditStore) -> list[AuditEntry]:
    """Every readable entry in sequence order (verification is `verify_chain`'s job)."""
    out: list[AuditEntry] = []
    for _, body in store.entries():
        try:
            out.append(AuditEntry.model_validate_json(body))
        except ValidationError:
            continue
    return sorted(out, key=lambda e: e.seq)


def get_entry(store: AuditStore, seq: int) -> AuditEntry | None:
    try:
        return AuditEntry.model_validate_json(store.get_entry(seq))
    except ObjectNotFoundError:
        return None
