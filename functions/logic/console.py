"""The van's console: one page per deployment for its operators (served by the officers' API,
functions/logic/officer_api.py routes `/console/{deployment_id}` and `/t/console/{deployment_id}`).

Authorisation is the officers' own: an lfr-signed token bound to an officer of THIS deployment
that expires with it, re-checked on every poll (deployment live, officer not revoked). The
state it returns is what an operator needs to run the session and nothing of anyone who did
not match: the encounters (matched people only, their best crop through a short-lived
presigned URL like the alert page), each camera's last message time and messages per minute
(counts the match function keeps, functions/logic/encounters.py) and its state from the edge's
last status (up / down / silent, `camera_view`), the crop queue's depth
(SQS attributes) and how long the last processed message had waited, and the session's state
and time left. Decisions go through the alert API's decision route (one per encounter).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from functions.dal.officers import EvidenceLinks
from functions.dal.ports import AlertRepository, DeploymentRepository
from functions.dal.queue_stats import QueueStats
from functions.exceptions import TransientStorageError
from functions.models.records import AlertRecord, CameraActivity, Decision, DeploymentRecord
from functions.observability import logger
from lfr_core.contracts import CameraState

CONSOLE_FILE = Path(__file__).with_name("console.html")
CROP_URL_TTL_S = 5 * 60
MAX_ENCOUNTERS_SHOWN = 200  # newest first; a session's list is far shorter
CAMERA_DOWN_AFTER_S = 60  # no crop for this long, from a camera that sends no status: shown as quiet
# An edge's status is due every `interval_s`; this many intervals without one and the edge is silent
# (one late status is a slow queue, three is an edge or a link that is gone).
SILENT_AFTER_INTERVALS = 3

STATE_OF = {
    None: "unresolved",
    Decision.CONFIRMED: "confirmed",
    Decision.NOT_A_MATCH: "rejected",
    Decision.NOT_LOCATED: "could_not_locate",
}


def _hash_source(kind: str, html: str) -> str:
    m = re.search(rf"<{kind}>(.*?)</{kind}>", html, re.S)
    digest = hashlib.sha256((m.group(1) if m else "").encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def content_security_policy(html: str) -> str:
    """The page's one inline script and style are allowed by hash; nothing else loads but images
    (presigned crop URLs) and fetches to this API."""
    return (
        "default-src 'none'; "
        f"script-src {_hash_source('script', html)}; style-src {_hash_source('style', html)}; "
        "img-src * data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def encounter_view(a: AlertRecord, now: datetime, links: EvidenceLinks, alerts_bucket: str) -> dict[str, Any]:
    last = a.last_seen_at or a.captured_at
    window = a.encounter_window_s or 0
    return {
        "alert_id": a.alert_id,
        "label": a.watchlist_label,
        "reference": a.watchlist_reference or a.watchlist_entry_id,
        "reason": a.watchlist_reason,
        "state": STATE_OF[a.decision],
        "decision": a.decision.value if a.decision else None,
        "sightings": a.sightings,
        "cameras": list(a.cameras) or [a.camera_id],
        "first_seen": a.alerted_at.isoformat(),  # when its push went out (processing time)
        "last_seen": last.isoformat(),
        # Still open: a sighting now would join it rather than push again.
        "open": (now - last).total_seconds() < window if window else False,
        "similarity": round(a.similarity, 3),
        "revision": a.revision,
        "crop_url": links.presign(alerts_bucket, a.crop_key, CROP_URL_TTL_S),
    }


def camera_view(c: CameraActivity, now: datetime) -> dict[str, Any]:
    """One camera row. With an edge status (functions/logic/camera_status.py): `up` (streaming, and a
    status within SILENT_AFTER_INTERVALS of its interval), `down` (the edge lost the source and is
    reconnecting: since when, and the gap so far), `silent` (no status for longer: the edge itself, or
    its link, is gone). Without one (an edge that sends none yet): `up`/`quiet` from crop activity."""
    minute = int(now.timestamp()) // 60
    quiet_s = max(0.0, (now - c.last_seen).total_seconds()) if c.last_seen is not None else None
    view: dict[str, Any] = {
        "camera_id": c.camera_id,
        "last_seen": c.last_seen.isoformat() if c.last_seen is not None else None,
        "seconds_since": round(quiet_s, 1) if quiet_s is not None else None,
        # The last complete minute (the current one is still filling), and the current so far.
        "per_minute": c.per_minute.get(minute - 1, 0),
        "this_minute": c.per_minute.get(minute, 0),
        "messages": c.messages,
        "queue_lag_ms": c.queue_lag_ms,
        "status": None,
    }
    st = c.status
    if st is None:
        state = "up" if quiet_s is not None and quiet_s < CAMERA_DOWN_AFTER_S else "quiet"
    else:
        status_age = max(0.0, (now - st.received_at).total_seconds())
        if status_age > SILENT_AFTER_INTERVALS * st.interval_s:
            state = "silent"
        else:
            state = "up" if st.state == CameraState.STREAMING else "down"
        gap = st.gap_s
        if st.state == CameraState.RECONNECTING:
            gap += max(0.0, (now - st.sent_at).total_seconds())  # the gap goes on between statuses
        view["status"] = {
            "state": str(st.state), "since": st.since.isoformat(), "received_at": st.received_at.isoformat(),
            "seconds_since_status": round(status_age, 1), "interval_s": st.interval_s,
            "gap_s": round(gap, 1), "reconnects": st.reconnects, "frames": st.frames,
            "spool_depth": st.spool_depth,
        }
    view["state"] = state
    view["up"] = state == "up"
    return view


@dataclass
class Console:
    deployments: DeploymentRepository
    alerts: AlertRepository
    links: EvidenceLinks
    alerts_bucket: str
    queue: QueueStats
    clock: Callable[[], datetime]

    @property
    def page(self) -> str:
        return CONSOLE_FILE.read_text(encoding="utf-8")

    def state(self, dep: DeploymentRecord) -> dict[str, Any]:
        now = self.clock()
        alerts = sorted(self.alerts.list_for_deployment(dep.deployment_id), key=lambda a: a.alerted_at, reverse=True)
        cameras = [camera_view(c, now) for c in self.alerts.camera_activity(dep.deployment_id)]
        queue: dict[str, Any] = {"waiting": None, "in_flight": None}
        try:
            queue = self.queue.depth()
        except TransientStorageError:
            logger.warning("queue depth unavailable", extra={"deployment_id": dep.deployment_id})
        lags = [c["queue_lag_ms"] for c in cameras if c["queue_lag_ms"] is not None and c["up"]]
        queue["last_wait_ms"] = max(lags) if lags else None
        counts = {s: 0 for s in STATE_OF.values()}
        for a in alerts:
            counts[STATE_OF[a.decision]] += 1
        return {
            "now": now.isoformat(),
            "deployment": {
                "deployment_id": dep.deployment_id,
                "name": dep.name,
                "state": str(dep.state),
                "live": dep.is_live(now),
                "expires_at": dep.expires_at.isoformat() if dep.expires_at else None,
                "time_left_s": max(0, int((dep.expires_at - now).total_seconds())) if dep.expires_at else None,
                "encounter_window_s": dep.encounter_window_s,
                "faces_seen": dep.faces_seen,
            },
            "counts": counts,
            "encounters": [encounter_view(a, now, self.links, self.alerts_bucket)
                           for a in alerts[:MAX_ENCOUNTERS_SHOWN]],
            "cameras": cameras,
            "queue": queue,
            "poll_s": 5,
        }
