"""Gets crops to the deployment's queue through network loss, and keeps nothing longer than needed.

`Delivery` runs one sender thread over a small in-memory queue:
- batches of up to 10 go through `SqsSender` (SendMessageBatch, retry with exponential back-off);
- entries it gives up on (network down, throttled) go to the encrypted `Spool`; while the link is
  down, new crops go straight to the spool and the link is probed with the oldest spooled batch
  every `probe_interval_s`; once a send succeeds the spool is drained, oldest first;
- a crop older than `ttl_s` (from its capture time) is expired, in memory or in the spool: deleted,
  never sent;
- after the deployment's `expires_at` nothing more is sent (the cloud refuses late crops too;
  this is defence in depth): queued and spooled crops are dropped and counted as refused;
- `close()` gives the spool a bounded time to drain, then destroys it, so at exit it is empty or gone;
- a spool write that fails (a full disk) never escapes `submit()` or stops the sender: the crop is
  held in the bounded in-memory queue instead, the spool is retried every `probe_interval_s`, and
  when memory is full too the OLDEST held crop is dropped and counted with the reason. Every
  submitted crop ends up in exactly one counter: sent, failed, expired, refused, dropped (by
  reason), or still queued / spooled (`DeliveryStats.unaccounted` is 0 whenever the sender is idle).

Camera statuses (`submit_status`, edge_uploader/status.py) take the same sender, queue and credentials
but not the spool: only the NEWEST status is kept, in memory, and sent when the link allows (while it
is down, it is the probe when no crop is spooled). A newer status replaces an unsent one (counted
`status_superseded`); one older than `STATUS_TTL_INTERVALS` of its interval is dropped, never replayed
(`status_expired`): by then the console shows the edge as silent and only a fresh status says more.
Statuses are counted apart from crops and never in `unaccounted`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_uploader.exceptions import SpoolError
from edge_uploader.sender import SQS_BATCH, SqsSender
from edge_uploader.spool import DEFAULT_TTL_S, Spool
from lfr_core.contracts import CameraStatus, CropMessage

log = logging.getLogger(__name__)

DEFAULT_PROBE_INTERVAL_S = 2.0
DEFAULT_MAX_QUEUE = 200
# A status not sent within this many of its intervals is dropped: the cloud calls the edge silent
# after 3 intervals without one (functions/logic/console.py), so an older one says nothing new.
STATUS_TTL_INTERVALS = 3


@dataclass(frozen=True)
class DeliveryStats:
    sent: int
    queued: int  # in memory, waiting for the sender thread
    spooled: int  # total ever written to the spool
    in_spool: int  # currently in the spool
    expired: int  # past the TTL: deleted, not sent
    refused_after_expiry: int  # dropped because the deployment had expired
    failed: int  # refused by SQS as malformed (will never succeed)
    link_up: bool
    spool_destroyed: int = 0  # entries still in the spool when it was destroyed at exit
    submitted: int = 0  # every crop message handed to `submit()`
    # Crops given up on, by reason: disk_full / io_error (spool unwritable and memory full),
    # spool_unreadable (an entry that could not be read back), unsent_at_exit.
    dropped: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0  # taken by the sender thread and not yet counted anywhere
    # Camera statuses (not crops): sent, replaced by a newer one before sending, dropped as too old,
    # refused by SQS as malformed, or after the deployment's end; one at most waits (status_pending).
    status_sent: int = 0
    status_superseded: int = 0
    status_expired: int = 0
    status_failed: int = 0
    status_refused: int = 0
    status_pending: bool = False

    @property
    def unaccounted(self) -> int:
        """Submitted crops in no counter: 0 unless a crop was lost without a reason."""
        return self.submitted - (
            self.sent + self.failed + self.expired + self.refused_after_expiry + sum(self.dropped.values())
            + self.queued + self.in_spool + self.spool_destroyed + self.in_flight
        )


class Delivery:
    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        spool: Spool,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        expires_at: datetime | None = None,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_attempts: int = 3,
        base_delay_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sender = SqsSender(sqs_client, queue_url, max_attempts=max_attempts, base_delay_s=base_delay_s)
        # While the link is down one attempt per probe: back-off there would only stall the spooling.
        self._probe = SqsSender(sqs_client, queue_url, max_attempts=1)
        self.spool = spool
        self.ttl_s = ttl_s
        self.expires_at = expires_at.timestamp() if expires_at is not None else None
        self.probe_interval_s = probe_interval_s
        self.max_queue = max_queue
        self._clock = clock
        self._queue: deque[CropMessage] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._link_up = True
        self._next_probe = 0.0
        self._sent = self._spooled = self._expired = self._refused = self._failed = 0
        self._destroyed = 0
        self._submitted = 0
        self._dropped: Counter[str] = Counter()
        self._in_flight = 0
        self._spool_retry_at = 0.0  # after a failed spool write, when to try the disk again
        self._spool_failure: str | None = None
        self._busy = False
        self._status: CameraStatus | None = None
        self._status_counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="lfr-edge-sender", daemon=True)
        self._thread.start()

    # -- producer side -------------------------------------------------------------------------

    def deployment_expired(self) -> bool:
        return self.expires_at is not None and self._clock() >= self.expires_at

    def submit(self, msg: CropMessage) -> None:
        """Never raises for a delivery fault (network, disk): the crop is queued, spooled or counted."""
        with self._cond:
            self._submitted += 1
        if self.deployment_expired():
            with self._cond:
                self._refused += 1
            return
        with self._cond:
            if len(self._queue) < self.max_queue:
                self._queue.append(msg)
                self._cond.notify_all()
                return
        # The sender is stuck behind a dead link: keep the crop encrypted rather than in an unbounded
        # queue; if the disk refuses it too, memory keeps the newest crops and drops the oldest.
        self._hold(self._to_spool([msg]), front=False)

    def submit_status(self, status: CameraStatus) -> None:
        """Never raises: the status replaces any unsent one and goes out with the next sender step."""
        with self._cond:
            if self.deployment_expired():
                self._status_counts["refused"] += 1
                return
            if self._status is not None:
                self._status_counts["superseded"] += 1
            self._status = status
            self._cond.notify_all()

    def stats(self) -> DeliveryStats:
        with self._cond:
            dropped = dict(self._dropped)
            if self.spool.unreadable:
                dropped["spool_unreadable"] = self.spool.unreadable
            return DeliveryStats(
                sent=self._sent, queued=len(self._queue), spooled=self._spooled, in_spool=len(self.spool),
                expired=self._expired + self.spool.expired, refused_after_expiry=self._refused,
                failed=self._failed, link_up=self._link_up, spool_destroyed=self._destroyed,
                submitted=self._submitted, dropped=dropped, in_flight=self._in_flight,
                status_sent=self._status_counts["sent"], status_superseded=self._status_counts["superseded"],
                status_expired=self._status_counts["expired"], status_failed=self._status_counts["failed"],
                status_refused=self._status_counts["refused"], status_pending=self._status is not None,
            )

    # -- sender thread ---------------------------------------------------------------------------

    def _expiry_of(self, msg: CropMessage) -> float:
        return msg.captured_at.timestamp() + self.ttl_s

    def _to_spool(self, msgs: list[CropMessage]) -> list[CropMessage]:
        """Spools `msgs` in order; returns those the spool could not take (its disk full or failing)."""
        if not msgs or self._clock() < self._spool_retry_at:
            return list(msgs)  # it failed a moment ago: do not hammer a full disk for every crop
        done = 0
        try:
            for m in msgs:
                self.spool.put(m, self._expiry_of(m))
                done += 1
        except SpoolError as exc:
            reason = getattr(exc, "reason", "spool_error")
            with self._cond:
                self._spool_retry_at = self._clock() + self.probe_interval_s
                if self._spool_failure != reason:
                    log.warning("spool unwritable (%s): holding up to %d crops in memory", reason, self.max_queue)
                self._spool_failure = reason
        with self._cond:
            self._spooled += done
            if done == len(msgs) and self._spool_failure is not None:
                log.warning("spool writable again")
                self._spool_failure = None
        return list(msgs[done:])

    def _hold(self, msgs: list[CropMessage], *, front: bool) -> None:
        """Keep crops the spool refused in the in-memory queue, dropping (and counting) the oldest beyond it."""
        if not msgs:
            return
        with self._cond:
            if front:  # older than anything queued: they go first
                self._queue.extendleft(reversed(msgs))
            else:
                self._queue.extend(msgs)
            while len(self._queue) > self.max_queue:
                self._queue.popleft()
                self._dropped[self._spool_failure or "spool_error"] += 1
            self._cond.notify_all()

    def _stalled(self) -> bool:
        """Nothing can move now: the link is down until the next probe and the spool refuses writes."""
        now = self._clock()
        return not self._link_up and now < self._next_probe and now < self._spool_retry_at

    def _send(self, msgs: list[CropMessage], probe: bool) -> set[str]:
        """Sends; returns the ids SQS did not take for a reason that may pass (to keep for later)."""
        report = (self._probe if probe else self._sender).send(msgs)
        with self._cond:
            self._sent += report.sent
            self._failed += report.failed - len(report.gave_up)
            self._note_link(not report.gave_up)
        return set(report.gave_up)

    def _send_status(self, probe: bool) -> None:
        """The newest status, if any: sent, kept for the next attempt (link down), or dropped (too old)."""
        with self._cond:
            status = self._status
        if status is None:
            return
        if self._clock() >= status.sent_at.timestamp() + STATUS_TTL_INTERVALS * status.interval_s:
            with self._cond:
                if self._status is status:
                    self._status = None
                    self._status_counts["expired"] += 1
            return
        report = (self._probe if probe else self._sender).send([status])
        with self._cond:
            self._note_link(not report.gave_up)
            if report.gave_up:
                return  # kept (unless a newer one replaced it meanwhile) for the next attempt
            self._status_counts["sent" if report.sent else "failed"] += 1
            if self._status is status:
                self._status = None

    def _note_link(self, now_up: bool) -> None:
        """Called with the lock held, after every send."""
        if now_up != self._link_up:
            log.warning("SQS link %s", "restored" if now_up else "down: spooling crops (encrypted)")
        self._link_up = now_up
        if not now_up:
            self._next_probe = self._clock() + self.probe_interval_s

    def _refuse_all(self) -> None:
        with self._cond:
            n = len(self._queue)
            self._queue.clear()
            self._refused += n + len(self.spool)
        self.spool.destroy()

    def _refuse_status(self) -> None:
        with self._cond:
            if self._status is not None:
                self._status = None
                self._status_counts["refused"] += 1

    def _step(self) -> None:
        with self._cond:
            batch = [self._queue.popleft() for _ in range(min(SQS_BATCH, len(self._queue)))]
            self._busy = True
            self._in_flight = len(batch)
        try:
            self._step_with(batch)
        finally:
            with self._cond:
                self._busy = False
                self._in_flight = 0

    def _step_with(self, batch: list[CropMessage]) -> None:
        now = self._clock()
        if self.deployment_expired():
            with self._cond:
                self._refused += len(batch)
            if len(self.spool) or self._queue:
                self._refuse_all()
            self._refuse_status()
            return
        live = [m for m in batch if self._expiry_of(m) > now]
        if len(live) < len(batch):
            with self._cond:
                self._expired += len(batch) - len(live)
        if live:
            if not self._link_up and now < self._next_probe:
                self._hold(self._to_spool(live), front=True)
            else:
                kept = self._send(live, probe=not self._link_up)
                if kept:
                    self._hold(self._to_spool([m for m in live if m.message_id in kept]), front=True)
        if self._link_up or (self._clock() >= self._next_probe and not len(self.spool)):
            # Spooled crops probe a link that is down; with none, the status does.
            self._send_status(probe=not self._link_up)
        self.spool.purge_expired()
        if len(self.spool) and (self._link_up or self._clock() >= self._next_probe):
            entries = self.spool.oldest(SQS_BATCH)
            if entries:
                kept = self._send([m for _, m in entries], probe=not self._link_up)
                for entry_id, m in entries:
                    if m.message_id not in kept:
                        self.spool.delete(entry_id)  # sent (or refused as malformed): gone either way

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and (not self._queue or self._stalled()):
                    self._cond.wait(0.25)
                if self._stopping and (not self._queue or self._stalled()):
                    return  # `close()` takes over what is left
                if self._stalled():
                    continue
            try:
                self._step()
            except Exception:  # the sender thread must outlive any one bad batch
                log.exception("delivery step failed")
                time.sleep(0.5)

    # -- shutdown ---------------------------------------------------------------------------------

    def close(self, drain_timeout_s: float = 10.0) -> DeliveryStats:
        """Flush the queue, give the spool `drain_timeout_s` to empty, then destroy it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        deadline = time.monotonic() + drain_timeout_s
        while (len(self.spool) or self._queue) and time.monotonic() < deadline and not self.deployment_expired():
            if self._link_up or self._clock() >= self._next_probe:
                self._step()
            else:
                time.sleep(0.1)
        with self._cond:
            if self._queue and self.deployment_expired():
                self._refused += len(self._queue)
            elif self._queue:
                self._dropped["unsent_at_exit"] += len(self._queue)  # held in memory, never sent
            self._queue.clear()
            self._destroyed = self.spool.destroy()
        return self.stats()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once the queue is empty and nothing is spooled (for tests and the demo)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._busy and not len(self.spool):
                    return True
            time.sleep(0.05)
        return False
