"""The alert as officers' devices receive it (the SNS adapter's wire format): `MessageStructure=json`.

SNS hands each protocol its own key: `APNS`/`APNS_SANDBOX` to iPhones (the APNs payload),
`GCM` to Android (an FCM v1 message), `sms` and `email` to text channels, and `default` to
everything else (the `Alert` JSON, which is what the CLI and SQS stand-ins read).

No biometric data in any of them: no image, no embedding, no crop URL. The score, camera,
time and the watchlist entry's reference and reason are text; the evidence is only reachable
through the alert page, which needs the officer's token.
"""

from __future__ import annotations

import json
from typing import Any

from lfr_core.contracts import Alert

DEFAULT_REASON = "Named on the authorised watchlist for this deployment"
SOUND = "default"
# SNS message attributes for mobile push (apns-push-type/priority/collapse-id headers).
APNS_ATTRIBUTES = {
    "AWS.SNS.MOBILE.APNS.PUSH_TYPE": "alert",
    "AWS.SNS.MOBILE.APNS.PRIORITY": "10",
}
SMS_MAX_CHARS = 300  # a few SMS segments: enough for the facts and the link


def _reference(alert: Alert) -> str:
    return alert.watchlist_reference or alert.watchlist_entry_id


def _reason(alert: Alert) -> str:
    return alert.watchlist_reason or DEFAULT_REASON


def is_update(alert: Alert) -> bool:
    """A later revision of an encounter the officer was already pushed (functions/logic/encounters.py):
    it replaces that notification (same collapse id / tag) silently instead of sounding again."""
    return alert.revision > 1


def title(alert: Alert) -> str:
    return "Possible match" if not is_update(alert) else f"Possible match (update {alert.revision})"


def _seen(alert: Alert) -> str:
    if alert.sightings <= 1 and len(alert.cameras) <= 1:
        return ""
    cams = ", ".join(alert.cameras) or alert.camera_id
    return f" Seen {alert.sightings}x (cameras {cams})."


def body(alert: Alert) -> str:
    # A prompt, not a verdict: the wording says "possible" and asks for a human check.
    return (
        f"Watchlist ref {_reference(alert)} at camera {alert.camera_id}, "
        f"{alert.captured_at:%H:%M:%S}Z, similarity {alert.similarity:.2f}.{_seen(alert)} "
        f"Reason listed: {_reason(alert)}. Check before acting."
    )


def data(alert: Alert) -> dict[str, str]:
    """Ids and facts for the app (FCM data values must be strings)."""
    out = {
        "alert_id": alert.alert_id,
        "deployment_id": alert.deployment_id,
        "camera_id": alert.camera_id,
        "captured_at": alert.captured_at.isoformat(),
        "similarity": f"{alert.similarity:.3f}",
        "threshold": f"{alert.threshold:.3f}",
        "watchlist_reference": _reference(alert),
        "reason": _reason(alert),
        "revision": str(alert.revision),
        "sightings": str(alert.sightings),
        "cameras": ",".join(alert.cameras) or alert.camera_id,
    }
    if alert.page_url:
        out["url"] = alert.page_url
    return out


def apns_payload(alert: Alert) -> dict[str, Any]:
    aps: dict[str, Any] = {
        "alert": {"title": title(alert), "body": body(alert)},
        # Every revision of one encounter's alert lands in the same notification thread (and
        # replaces the earlier one: apns-collapse-id, see message_attributes).
        "thread-id": alert.alert_id,
        # Lets a notification service extension fetch the page data with the officer's token.
        "mutable-content": 1,
        # The first push of an encounter sounds; its updates arrive quietly.
        "interruption-level": "passive" if is_update(alert) else "time-sensitive",
    }
    if not is_update(alert):
        aps["sound"] = SOUND
    return {"aps": aps, **data(alert)}


def fcm_payload(alert: Alert) -> dict[str, Any]:
    """FCM HTTP v1 `message` (SNS `fcmV1Message`): `notification` + `data`, collapsed per alert."""
    return {
        "fcmV1Message": {
            "message": {
                "notification": {"title": title(alert), "body": body(alert)},
                "data": data(alert),
                "android": {
                    "priority": "high",
                    "collapse_key": alert.alert_id,
                    # Same tag: an update replaces the earlier notification instead of stacking;
                    # only the encounter's first push makes a sound.
                    "notification": (
                        {"tag": alert.alert_id, "notification_priority": "PRIORITY_LOW"}
                        if is_update(alert) else {"tag": alert.alert_id, "sound": SOUND}
                    ),
                },
            }
        }
    }


def sms_text(alert: Alert) -> str:
    text = (
        f"LFR possible match: ref {_reference(alert)}, cam {alert.camera_id}, "
        f"{alert.captured_at:%H:%M:%S}Z, sim {alert.similarity:.2f}. Check before acting."
    )
    if alert.page_url:
        text += f" {alert.page_url}"
    return text[:SMS_MAX_CHARS]


def email_text(alert: Alert) -> str:
    lines = [
        "A possible match was raised. It is a prompt to check, not an identification.",
        "",
        f"Deployment:  {alert.deployment_id}",
        f"Camera:      {alert.camera_id}",
        f"Seen at:     {alert.captured_at.isoformat()}",
        f"Similarity:  {alert.similarity:.3f} (threshold {alert.threshold:.3f})",
        f"Watchlist:   {_reference(alert)}",
        f"Reason:      {_reason(alert)}",
        f"Update:      {alert.revision}",
        f"Sightings:   {alert.sightings} (cameras {', '.join(alert.cameras) or alert.camera_id})",
    ]
    if alert.page_url:
        lines += ["", f"Alert page (short-lived, needs your officer token): {alert.page_url}"]
    return "\n".join(lines)


def message(alert: Alert) -> str:
    """The `Message` for `sns.publish(MessageStructure="json")`: each value is itself a string."""
    apns = json.dumps(apns_payload(alert), separators=(",", ":"))
    return json.dumps(
        {
            "default": alert.model_dump_json(),
            "APNS": apns,
            "APNS_SANDBOX": apns,
            "GCM": json.dumps(fcm_payload(alert), separators=(",", ":")),
            "sms": sms_text(alert),
            "email": email_text(alert),
        }
    )


def message_attributes(alert: Alert) -> dict[str, dict[str, str]]:
    attrs = {
        # Officers' subscriptions filter on this (see lfr_cli/officer_admin.py).
        "deployment_id": {"DataType": "String", "StringValue": alert.deployment_id},
        # An update of the same encounter replaces the notification on the phone.
        "AWS.SNS.MOBILE.APNS.COLLAPSE_ID": {"DataType": "String", "StringValue": alert.alert_id[:64]},
    }
    for k, v in APNS_ATTRIBUTES.items():
        attrs[k] = {"DataType": "String", "StringValue": v}
    return attrs
