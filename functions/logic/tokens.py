"""Officers' credentials: access tokens and signed page links (both HMAC-SHA256 under the key in
Secrets Manager, functions/dal/officers.py `SecretSigningKey`).

Tokens: `lfr1.<payload>.<mac>`, payload = base64url JSON {sub: officer id, dep: deployment id,
exp, iat}. `exp` is the deployment's `expires_at`, and every request also checks that the
deployment is still live and the officer not revoked (functions/logic/officer_access.py), so a
token can never outlive the deployment (a STOP ends it at once). In AWS, requests authorised by
the Cognito user pool arrive with claims in the request context and pass the same checks.

Page links: the push message carries `/alert/<dep>/<alert>?exp=..&sig=..`, a link signed for
that alert that stops working after `LINK_TTL_S`; it is not a credential (the page still needs
the officer's token) but a stale SMS or email cannot reopen an alert.

Everything here reads hostile input: client text is checked against the patterns below before
it reaches a parser, a MAC comparison or a table key, and `verify_token` raises nothing but
`TokenError` (tests/unit/test_officer_hostile.py checks that property over arbitrary input).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from functions.exceptions import TokenError
from functions.models.officers import MAX_EPOCH_S, Claims, TokenPayload
from lfr_core.contracts import utcnow

TOKEN_PREFIX = "lfr1"
LINK_TTL_S = 30 * 60  # how long a link in a notification opens the alert page

# Client input is checked against these before it reaches a parser, a MAC comparison or a table key.
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_EPOCH = re.compile(r"^[0-9]{1,12}$")
ALERT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")  # uuid5 strings (functions/logic/match.py)
DEPLOYMENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")  # lfr_core.contracts.DeploymentId
MAX_TOKEN_CHARS = 4096  # an lfr token is ~200 chars; API Gateway allows 10 KiB of headers
MAX_SIG_CHARS = 128  # a link signature is 43 chars


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


# ------------------------------------------------------------------------------ tokens


def issue_token(key: bytes, officer_id: str, deployment_id: str, expires_at: datetime, now: datetime) -> str:
    payload = {"sub": officer_id, "dep": deployment_id, "exp": int(expires_at.timestamp()), "iat": int(now.timestamp())}
    body = f"{TOKEN_PREFIX}.{_b64(json.dumps(payload, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{body}.{_mac(key, body)}"


def verify_token(key: bytes, token: str, now: datetime) -> Claims:
    """Claims of a well-signed, unexpired token; `TokenError(reason)` for anything else, whatever the
    input (tests/unit/test_officer_hostile.py checks that property over arbitrary text and payloads)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not all(_B64URL.fullmatch(p) for p in parts[1:]):
        raise TokenError("malformed")
    body = f"{parts[0]}.{parts[1]}"
    # Bytes, not str: compare_digest refuses non-ASCII str (the parts are ASCII by now anyway).
    if not hmac.compare_digest(_mac(key, body).encode("ascii"), parts[2].encode("ascii")):
        raise TokenError("bad_signature")
    try:
        payload = TokenPayload.model_validate_json(_unb64(parts[1]))
        claims = Claims(
            officer_id=payload.sub,
            deployment_id=payload.dep,
            expires_at=datetime.fromtimestamp(payload.exp, UTC),
            via="token",
        )
    except (ValueError, ValidationError):  # binascii.Error is a ValueError
        raise TokenError("malformed") from None
    if now >= claims.expires_at:
        raise TokenError("expired", officer_id=claims.officer_id)
    return claims


def epoch(text: object) -> int | None:
    """An epoch-seconds query or claim value: ASCII digits only (`"²".isdigit()` is True), bounded."""
    if not isinstance(text, str) or not _EPOCH.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_EPOCH_S else None


# ------------------------------------------------------------------------------ page links


def link_signature(key: bytes, deployment_id: str, alert_id: str, exp: int) -> str:
    return _mac(key, f"link|{deployment_id}|{alert_id}|{exp}")


def page_link(base_url: str, key: bytes, deployment_id: str, alert_id: str, now: datetime) -> str:
    exp = int(now.timestamp()) + LINK_TTL_S
    sig = link_signature(key, deployment_id, alert_id, exp)
    return f"{base_url.rstrip('/')}/alert/{deployment_id}/{alert_id}?exp={exp}&sig={sig}"


def link_valid(key: bytes, deployment_id: str, alert_id: str, exp: str | None, sig: str | None, now: datetime) -> bool:
    exp_s = epoch(exp)
    if exp_s is None or not isinstance(sig, str) or not sig.isascii() or len(sig) > MAX_SIG_CHARS:
        return False
    good = hmac.compare_digest(
        link_signature(key, deployment_id, alert_id, exp_s).encode("ascii"), sig.encode("ascii")
    )
    return good and now.timestamp() < exp_s


@dataclass
class PageLinks:
    """What the match function uses to put a link to the alert page in each notification."""

    base_url: str
    key: Callable[[], bytes]
    clock: Callable[[], datetime] = utcnow

    def __call__(self, deployment_id: str, alert_id: str) -> str:
        return page_link(self.base_url, self.key(), deployment_id, alert_id, self.clock())
