"""The camera's heartbeat to the cloud: a `CameraStatus` (lfr_core/contracts.py) on every change of
the source's state (lost / back) and every `interval_s` while running, through the delivery path
(edge_uploader/delivery.py `submit_status`: the crop queue, newest status only, never spooled).

The van's console (functions/logic/console.py) shows the camera `up`, `down` (since when, the gap so
far) or `silent` (no status for 3 intervals: this program or its link is gone), so a camera that
streams but sees no face no longer looks like a dead one. Counts and times only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from pydantic import ValidationError

from edge_uploader.delivery import DeliveryStats
from edge_uploader.sources import SourceStatus
from lfr_core.contracts import CAMERA_STATUS_INTERVAL_S, CameraState, CameraStatus, rejection_reason, utcnow

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = CAMERA_STATUS_INTERVAL_S  # seconds between two statuses while nothing changes


class StatusSink(Protocol):
    def submit_status(self, status: CameraStatus) -> None: ...

    def stats(self) -> DeliveryStats | None: ...


class CameraHeartbeat:
    """Decides when a status is due and builds it; `tick` is called from the uploader's loop, which
    runs at least once a second even while the camera gives no frame (runner.IDLE_CHECK_S)."""

    def __init__(
        self,
        sink: StatusSink,
        *,
        deployment_id: str,
        camera_id: str,
        interval_s: float = STATUS_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.deployment_id = deployment_id
        self.camera_id = camera_id
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._last_key: tuple[bool, int] | None = None
        self._frames_at_last = 0
        self.sent: list[CameraStatus] = []  # what was handed to the sink (the last few, for tests and logs)

    def tick(self, source: SourceStatus, frames_read: int) -> CameraStatus | None:
        """Submit a status if the source changed state or one is due; returns it (None if not due)."""
        key = (source.up, source.reconnects)
        t = self._monotonic()
        if key == self._last_key and self._last_at is not None and t - self._last_at < self.interval_s:
            return None
        now = utcnow()
        stats = self.sink.stats()
        try:
            status = CameraStatus(
                deployment_id=self.deployment_id, camera_id=self.camera_id, sent_at=now,
                state=CameraState.STREAMING if source.up else CameraState.RECONNECTING,
                since=min(source.since, now), interval_s=self.interval_s,
                frames=max(0, frames_read - self._frames_at_last),
                # Down: the gap under way; up: the last completed one.
                gap_s=max(0.0, (now - source.since).total_seconds()) if not source.up else source.last_gap_s,
                reconnects=source.reconnects, spool_depth=stats.in_spool if stats is not None else 0,
            )
        except ValidationError as exc:  # never ends a run: the crops matter more than the heartbeat
            log.warning("camera status not sent: %s", rejection_reason(exc, CameraStatus))
            self._last_at, self._last_key = t, key
            return None
        self.sink.submit_status(status)
        self._last_at, self._last_key, self._frames_at_last = t, key, frames_read
        self.sent = [*self.sent[-99:], status]
        return status
